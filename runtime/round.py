"""One speculative round as a single lazy MLX graph.

draft k tokens -> verify the last committed token plus the k proposals in
one target pass -> accept on the device -> pick the target's own next
token. The graph is evaluated once per round; everything before it only
builds the graph, so the host waits on the device once. `round_steps`
yields the target pass and the evaluation to its driver (see
`draftwise.runtime.stepping`), which may share both with other sequences.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass

import mlx.core as mx

from draftwise.runtime.arrays import int_list, scalar_int
from draftwise.runtime.cache import ModelCache
from draftwise.runtime.drafters.base import Drafter, DraftProposal
from draftwise.runtime.models.transformer import ForwardOutput, Transformer
from draftwise.runtime.sampling import SamplingParams, filtered_logprobs
from draftwise.runtime.stepping import EvalCall, ForwardCall, StepItem, drive_call


@dataclass(frozen=True)
class RoundOutcome:
    """The device's decision for one round: proposals, accepted count, the target's token."""

    draft_token_ids: list[int]
    num_accepted: int
    next_token_id: int
    elapsed_s: float
    # The verify pass's post-final-norm hidden states [k + 1, hidden] (lazy,
    # evaluated with the round), for drafters that read the target's state.
    hidden: mx.array | None = None

    @property
    def committed_ids(self) -> list[int]:
        """Accepted proposals followed by the target's own token (correction or bonus)."""
        return [*self.draft_token_ids[: self.num_accepted], self.next_token_id]


def _accept_greedy(logits: mx.array, proposal: DraftProposal) -> tuple[mx.array, mx.array]:
    target_ids = mx.argmax(logits, axis=-1).astype(mx.uint32)  # [k + 1]
    k = proposal.num_drafted
    matches = proposal.draft_token_ids == target_ids[:k]
    num_accepted = mx.sum(mx.cumprod(matches.astype(mx.int32)))
    return num_accepted, target_ids[num_accepted]


def _accept_sampled(
    logits: mx.array, proposal: DraftProposal, params: SamplingParams, key: mx.array
) -> tuple[mx.array, mx.array]:
    """Speculative sampling: accept d_i with probability min(1, p(d_i) / q(d_i)).

    The first rejected position samples from normalize(max(0, p - q)); when
    every proposal is accepted the bonus token samples from p of the last row.
    """
    k = proposal.num_drafted
    accept_key, residual_key = mx.random.split(key)
    p = mx.exp(filtered_logprobs(logits, params))  # [k + 1, vocab]
    draft = proposal.draft_token_ids.astype(mx.int32)
    if proposal.probs is None:  # a deterministic drafter: q is one-hot on its proposal
        q = mx.zeros_like(p[:k])
        q = mx.put_along_axis(q, draft[:, None], mx.ones((k, 1), dtype=q.dtype), axis=-1)
    else:
        q = proposal.probs
    p_draft = mx.take_along_axis(p[:k], draft[:, None], axis=-1)[:, 0]  # [k]
    q_draft = mx.take_along_axis(q, draft[:, None], axis=-1)[:, 0]  # [k]
    uniform = mx.random.uniform(shape=(k,), key=accept_key)
    accepted = (uniform * q_draft) < p_draft
    num_accepted = mx.sum(mx.cumprod(accepted.astype(mx.int32)))

    residual = mx.maximum(p[:k] - q, 0.0)
    candidates = mx.concatenate([residual, p[k:]], axis=0)  # [k + 1, vocab]
    samples = mx.random.categorical(mx.log(candidates), axis=-1, key=residual_key)
    return num_accepted, samples[num_accepted].astype(mx.uint32)


def run_round(
    target: Transformer,
    cache: ModelCache,
    drafter: Drafter | None,
    last_token_id: int,
    num_draft: int,
    params: SamplingParams,
    round_key: mx.array | None,
) -> RoundOutcome:
    """Run one round alone; see `round_steps`."""
    return drive_call(
        round_steps(target, cache, drafter, last_token_id, num_draft, params, round_key)
    )


def round_steps(
    target: Transformer,
    cache: ModelCache,
    drafter: Drafter | None,
    last_token_id: int,
    num_draft: int,
    params: SamplingParams,
    round_key: mx.array | None,
) -> Generator[StepItem, object, RoundOutcome]:
    """Build one round from ``last_token_id`` (committed, not yet in ``cache``).

    Yields the target pass and then the one evaluation, and returns the
    outcome. On return the target cache contains ``last_token_id`` and all k
    proposals, and the caller cuts it back to the committed prefix with `ModelCache.rollback`.
    ``round_key`` (required when sampling) must be fresh for every round,
    because the round splits it into the drafter's keys and its own.
    """
    started = time.perf_counter()
    if drafter is None or num_draft == 0:
        proposal = DraftProposal(mx.zeros((0,), dtype=mx.uint32), None)
        if drafter is not None:
            drafter.propose(0, params, None)
    else:
        draft_keys = None
        if round_key is not None:
            draft_keys = list(mx.random.split(round_key, num_draft + 1)[1:])
        proposal = drafter.propose(num_draft, params, draft_keys)

    inputs = mx.concatenate([mx.array([last_token_id], dtype=mx.uint32), proposal.draft_token_ids])
    output = yield ForwardCall(target, inputs, cache)
    assert isinstance(output, ForwardOutput)
    logits = output.logits  # [k + 1, vocab]
    if params.greedy:
        num_accepted, next_token = _accept_greedy(logits, proposal)
    else:
        assert round_key is not None
        accept_key = mx.random.split(round_key, num_draft + 1)[0]
        num_accepted, next_token = _accept_sampled(logits, proposal, params, accept_key)

    yield EvalCall([proposal.draft_token_ids, num_accepted, next_token, *cache.state()])
    return RoundOutcome(
        draft_token_ids=int_list(proposal.draft_token_ids),
        num_accepted=scalar_int(num_accepted),
        next_token_id=scalar_int(next_token),
        elapsed_s=time.perf_counter() - started,
        hidden=output.hidden,
    )

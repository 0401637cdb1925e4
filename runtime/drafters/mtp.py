"""The MTP drafter: draft from the target's hidden state and KV cache, in the round's graph.

Each round starts from two things the target already computed: the
post-final-norm hidden state of the verify row that chose the newest
committed token (`Transformer.last_hidden`), and that token. Draft step
``j`` embeds its input token with the target's table, runs `mtp_step`
against the keys and values the target cached in
`MTPConfig.target_kv_layer`, and feeds its state and proposal to step
``j + 1``. The steps only build a lazy graph, which the round evaluates
together with the verify pass.

The drafter owns no cache: its in-round states are dropped at `commit`,
which takes the state for the next round from the target's verify pass.
Rolling back rejected proposals therefore needs no work here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from draftwise.runtime.drafters.base import DraftProposal
from draftwise.runtime.drafters.mtp_config import MTPConfig
from draftwise.runtime.drafters.mtp_model import Params, mtp_step
from draftwise.runtime.models.layers import embed, linear
from draftwise.runtime.models.transformer import Transformer
from draftwise.runtime.sampling import SamplingParams, filtered_logprobs
from draftwise.runtime.weights import QuantizedTensor


@dataclass(frozen=True)
class MTPWeights:
    """A drafter's configuration, parameters and candidate token ids ``[candidates]``."""

    config: MTPConfig
    params: Params
    candidate_ids: mx.array


def output_head(target: Transformer) -> Any:
    """Return the target's output head (its embedding table when the two are tied)."""
    return target.weights.get("output.weight", target.weights["token_embd.weight"])


def gather_head_rows(full: Any, candidate_ids: mx.array) -> Any:
    """Return rows ``candidate_ids`` of the head ``full``, quantized when the head is."""
    if isinstance(full, QuantizedTensor):
        rows = QuantizedTensor(
            full.weight[candidate_ids],
            full.scales[candidate_ids],
            full.biases[candidate_ids],
            full.bits,
            full.group_size,
            (int(candidate_ids.shape[0]), full.shape[1]),
        )
        mx.eval(rows.weight, rows.scales, rows.biases)
        return rows
    rows = full[candidate_ids].astype(mx.float32)
    mx.eval(rows)
    return rows


def check_matches_target(config: MTPConfig, target: Transformer) -> None:
    """Raise ValueError unless the drafter was built for a target of ``target``'s shape."""
    target_config = target.config
    problems = []
    if config.backbone_hidden_size != target_config.hidden_size:
        problems.append(f"hidden size {config.backbone_hidden_size} vs {target_config.hidden_size}")
    if config.num_key_value_heads != target_config.num_kv_heads:
        problems.append(f"kv heads {config.num_key_value_heads} vs {target_config.num_kv_heads}")
    if config.head_dim != target_config.head_dim:
        problems.append(f"head_dim {config.head_dim} vs {target_config.head_dim}")
    if not 0 <= config.target_kv_layer < target_config.num_layers:
        problems.append(f"target_kv_layer {config.target_kv_layer} of {target_config.num_layers}")
    if problems:
        raise ValueError(
            f"the MTP drafter for '{config.target_name}' does not fit target "
            f"'{target.name}': {'; '.join(problems)}; load the drafter trained for this target"
        )


class MTPDrafter:
    """A `Drafter` that runs an MTP network on the target's own state."""

    def __init__(self, target: Transformer, weights: MTPWeights, max_draft: int = 16) -> None:
        check_matches_target(weights.config, target)
        self.name = "mtp"
        self.target = target
        self.config = weights.config
        self.params = weights.params
        self.candidate_ids = weights.candidate_ids.astype(mx.uint32)
        self.vocab_size = target.config.vocab_size
        self.max_draft = max_draft
        head = gather_head_rows(output_head(target), self.candidate_ids)
        self._head = head if not isinstance(head, QuantizedTensor) else (lambda x: linear(x, head))
        self._state: mx.array | None = None  # [1, backbone], the next round's input state
        self._token: int | None = None  # the newest committed token
        # The target cache of this sequence, taken with the state: the
        # target's newest call may belong to another sequence by the next round.
        self._cache: Any = None

    def start(self, prompt_ids: Sequence[int], prefiller: Any = None) -> None:
        """Take the state from the target's prefill, whose last row chose ``prompt_ids[-1]``."""
        self._token = prompt_ids[-1]
        self._state = self._hidden_row(-1)
        self._cache = self.target.last_cache

    def _hidden_row(self, row: int) -> mx.array | None:
        hidden = self.target.last_hidden
        if hidden is None or not -hidden.shape[0] <= row < hidden.shape[0]:
            return None
        return hidden[row : row + 1] if row >= 0 else hidden[row:][:1]

    def _target_keys_values(self, cache: Any) -> tuple[mx.array, mx.array]:
        layer = cache.layers[self.config.target_kv_layer]
        used = layer.offset - layer.start
        return layer.keys[:, :used], layer.values[:, :used]

    def propose(
        self, num_tokens: int, sampling: SamplingParams, keys: list[mx.array] | None
    ) -> DraftProposal:
        if num_tokens == 0 or self._state is None or self._token is None:
            return DraftProposal(mx.zeros((0,), dtype=mx.uint32), None)
        cache = self._cache
        if cache is None:
            return DraftProposal(mx.zeros((0,), dtype=mx.uint32), None)
        target_keys, target_values = self._target_keys_values(cache)
        position = cache.kv_offset  # where the newest committed token goes
        state = self._state
        token = mx.array([self._token], dtype=mx.uint32)
        tokens: list[mx.array] = []
        probs: list[mx.array] = []
        for step in range(num_tokens):
            embeddings = embed(token, self.target.weights["token_embd.weight"])
            state, logits = mtp_step(
                self.config,
                self.params,
                self._head,
                embeddings,
                state,
                target_keys,
                target_values,
                position + step,
            )
            if sampling.greedy:
                index = mx.argmax(logits, axis=-1)
            else:
                assert keys is not None
                logprobs = filtered_logprobs(logits, sampling)
                index = mx.random.categorical(logprobs, axis=-1, key=keys[step])
                probs.append(self._full_width(mx.exp(logprobs)))
            token = self.candidate_ids[index]  # [1]
            tokens.append(token)
        draft = mx.concatenate(tokens)
        return DraftProposal(draft, mx.concatenate(probs) if probs else None)

    def _full_width(self, probs: mx.array) -> mx.array:
        """Scatter ``[1, candidates]`` probabilities into ``[1, vocab]``."""
        full = mx.zeros((1, self.vocab_size), dtype=probs.dtype)
        return mx.put_along_axis(full, self.candidate_ids.astype(mx.int32)[None, :], probs, axis=-1)

    def commit(self, num_accepted: int, committed_ids: Sequence[int]) -> None:
        """Take the next state from the verify row that chose the newest committed token."""
        if not committed_ids:
            return
        self._token = committed_ids[-1]
        self._state = self._hidden_row(len(committed_ids) - 1)
        self._cache = self.target.last_cache

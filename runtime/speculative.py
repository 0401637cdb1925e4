"""Speculative generation: rounds of draft, verify and accept until a stop rule fires."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from draftwise.runtime.arrays import scalar_int
from draftwise.runtime.drafters.base import Drafter
from draftwise.runtime.errors import RollbackError
from draftwise.runtime.generate import (
    GenerationChunk,
    GenerationParams,
    Prefiller,
    Timings,
    TokenizerLike,
    check_context,
    fresh_prefill,
)
from draftwise.runtime.models.transformer import Transformer
from draftwise.runtime.round import round_steps
from draftwise.runtime.sampling import KeySequence, select_tokens
from draftwise.runtime.stepping import StepGenerator, drive
from draftwise.runtime.termination import StopConditions
from draftwise.runtime.tuner import DraftLengthTuner

if TYPE_CHECKING:
    from draftwise.runtime.drafters.adaptive import AdaptiveTuner


@dataclass
class SpeculationStats:
    """Per-request speculation counters; ``reason_off`` names why k was forced to 0."""

    rounds: int = 0
    num_drafted: int = 0
    num_accepted: int = 0
    draft_length_histogram: Counter[int] = field(default_factory=Counter)
    accepted_by_position: Counter[int] = field(default_factory=Counter)
    drafted_by_position: Counter[int] = field(default_factory=Counter)
    round_s: float = 0.0
    host_s: float = 0.0
    draft_lengths: list[int] = field(default_factory=list)
    rounds_by_drafter: Counter[str] = field(default_factory=Counter)
    reason_off: str | None = None

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted / self.num_drafted if self.num_drafted else 0.0

    def record(
        self, num_drafted: int, num_accepted: int, round_s: float, drafter: str = "none"
    ) -> None:
        self.rounds += 1
        self.rounds_by_drafter[drafter if num_drafted else "none"] += 1
        self.num_drafted += num_drafted
        self.num_accepted += num_accepted
        self.draft_length_histogram[num_drafted] += 1
        self.draft_lengths.append(num_drafted)
        for position in range(min(num_accepted + 1, num_drafted)):
            self.drafted_by_position[position + 1] += 1
            if position < num_accepted:
                self.accepted_by_position[position + 1] += 1
        self.round_s += round_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "num_drafted": self.num_drafted,
            "num_accepted": self.num_accepted,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "draft_length_histogram": {
                str(k): v for k, v in sorted(self.draft_length_histogram.items())
            },
            "acceptance_by_position": {
                str(p): round(self.accepted_by_position[p] / n, 4)
                for p, n in sorted(self.drafted_by_position.items())
            },
            "rounds_by_drafter": dict(self.rounds_by_drafter),
            "time_s": {"rounds": round(self.round_s, 4), "host": round(self.host_s, 4)},
            "reason_off": self.reason_off,
        }


def generate_speculative(
    target: Transformer,
    drafter: Drafter | None,
    tokenizer: TokenizerLike,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    tuner: DraftLengthTuner | AdaptiveTuner,
    stats: SpeculationStats | None = None,
    timings: Timings | None = None,
    prefiller: Prefiller = fresh_prefill,
) -> Iterator[GenerationChunk]:
    """Yield one chunk per round until EOS, a stop string or max_tokens; see `speculative_steps`."""
    return drive(
        speculative_steps(
            target, drafter, tokenizer, prompt_ids, params, tuner, stats, timings, prefiller
        )
    )


def speculative_steps(
    target: Transformer,
    drafter: Drafter | None,
    tokenizer: TokenizerLike,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    tuner: DraftLengthTuner | AdaptiveTuner,
    stats: SpeculationStats | None = None,
    timings: Timings | None = None,
    prefiller: Prefiller = fresh_prefill,
) -> StepGenerator:
    """Yield one chunk per round until EOS, a stop string or max_tokens.

    Each round's committed run is cut at the first stop point before it is
    yielded, and both caches are rewound to exactly the committed prefix,
    so the output equals plain decoding's for greedy sampling.
    """
    stats = stats if stats is not None else SpeculationStats()
    timings = timings if timings is not None else Timings()
    max_tokens = check_context(target, len(prompt_ids), params.max_tokens)
    stops = StopConditions(tokenizer.decode, tokenizer.eos_token_ids, params.stop, max_tokens)
    keys = KeySequence(params.sampling.seed) if not params.sampling.greedy else None
    if drafter is None:
        stats.reason_off = "no_drafter"

    started = time.perf_counter()
    cache, logits = prefiller(target, prompt_ids, tuner.max_draft + 2)
    first = select_tokens(logits, params.sampling, keys.key(0) if keys else None)
    last_token_id = scalar_int(first)
    if drafter is not None:
        drafter.start([*prompt_ids, last_token_id], prefiller)
    timings.prompt_tokens = len(prompt_ids)
    timings.prefill_s = time.perf_counter() - started

    result = stops.feed([last_token_id])
    timings.generated_tokens = 1
    yield GenerationChunk([last_token_id], result.text, result.finish_reason)
    if result.finish_reason is not None:
        return

    started = time.perf_counter()
    round_index = 0
    while True:
        round_index += 1
        room = target.config.context_length - cache.kv_offset - 1
        limit = min(stops.remaining - 1, room)
        k = tuner.choose(limit) if stats.reason_off is None else 0
        checkpoint = cache.checkpoint()
        round_key = keys.key(round_index) if keys else None
        outcome = yield from round_steps(
            target, cache, drafter, last_token_id, k, params.sampling, round_key
        )

        host_started = time.perf_counter()
        committed = outcome.committed_ids
        result = stops.feed(committed)
        kept = committed[: result.num_kept]
        # The target's cache always keeps max_draft + 2 positions of rollback
        # room, so a failure here is a bug and propagates.
        cache.rollback(checkpoint + len(kept))
        if outcome.hidden is not None:
            # A drafter reading the target's state must see this sequence's
            # verify pass, even when the pass was shared with others.
            target.remember(outcome.hidden, cache)
        if drafter is not None:
            try:
                drafter.commit(min(outcome.num_accepted, len(kept)), kept)
            except RollbackError as error:
                stats.reason_off = f"draft_rollback_failed: {error}"
                drafter = None
        last_token_id = kept[-1]
        num_drafted = len(outcome.draft_token_ids)  # a drafter may propose fewer than k
        tuner.record(num_drafted, outcome.num_accepted, outcome.elapsed_s)
        drafter_name = str(getattr(drafter, "active", None) or getattr(drafter, "name", "none"))
        stats.record(num_drafted, outcome.num_accepted, outcome.elapsed_s, drafter_name)
        stats.host_s += time.perf_counter() - host_started
        timings.generated_tokens += len(kept)
        timings.decode_s = time.perf_counter() - started
        yield GenerationChunk(kept, result.text, result.finish_reason)
        if result.finish_reason is not None:
            return

"""The work a session's steps run on the device thread, and the summary of its rounds."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from draftwise.actors.cache_actor import SessionState
from draftwise.protocol import SpeculationSummary
from draftwise.runtime.generate import GenerationChunk
from draftwise.runtime.language_model import LanguageModel
from draftwise.runtime.speculative import SpeculationStats


class SessionPrefiller:
    """A `Prefiller` that hands out the session's already prefilled caches."""

    def __init__(self, target: LanguageModel, state: SessionState, logits: Any) -> None:
        self.target_model = target.model
        self.state = state
        self.logits = logits

    def __call__(self, model: Any, prompt_ids: Sequence[int], max_rollback: int) -> Any:
        if model is self.target_model:
            cache = self.state.target_cache
            assert cache is not None and cache.kv_offset == len(prompt_ids)
            return cache, self.logits
        cache = self.state.draft_cache
        assert cache is not None and cache.kv_offset == len(prompt_ids)
        return cache, None


def timed_work(fn: Any, *args: Any) -> Any:
    """Return a step that calls ``fn(*args)`` and returns its value and the seconds it took."""

    def work() -> tuple[Any, float]:
        started = time.perf_counter()
        value = fn(*args)
        return value, time.perf_counter() - started

    return work


def round_work(chunks: Iterator[GenerationChunk], tuner: Any) -> Any:
    """Return a step that runs one round: the chunk, draft length, drafter and seconds.

    The step returns None when the generator ended without another chunk.
    """

    def work() -> tuple[GenerationChunk, int, str, float] | None:
        started = time.perf_counter()
        if tuner is not None:
            tuner.last_choice = 0
        try:
            chunk = next(chunks)
        except StopIteration:
            return None
        drafter_name = tuner.drafter_name() if tuner is not None else "none"
        draft_length = tuner.last_choice if tuner is not None else 0
        return chunk, draft_length, drafter_name, time.perf_counter() - started

    return work


def speculation_summary(stats: SpeculationStats | None) -> SpeculationSummary:
    """Build the wire summary of a request's speculation counters (None: speculation was off)."""
    if stats is None:
        return SpeculationSummary(
            rounds=0, num_drafted=0, num_accepted=0, reason_off="speculation is off"
        )
    reason = stats.reason_off[:256] if stats.reason_off else None
    return SpeculationSummary(
        rounds=stats.rounds,
        num_drafted=stats.num_drafted,
        num_accepted=stats.num_accepted,
        draft_length_histogram=dict(stats.draft_length_histogram),
        acceptance_rate=stats.acceptance_rate,
        reason_off=reason,
    )

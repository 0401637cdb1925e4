"""The work a session's steps run on the device thread, and the summary of its rounds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import outcome

from draftwise.actors.cache_actor import SessionState
from draftwise.protocol import SpeculationSummary
from draftwise.runtime.generate import GenerationChunk
from draftwise.runtime.language_model import LanguageModel
from draftwise.runtime.speculative import SpeculationStats
from draftwise.runtime.stepping import StepGenerator, advance_together


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


class RoundStep:
    """One decode round of a session, as a step the scheduler may run with other sessions'.

    Called alone, it advances the session's step generator to its next
    chunk. `run_rounds_together` advances several at once, so their target
    passes share one read of the weights. Either way the step returns the
    chunk, the draft length, the drafter and the seconds it took, or None
    when the generator ended without another chunk.
    """

    def __init__(self, steps: StepGenerator, tuner: Any, model: Any) -> None:
        self.steps = steps
        self.tuner = tuner
        self.model = model  # the target Transformer: only rounds on one model share a pass
        self._started = 0.0

    def begin(self, company: int = 1) -> None:
        self._started = time.perf_counter()
        if self.tuner is not None:
            self.tuner.last_choice = 0
            self.tuner.company = company

    def finish(
        self, result: outcome.Outcome[GenerationChunk | None]
    ) -> tuple[GenerationChunk, int, str, float] | None:
        chunk = result.unwrap()
        if chunk is None:
            return None
        drafter_name = self.tuner.drafter_name() if self.tuner is not None else "none"
        draft_length = self.tuner.last_choice if self.tuner is not None else 0
        return chunk, draft_length, drafter_name, time.perf_counter() - self._started

    def __call__(self) -> tuple[GenerationChunk, int, str, float] | None:
        self.begin()
        return self.finish(advance_together([self.steps])[0])


def run_rounds_together(rounds: list[RoundStep]) -> list[outcome.Outcome[Any]]:
    """Run one round of every session in ``rounds``; one outcome (value or error) each."""
    for step in rounds:
        step.begin(len(rounds))
    results = advance_together([step.steps for step in rounds])
    return [
        outcome.capture(step.finish, result) for step, result in zip(rounds, results, strict=True)
    ]


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

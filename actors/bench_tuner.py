"""Benchmark the tuner's fallback: a drafter that is always wrong must not slow decoding.

The wrong drafter proposes the token the target finds least likely after
the prompt, so every draft is rejected. The tuner has to
learn that drafting does not pay and fall back to plain decoding, paying
only for its occasional probes. Plain and speculative runs alternate, so
load on a shared machine hits both alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import mlx.core as mx

from draftwise.runtime.arrays import scalar_int
from draftwise.runtime.drafters.base import DraftProposal
from draftwise.runtime.generate import (
    GenerationParams,
    PrefixCachePrefiller,
    Timings,
    fresh_prefill,
    generate_plain,
)
from draftwise.runtime.language_model import LanguageModel
from draftwise.runtime.sampling import SamplingParams
from draftwise.runtime.speculative import SpeculationStats, generate_speculative
from draftwise.runtime.tuner import DraftLengthTuner


class WrongDrafter:
    """Propose ``wrong_id`` at every position: a drafter the target always rejects."""

    name = "wrong"

    def __init__(self, wrong_id: int) -> None:
        self.wrong_id = wrong_id

    def start(self, prompt_ids: Sequence[int], prefiller: Any) -> None:
        pass

    def propose(
        self, num_tokens: int, sampling: SamplingParams, keys: list[mx.array] | None
    ) -> DraftProposal:
        return DraftProposal(mx.full((num_tokens,), self.wrong_id, dtype=mx.uint32), None)

    def commit(self, num_accepted: int, committed_ids: Sequence[int]) -> None:
        pass


def unlikely_token(target: LanguageModel, prompt_ids: Sequence[int]) -> int:
    """Return the token the target finds least likely after the prompt.

    The target practically never picks it later either, so drafting it gets
    rejected; the benchmark reports accepted tokens, so an exception shows.
    """
    _, logits = fresh_prefill(target.model, prompt_ids, 2)
    return scalar_int(mx.argmin(logits.reshape(-1)))


def bench_wrong_drafter(
    target: LanguageModel, prompt_ids: Sequence[int], max_tokens: int = 96, repeats: int = 2
) -> dict[str, Any]:
    """Time plain decoding against auto speculation with an always-rejected drafter."""
    wrong_id = unlikely_token(target, prompt_ids)
    params = GenerationParams(max_tokens=max_tokens)
    prefiller = PrefixCachePrefiller(capacity=1)
    plain_rates: list[float] = []
    auto_rates: list[float] = []
    stats = SpeculationStats()
    identical = True
    for _ in range(repeats):
        timings = Timings()
        plain_ids: list[int] = []
        for chunk in generate_plain(
            target.model, target.tokenizer, prompt_ids, params, timings, prefiller
        ):
            plain_ids.extend(chunk.token_ids)
        plain_rates.append(timings.decode_tokens_per_s)

        timings = Timings()
        stats = SpeculationStats()
        tuner = DraftLengthTuner(max_draft=8)
        spec_ids: list[int] = []
        for chunk in generate_speculative(
            target.model,
            WrongDrafter(wrong_id),
            target.tokenizer,
            prompt_ids,
            params,
            tuner,
            stats,
            timings,
            prefiller,
        ):
            spec_ids.extend(chunk.token_ids)
        auto_rates.append(timings.decode_tokens_per_s)
        identical = identical and spec_ids == plain_ids
    plain = statistics.median(plain_rates)
    auto = statistics.median(auto_rates)
    return {
        "model": target.name,
        "prompt_tokens": len(prompt_ids),
        "max_tokens": max_tokens,
        "plain_tokens_per_s": plain_rates,
        "auto_tokens_per_s": auto_rates,
        "ratio": auto / plain if plain > 0 else 0.0,
        "rounds": stats.rounds,
        "num_drafted": stats.num_drafted,
        "num_accepted": stats.num_accepted,
        "draft_lengths": stats.draft_lengths,
        "identical_to_plain": identical,
    }

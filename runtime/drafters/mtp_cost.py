"""Time one MTP draft step against one target decode step, on the same cache."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any, cast

import mlx.core as mx

from draftwise.runtime.drafters.mtp import MTPDrafter, MTPWeights
from draftwise.runtime.generate import fresh_prefill
from draftwise.runtime.sampling import SamplingParams


def _median_s(action: Any, repeats: int) -> float:
    action()  # warm-up: kernels, lazy weights
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_step_cost(
    target: Any, weights: MTPWeights, prompt_ids: Sequence[int], repeats: int = 7
) -> dict[str, float]:
    """Return median seconds of a target decode step, of one draft step, and their ratio.

    Both run after a prefill of ``prompt_ids``; the target step is rolled
    back after every run so each one sees the same context.
    """
    cache, logits = fresh_prefill(target, prompt_ids, 16)
    first = cast(int, mx.argmax(logits, axis=-1).item())
    drafter = MTPDrafter(target, weights, max_draft=8)
    drafter.start([*prompt_ids, first])
    greedy = SamplingParams()
    checkpoint = cache.checkpoint()

    def target_step() -> None:
        out = target(mx.array([first], dtype=mx.uint32), cache).logits
        mx.eval(mx.argmax(out, axis=-1), *cache.state())
        cache.rollback(checkpoint)

    def draft_step() -> None:
        mx.eval(drafter.propose(1, greedy, None).draft_token_ids)

    def draft_four() -> None:
        mx.eval(drafter.propose(4, greedy, None).draft_token_ids)

    target_s = _median_s(target_step, repeats)
    draft_s = _median_s(draft_step, repeats)
    draft4_s = _median_s(draft_four, repeats)
    return {
        "context_tokens": len(prompt_ids),
        "target_step_s": round(target_s, 5),
        "draft_step_s": round(draft_s, 5),
        "draft_4_steps_s": round(draft4_s, 5),
        "ratio": round(draft_s / target_s, 4),
        "ratio_per_step_of_4": round(draft4_s / 4 / target_s, 4),
    }

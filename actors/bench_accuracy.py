"""Compare the kernel's arithmetics on a real model: top-1 agreement and logit error.

`draftwise bench accuracy --workload FILE [--limit N] [--max-tokens N]`

For each prompt, float32 arithmetic decodes ``max_tokens`` tokens greedily.
Then every arithmetic this CPU offers (f32, bf16, int8) scores that same
text in one pass (teacher forcing), and decodes greedily on its own. The
report gives, per arithmetic and prompt, the share of positions whose top
token equals float32's and the largest and mean absolute logit difference
(also relative to the spread of float32's logits). It also gives how many
tokens of its own greedy output match float32's before the first difference.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlx.core as mx
import numpy as np

from draftwise.runtime.generate import GenerationParams, generate_plain, prefill
from draftwise.runtime.kernels import MATH_ENV, kernel_info
from draftwise.runtime.language_model import LanguageModel


@contextmanager
def kernel_math(math: str) -> Iterator[None]:
    """Run the block with DRAFTWISE_KERNEL_MATH set to ``math``."""
    before = os.environ.get(MATH_ENV)
    os.environ[MATH_ENV] = math
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MATH_ENV, None)
        else:
            os.environ[MATH_ENV] = before


def usable_maths() -> list[str]:
    """Return the arithmetics the kernel runs on this CPU, float32 first."""
    from draftwise.runtime.kernels import qmm

    extension = qmm._EXTENSION
    if extension is None or not kernel_info()["available"]:
        return ["f32"]
    maths = ["f32"]
    probe = mx.quantize(mx.zeros((8, 64)), group_size=32, bits=4)
    for math in ("bf16", "int8"):
        try:
            mx.eval(extension.quantized_matmul(mx.zeros((1, 64)), *probe, 4, 32, math=math))
        except ValueError:
            continue
        maths.append(math)
    return maths


def _scored_logits(lm: LanguageModel, token_ids: list[int], scored: int) -> np.ndarray:
    """Logits ``[scored, vocab]`` predicting the last ``scored`` tokens of ``token_ids``."""
    model = lm.model
    cache = model.make_cache()
    head = token_ids[:-scored]
    prefill(model, cache, head[:-1])
    logits = model(mx.array([head[-1], *token_ids[-scored:-1]], dtype=mx.uint32), cache).logits
    return np.array(logits.astype(mx.float32))


def _greedy(lm: LanguageModel, prompt_ids: list[int], max_tokens: int) -> list[int]:
    params = GenerationParams(max_tokens=max_tokens)
    chunks = generate_plain(lm.model, lm.tokenizer, prompt_ids, params)
    return [t for chunk in chunks for t in chunk.token_ids]


def compare_maths(
    lm: LanguageModel, rows: list[dict[str, Any]], max_tokens: int, maths: list[str]
) -> dict[str, Any]:
    """Run the comparison on workload ``rows``; see the module docstring."""
    results: list[dict[str, Any]] = []
    for row in rows:
        prompt_ids = lm.encode_messages(row["messages"])
        with kernel_math("f32"):
            reference_ids = _greedy(lm, prompt_ids, max_tokens)
            text_ids = [*prompt_ids, *reference_ids]
            reference = _scored_logits(lm, text_ids, len(reference_ids))
        spread = float(reference.std())
        entry: dict[str, Any] = {
            "id": row["id"],
            "category": row["category"],
            "tokens": len(reference_ids),
        }
        for math in maths:
            if math == "f32":
                continue
            with kernel_math(math):
                logits = _scored_logits(lm, text_ids, len(reference_ids))
                own = _greedy(lm, prompt_ids, max_tokens)
            difference = np.abs(logits - reference)
            same_top = np.argmax(logits, axis=-1) == np.argmax(reference, axis=-1)
            prefix = next(
                (i for i, (a, b) in enumerate(zip(own, reference_ids, strict=False)) if a != b),
                min(len(own), len(reference_ids)),
            )
            entry[math] = {
                "top1_agreement": round(float(same_top.mean()), 4),
                "max_abs_logit_error": round(float(difference.max()), 4),
                "mean_abs_logit_error": round(float(difference.mean()), 5),
                "mean_error_over_logit_std": round(float(difference.mean()) / spread, 5),
                "greedy_tokens_equal_before_first_difference": prefix,
                "greedy_identical": own == reference_ids,
            }
        results.append(entry)
        print(entry, flush=True)
    summary: dict[str, Any] = {}
    for math in maths:
        if math == "f32":
            continue
        summary[math] = {
            "top1_agreement": round(
                float(np.mean([r[math]["top1_agreement"] for r in results])), 4
            ),
            "max_abs_logit_error": max(r[math]["max_abs_logit_error"] for r in results),
            "mean_error_over_logit_std": round(
                float(np.mean([r[math]["mean_error_over_logit_std"] for r in results])), 5
            ),
            "prompts_with_identical_greedy_output": sum(
                r[math]["greedy_identical"] for r in results
            ),
        }
    return {"maths": maths, "prompts": results, "summary": summary}

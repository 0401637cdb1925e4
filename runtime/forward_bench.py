"""Time one whole target forward pass over a few rows, as a verify pass does."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import mlx.core as mx

from draftwise.runtime.models.transformer import Transformer

CONTEXT_TOKENS = 256


def bench_forward(
    model: Transformer, rows: Sequence[int] = (1, 2, 5, 9), repeats: int = 5
) -> list[dict[str, float]]:
    """Return ``[{"m", "ms"}]``: the median time of a forward over m new rows.

    Each pass starts from the same cache of CONTEXT_TOKENS positions and
    evaluates the logits of every row, like a verify pass. A rollback after
    each pass removes its rows, so passes neither grow the context nor copy
    the cache. A snapshot per pass would copy the buffers each pass writes
    to, about 2 ms per pass at any row count.
    """
    cache = model.make_cache()
    context = mx.array([(i * 37) % 1000 + 100 for i in range(CONTEXT_TOKENS)], dtype=mx.uint32)
    mx.eval(model(context, cache, last_row_only=True).logits, *cache.state())
    results = []
    for m in rows:
        tokens = mx.array([(i * 13) % 1000 + 200 for i in range(m)], dtype=mx.uint32)
        times = []
        for _ in range(repeats + 1):
            mark = cache.checkpoint()
            started = time.perf_counter()
            mx.eval(model(tokens, cache).logits)
            times.append(time.perf_counter() - started)
            cache.rollback(mark)
        results.append({"m": m, "ms": round(statistics.median(times[1:]) * 1000, 2)})
    return results

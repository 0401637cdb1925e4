"""`bench_forward` times passes over fresh rows without growing the measured context."""

from __future__ import annotations

from fakes import tiny_model

from draftwise.runtime import forward_bench
from draftwise.runtime.forward_bench import bench_forward


def test_bench_forward_rolls_back_every_pass(monkeypatch):
    model = tiny_model()
    offsets: list[int] = []
    real_call = type(model).__call__

    def recording_call(self, tokens, cache, *args, **kwargs):
        offsets.append(cache.kv_offset)
        return real_call(self, tokens, cache, *args, **kwargs)

    monkeypatch.setattr(type(model), "__call__", recording_call)
    monkeypatch.setattr(forward_bench, "CONTEXT_TOKENS", 16)
    rows = bench_forward(model, rows=(1, 3), repeats=2)
    assert [row["m"] for row in rows] == [1, 3]
    assert all(row["ms"] > 0 for row in rows)
    # The context prefill starts at 0, and every timed pass at the context's end.
    assert offsets[0] == 0
    assert offsets[1:] == [16] * (2 * 3)

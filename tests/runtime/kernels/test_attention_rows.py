"""The extension's row-by-row attention: agreement with MLX ops, row invariance, errors."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import _qmm, requires_extension
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from draftwise.runtime import kernels
from draftwise.runtime.models import layers

pytestmark = requires_extension


def _inputs(rng, heads, kv_heads, rows, length, d, strided=False):
    q = mx.array(rng.standard_normal((heads, rows, d)).astype(np.float32))
    extra = 5 if strided else 0  # keys as a slice of a longer cache buffer
    k = mx.array(rng.standard_normal((kv_heads, length + extra, d)).astype(np.float32))
    v = mx.array(rng.standard_normal((kv_heads, length + extra, d)).astype(np.float32))
    return q, k[:, :length], v[:, :length]


@pytest.mark.parametrize("window", [0, 7])
@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("d", [32, 128])
def test_attention_rows_matches_mlx_ops(window: int, strided: bool, d: int) -> None:
    rng = np.random.default_rng(window + strided)
    q, k, v = _inputs(rng, 8, 2, 5, 40, d, strided)
    got = _qmm.attention_rows(q, k, v, 35, 0, 0.17, window)
    want = layers._attend_rows(q, k, v, 35, 0, 0.17, window)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kv_heads=st.sampled_from([1, 2, 4]),
    groups=st.sampled_from([1, 3]),
    rows=st.integers(1, 16),
    context=st.integers(0, 60),
    d=st.sampled_from([8, 16, 20, 64, 128, 256]),
    window=st.sampled_from([0, 1, 5, 30]),
    key_start=st.sampled_from([0, 11]),
    seed=st.integers(0, 2**32 - 1),
)
def test_each_row_equals_the_row_alone(
    kv_heads: int,
    groups: int,
    rows: int,
    context: int,
    d: int,
    window: int,
    key_start: int,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    length = context + rows
    q, k, v = _inputs(rng, kv_heads * groups, kv_heads, rows, length, d)
    start = key_start + context
    full = np.array(_qmm.attention_rows(q, k, v, start, key_start, 0.3, window))
    for row in range(rows):
        seen = context + row + 1
        alone = _qmm.attention_rows(
            q[:, row : row + 1], k[:, :seen], v[:, :seen], start + row, key_start, 0.3, window
        )
        np.testing.assert_array_equal(np.array(alone), full[:, row : row + 1])


@pytest.mark.parametrize("window", [0, 21, 37])
@pytest.mark.parametrize("d", [64, 128, 256])
def test_key_tiles_match_row_alone(window: int, d: int) -> None:
    # Scores run 16 keys at a time from the block's first key. A row alone
    # starts its tiles elsewhere when a sliding window moves its first key,
    # so the same key is scored by the 16-key and the single-key code paths.
    rng = np.random.default_rng(d + window)
    rows, context = 9, 70
    q, k, v = _inputs(rng, 6, 2, rows, context + rows, d)
    full = np.array(_qmm.attention_rows(q, k, v, context, 0, 0.3, window))
    for row in range(rows):
        seen = context + row + 1
        alone = _qmm.attention_rows(
            q[:, row : row + 1], k[:, :seen], v[:, :seen], context + row, 0, 0.3, window
        )
        np.testing.assert_array_equal(np.array(alone), full[:, row : row + 1])


@pytest.mark.parametrize("length", [37, 48])
def test_softmax_weights_match_float64(length: int) -> None:
    # Key j scores s[j] (q = e0, k[j] = s[j] e0, scale 1) and its value is
    # e_j, so the output row is the softmax weights themselves. The scores
    # span 0 down to -120, past where e^x leaves the normal floats.
    d = 64
    scores = np.linspace(0.0, -120.0, length).astype(np.float32)
    scores[5] = 3.25  # the maximum away from the first key
    q = np.zeros((1, 1, d), np.float32)
    q[0, 0, 0] = 1.0
    k = np.zeros((1, length, d), np.float32)
    k[0, :, 0] = scores
    v = np.zeros((1, length, d), np.float32)
    v[0, np.arange(length), np.arange(length)] = 1.0
    got = np.array(_qmm.attention_rows(mx.array(q), mx.array(k), mx.array(v), length - 1, 0, 1.0))
    exp = np.exp(scores.astype(np.float64) - scores.max())
    want = exp / exp.sum()
    np.testing.assert_allclose(got[0, 0, :length], want, rtol=2e-6, atol=1e-30)


def test_nan_score_gives_nan_row_only() -> None:
    rng = np.random.default_rng(9)
    q, k, v = _inputs(rng, 4, 2, 3, 40, 64)
    q = np.array(q)
    q[1, 2, 0] = np.nan  # head 1, row 2
    got = np.array(_qmm.attention_rows(mx.array(q), k, v, 37, 0, 0.25))
    assert np.isnan(got[1, 2]).all()
    got[1, 2] = 0.0
    assert np.isfinite(got).all()


def test_attention_rows_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    q, k, v = _inputs(rng, 6, 4, 2, 10, 16)
    with pytest.raises(ValueError, match="heads must be a multiple of kv_heads"):
        _qmm.attention_rows(q, k, v, 8, 0, 0.25)
    q, k, v = _inputs(rng, 4, 2, 2, 10, 16)
    with pytest.raises(ValueError, match=r"rows at positions 9\.\.10 are not inside"):
        _qmm.attention_rows(q, k, v, 9, 0, 0.25)
    with pytest.raises(ValueError, match="window=-1 must be 0"):
        _qmm.attention_rows(q, k, v, 8, 0, 0.25, -1)
    with pytest.raises(ValueError, match="3-D float32"):
        _qmm.attention_rows(q.astype(mx.float16), k, v, 8, 0, 0.25)


def test_attend_kernel_off_uses_mlx(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    q, k, v = _inputs(rng, 4, 2, 3, 12, 16)
    monkeypatch.setenv(kernels.KERNEL_ENV, "off")
    assert kernels.attention_rows(q, k, v, 9, 0, 0.25, 0) is None
    off = layers.attend(q, k, v, query_start=9, key_start=0, scale=0.25)
    np.testing.assert_array_equal(
        np.array(off), np.array(layers._attend_rows(q, k, v, 9, 0, 0.25, 0))
    )
    monkeypatch.delenv(kernels.KERNEL_ENV)
    on = layers.attend(q, k, v, query_start=9, key_start=0, scale=0.25)
    np.testing.assert_array_equal(
        np.array(on), np.array(_qmm.attention_rows(q, k, v, 9, 0, 0.25, 0))
    )

"""The extension's RMS norm and rotary embedding: accuracy, row invariance, strides, errors."""

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


def _rope_float64(
    x: np.ndarray, offset: int, base: float, scale: float, traditional: bool
) -> np.ndarray:
    _, rows, d = x.shape
    half = d // 2
    x = x.astype(np.float64)
    positions = (offset + np.arange(rows)) * scale
    angles = positions[:, None] * base ** (-np.arange(half) * 2.0 / d)[None, :]
    cos, sin = np.cos(angles), np.sin(angles)
    if traditional:
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        x1, x2 = x[..., :half], x[..., half:]
    out1 = x1 * cos - x2 * sin
    out2 = x1 * sin + x2 * cos
    out = np.empty_like(x)
    if traditional:
        out[..., 0::2], out[..., 1::2] = out1, out2
    else:
        out[..., :half], out[..., half:] = out1, out2
    return out


@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize("offset", [0, 7, 4000])
def test_rope_rows_matches_float64(traditional: bool, offset: int) -> None:
    rng = np.random.default_rng(offset)
    x = rng.standard_normal((3, 5, 64)).astype(np.float32)
    got = np.array(_qmm.rope_rows(mx.array(x), offset, 10000.0, 0.5, traditional))
    want = _rope_float64(x, offset, 10000.0, 0.5, traditional)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    # The same rotation as MLX's own, which computes its angles in float32.
    fast = mx.fast.rope(
        mx.array(x), 64, traditional=traditional, base=10000.0, scale=0.5, offset=offset
    )
    np.testing.assert_allclose(got, np.array(fast), rtol=0, atol=2e-3)


def test_rms_norm_rows_matches_float64() -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 1536)) * 30).astype(np.float32)
    w = rng.standard_normal(1536).astype(np.float32)
    got = np.array(_qmm.rms_norm_rows(mx.array(x), mx.array(w), 1e-6))
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt(np.mean(x64**2, axis=-1, keepdims=True) + 1e-6) * w
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
    fast = mx.fast.rms_norm(mx.array(x), mx.array(w), 1e-6)
    np.testing.assert_allclose(got, np.array(fast), rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    heads=st.integers(1, 4),
    rows=st.integers(1, 10),
    half=st.integers(1, 40),
    offset=st.integers(0, 5000),
    traditional=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_rows_match_rows_alone(
    heads: int, rows: int, half: int, offset: int, traditional: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    d = 2 * half
    x = mx.array((rng.standard_normal((heads, rows, d)) * 4).astype(np.float32))
    w = mx.array(rng.standard_normal(d).astype(np.float32))
    rotated = np.array(_qmm.rope_rows(x, offset, 1e6, 1.0, traditional))
    normed = np.array(_qmm.rms_norm_rows(x, w, 1e-5))
    for row in range(rows):
        alone = x[:, row : row + 1]
        np.testing.assert_array_equal(
            np.array(_qmm.rope_rows(alone, offset + row, 1e6, 1.0, traditional))[:, 0],
            rotated[:, row],
        )
        np.testing.assert_array_equal(
            np.array(_qmm.rms_norm_rows(alone, w, 1e-5))[:, 0], normed[:, row]
        )


def test_strided_input_same_bits() -> None:
    rng = np.random.default_rng(2)
    # [rows, heads, d] transposed to [heads, rows, d], as the attention block does.
    base = mx.array(rng.standard_normal((6, 4, 32)).astype(np.float32))
    strided = base.transpose(1, 0, 2)
    dense = mx.array(np.array(strided))
    w = mx.array(rng.standard_normal(32).astype(np.float32))
    for op in (
        lambda x: _qmm.rope_rows(x, 11, 10000.0, 1.0, False),
        lambda x: _qmm.rms_norm_rows(x, w, 1e-6),
    ):
        np.testing.assert_array_equal(np.array(op(strided)), np.array(op(dense)))
    # Strided along d too.
    along_d = mx.array(rng.standard_normal((32, 5)).astype(np.float32)).T
    np.testing.assert_array_equal(
        np.array(_qmm.rms_norm_rows(along_d, w, 1e-6)),
        np.array(_qmm.rms_norm_rows(mx.array(np.array(along_d)), w, 1e-6)),
    )


def test_bad_input_names_value() -> None:
    with pytest.raises(ValueError, match="has 1 dimensions; it needs 2"):
        _qmm.rms_norm_rows(mx.zeros((4,)), mx.ones((4,)), 1e-6)
    with pytest.raises(ValueError, match=r"weight must be float32 \[8\]"):
        _qmm.rms_norm_rows(mx.zeros((2, 8)), mx.ones((7,)), 1e-6)
    with pytest.raises(ValueError, match=r"eps -1.* is invalid"):
        _qmm.rms_norm_rows(mx.zeros((2, 8)), mx.ones((8,)), -1.0)
    with pytest.raises(ValueError, match="even d, got 3 dimensions and d = 5"):
        _qmm.rope_rows(mx.zeros((1, 2, 5)), 0, 10000.0, 1.0, False)
    with pytest.raises(ValueError, match="offset -3 is invalid"):
        _qmm.rope_rows(mx.zeros((1, 2, 4)), -3, 10000.0, 1.0, False)
    with pytest.raises(ValueError, match=r"base 0.* is invalid"):
        _qmm.rope_rows(mx.zeros((1, 2, 4)), 0, 0.0, 1.0, False)
    with pytest.raises(ValueError, match="x must be float32"):
        _qmm.rope_rows(mx.zeros((1, 2, 4), dtype=mx.float16), 0, 10000.0, 1.0, False)
    with pytest.raises(ValueError, match="scale inf is invalid"):
        _qmm.rope_rows(mx.zeros((1, 2, 4)), 0, 10000.0, float("inf"), False)


def test_layers_fall_back_kernel_off(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    x = mx.array(rng.standard_normal((2, 3, 16)).astype(np.float32))
    w = mx.array(rng.standard_normal(16).astype(np.float32))
    monkeypatch.setenv(kernels.KERNEL_ENV, "off")
    assert kernels.rms_norm_rows(x, w, 1e-6) is None
    assert kernels.rope_rows(x, 3, 10000.0, 1.0, False) is None
    np.testing.assert_array_equal(
        np.array(layers.rms_norm(x, w, 1e-6)), np.array(mx.fast.rms_norm(x, w, 1e-6))
    )
    np.testing.assert_array_equal(
        np.array(layers.rope(x, 3, 10000.0, 1.0, False)),
        np.array(mx.fast.rope(x, 16, traditional=False, base=10000.0, scale=1.0, offset=3)),
    )
    monkeypatch.delenv(kernels.KERNEL_ENV)
    np.testing.assert_array_equal(
        np.array(layers.rms_norm(x, w, 1e-6)), np.array(_qmm.rms_norm_rows(x, w, 1e-6))
    )
    # Inputs the extension does not take fall back to MLX's ops.
    half = x.astype(mx.float16)
    assert kernels.rms_norm_rows(half, w, 1e-6) is None
    assert kernels.rope_rows(x[..., :15], 0, 10000.0, 1.0, False) is None

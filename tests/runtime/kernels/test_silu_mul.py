"""The extension's fused SiLU-multiply: accuracy, row invariance, strided input, errors."""

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


def _exact(gate_up: np.ndarray) -> np.ndarray:
    gate, up = np.split(gate_up.astype(np.float64), 2, axis=1)
    return gate / (1.0 + np.exp(-gate)) * up


def test_silu_mul_is_within_float32_rounding_of_float64() -> None:
    rng = np.random.default_rng(0)
    # Gates from -100 to 100 cover both clamps and the whole polynomial range.
    gate = np.concatenate([rng.uniform(-100, 100, 3000), rng.standard_normal(3000) * 4])
    up = rng.standard_normal(gate.size)
    gate_up = np.stack([gate, up]).reshape(1, -1).astype(np.float32)
    got = np.array(_qmm.silu_mul(mx.array(gate_up)), dtype=np.float64)
    want = _exact(gate_up)
    # Below the clamp (gate < -87) both are zero to float precision.
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)


def test_silu_mul_limits() -> None:
    gate_up = mx.array([[200.0, -200.0, 0.0, -87.5, 1.0, 1.0, 1.0, 1.0]])
    got = np.array(_qmm.silu_mul(gate_up))[0]
    assert got[0] == 200.0
    assert got[2] == 0.0
    assert abs(got[1]) < 1e-30
    assert abs(got[3]) < 1e-30
    assert np.all(np.isfinite(got))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 12), f=st.integers(1, 70), seed=st.integers(0, 2**32 - 1))
def test_each_row_equals_the_row_alone(rows: int, f: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    gate_up = mx.array((rng.standard_normal((rows, 2 * f)) * 5).astype(np.float32))
    full = np.array(_qmm.silu_mul(gate_up))
    for row in range(rows):
        alone = np.array(_qmm.silu_mul(gate_up[row : row + 1]))
        np.testing.assert_array_equal(alone[0], full[row])


def test_silu_mul_reads_strided_input() -> None:
    rng = np.random.default_rng(3)
    wide = mx.array(rng.standard_normal((5, 30)).astype(np.float32))
    rows_apart = wide[:, 4:24]  # rows 30 floats apart
    transposed = mx.array(rng.standard_normal((20, 5)).astype(np.float32)).T
    for gate_up in (rows_apart, transposed):
        got = _qmm.silu_mul(gate_up)
        want = _qmm.silu_mul(mx.array(np.array(gate_up)))
        np.testing.assert_array_equal(np.array(got), np.array(want))


def test_silu_mul_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D float32"):
        _qmm.silu_mul(mx.zeros((2, 4), dtype=mx.float16))
    with pytest.raises(ValueError, match="2-D float32"):
        _qmm.silu_mul(mx.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match="5 columns; it needs an even count"):
        _qmm.silu_mul(mx.zeros((2, 5)))


def test_silu_gated_kernel_off(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    gate_up = mx.array((rng.standard_normal((3, 16)) * 3).astype(np.float32))
    gate, up = gate_up[:, :8], gate_up[:, 8:]
    monkeypatch.setenv(kernels.KERNEL_ENV, "off")
    assert kernels.silu_mul(gate_up) is None
    off = np.array(layers.silu_gated(gate_up))
    np.testing.assert_array_equal(off, np.array(layers.silu(gate) * up))
    monkeypatch.delenv(kernels.KERNEL_ENV)
    on = np.array(layers.silu_gated(gate_up))
    np.testing.assert_array_equal(on, np.array(_qmm.silu_mul(gate_up)))
    np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-6)

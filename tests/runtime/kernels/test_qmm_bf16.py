"""The bfloat16 kernel (AVX-512 BF16): its exact math, batch invariance, fallbacks."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import (
    BITS,
    GROUP_SIZES,
    _qmm,
    assert_rows_batch_invariant,
    make_weight,
    unpacked_integers,
    usable_isas,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from draftwise.runtime import kernels
from draftwise.runtime.weights import QuantizedTensor


def _has_bf16() -> bool:
    if "avx512" not in usable_isas():
        return False
    w, s, b = mx.quantize(mx.zeros((8, 64)), group_size=32, bits=4)
    try:
        mx.eval(_qmm.quantized_matmul(mx.zeros((1, 64)), w, s, b, 4, 32, math="bf16"))
    except ValueError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    _qmm is None or not _has_bf16(), reason="the bf16 kernel needs a CPU with AVX512_BF16"
)


def run(x: np.ndarray, w: QuantizedTensor, math: str = "bf16") -> np.ndarray:
    out = _qmm.quantized_matmul(
        mx.array(x), w.weight, w.scales, w.biases, w.bits, w.group_size, math=math
    )
    return np.array(out)


def to_bf16(a: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even); return them as float64."""
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def simulated_bf16(x: np.ndarray, w: QuantizedTensor) -> tuple[np.ndarray, np.ndarray]:
    """What the kernel multiplies, in float64: (result, bound on float32 summation error)."""
    q = unpacked_integers(w)
    scales = np.repeat(np.array(w.scales).astype(np.float64), w.group_size, axis=1)
    biases = np.repeat(np.array(w.biases).astype(np.float64), w.group_size, axis=1)
    weights = (q * scales + biases).astype(np.float32)  # fmadd(q, scale, bias), rounded once
    xb, wb = to_bf16(x), to_bf16(weights)
    bound = 1e-5 * (np.abs(xb) @ np.abs(wb).T) + 1e-6
    return xb @ wb.T, bound


BF16_BITS = (4, 8)


@pytest.mark.parametrize("bits", BF16_BITS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_bf16_matches_simulated_bfloat16_math(group_size: int, bits: int) -> None:
    rng = np.random.default_rng(group_size + bits)
    for n, k in [(1, group_size), (13, 3 * group_size), (37, 512)]:
        w = make_weight(rng, n, k, bits, group_size)
        for m in (1, 2, 3, 5, 8, 9, 10, 17, 40):
            x = rng.standard_normal((m, k)).astype(np.float32)
            expected, bound = simulated_bf16(x, w)
            assert (np.abs(run(x, w) - expected) <= bound).all(), (n, k, m)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bits=st.sampled_from(BF16_BITS),
    group_size=st.sampled_from(GROUP_SIZES),
    n=st.integers(1, 40),
    groups=st.integers(1, 8),
    rows=st.integers(1, 30),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_bf16_rows_independent_of_batch(
    bits: int, group_size: int, n: int, groups: int, rows: int, seed: int, data: st.DataObject
) -> None:
    rng = np.random.default_rng(seed)
    w = make_weight(rng, n, groups * group_size, bits, group_size)
    x = rng.standard_normal((rows, groups * group_size)).astype(np.float32)
    assert_rows_batch_invariant(lambda batch: run(batch, w), x, data)


@pytest.mark.parametrize("bits", [b for b in BITS if b not in BF16_BITS])
def test_other_widths_run_float32_math(bits: int) -> None:
    rng = np.random.default_rng(bits)
    w = make_weight(rng, 19, 256, bits, 64)
    x = rng.standard_normal((5, 256)).astype(np.float32)
    np.testing.assert_array_equal(run(x, w), run(x, w, "f32"))


@pytest.mark.parametrize("bits", BF16_BITS)
def test_bf16_close_to_float32(bits: int) -> None:
    rng = np.random.default_rng(3)
    w = make_weight(rng, 64, 1024, bits, 32)
    x = rng.standard_normal((4, 1024)).astype(np.float32)
    bf16, f32 = run(x, w), run(x, w, "f32")
    assert not np.array_equal(bf16, f32)
    # Rounding x and w to 8 significant bits moves a dot product of 1024
    # terms by well under 1% of its scale.
    assert np.abs(bf16 - f32).max() < 0.01 * np.abs(f32).max()


def test_kernel_math_env_selects_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    monkeypatch.setenv(kernels.MATH_ENV, "bf16")
    rng = np.random.default_rng(1)
    w = make_weight(rng, 24, 256, 4, 64)
    x = rng.standard_normal((3, 256)).astype(np.float32)
    assert kernels.kernel_info()["math"] == "bf16"
    np.testing.assert_array_equal(np.array(kernels.quantized_matmul(mx.array(x), w)), run(x, w))


def test_bf16_other_isa_rejected() -> None:
    w, s, b = mx.quantize(mx.zeros((8, 64)), group_size=32, bits=4)
    with pytest.raises(ValueError, match="math='bf16' needs a CPU with AVX512_BF16"):
        _qmm.quantized_matmul(mx.zeros((1, 64)), w, s, b, 4, 32, isa="scalar", math="bf16")


def test_auto_math_here(monkeypatch: pytest.MonkeyPatch) -> None:
    # This CPU has AVX512_BF16; with VNNI too (every such CPU so far), auto
    # picks the faster int8 kernel.
    expected = "int8" if _qmm.variant_name(math="int8") == "avx512_i8" else "bf16"
    monkeypatch.delenv(kernels.MATH_ENV, raising=False)
    assert kernels.kernel_math() == expected
    monkeypatch.setenv(kernels.MATH_ENV, "auto")
    assert kernels.kernel_info()["math"] == expected

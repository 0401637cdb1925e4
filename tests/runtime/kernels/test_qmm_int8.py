"""The int8-activation kernels (AVX2, AVX-512 VNNI): exact int8 math, invariance, accuracy."""

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
    reference,
    usable_isas,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from draftwise.runtime import kernels
from draftwise.runtime.weights import QuantizedTensor

pytestmark = pytest.mark.skipif(
    "avx2" not in usable_isas(), reason="the int8 kernel needs the extension and an AVX2 CPU"
)


INT8_BITS = (4, 8)  # widths with integer math; the others run float32


def _has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return "avx512_vnni" in cpuinfo.read()
    except OSError:
        return False


# The int8 variants this CPU runs: AVX2 always, AVX-512 where it has VNNI
# (without VNNI, isa="avx512" runs the AVX2 int8 kernel).
INT8_ISAS = ["avx2"] + (["avx512"] if "avx512" in usable_isas() and _has_vnni() else [])


def run(x: np.ndarray, w: QuantizedTensor, math: str = "int8", isa: str = "avx2") -> np.ndarray:
    out = _qmm.quantized_matmul(
        mx.array(x), w.weight, w.scales, w.biases, w.bits, w.group_size, isa=isa, math=math
    )
    return np.array(out)


def simulated_int8(x: np.ndarray, w: QuantizedTensor, isa: str = "avx2") -> np.ndarray:
    """What the int8 kernel of ``isa`` computes, in float64 from the same int8 rows."""
    blocks = x.reshape(x.shape[0], -1, 32)
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    inverse = np.where(amax > 0, np.float32(127) / np.maximum(amax, 1e-30), 0).astype(np.float32)
    x_int8 = np.rint(blocks * inverse)
    block_scale = amax / np.float32(127)
    x_seen = (x_int8 * block_scale).reshape(x.shape)
    # The AVX2 kernel centres 8-bit weights (q - 128) and moves the 128 *
    # scale part to the bias, which meets the exact x sums.
    offset = 128 if w.bits == 8 and isa == "avx2" else 0
    scales = np.repeat(np.array(w.scales).astype(np.float64), w.group_size, axis=1)
    biases = np.repeat(np.array(w.biases).astype(np.float64), w.group_size, axis=1)
    exact_part = biases + offset * scales
    return reference(x_seen, w) - x_seen.astype(np.float64) @ exact_part.T + x @ exact_part.T


@pytest.mark.parametrize("isa", INT8_ISAS)
@pytest.mark.parametrize("bits", INT8_BITS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_int8_matches_simulated_int8_math(group_size: int, bits: int, isa: str) -> None:
    rng = np.random.default_rng(group_size + bits)
    # AVX2 works in chunks of 8 blocks (256 elements), AVX-512 in chunks of
    # 4 (128): cover whole chunks and every tail length.
    for n, k in [(1, group_size), (7, 3 * group_size), (37, 256), (9, 768 + 128), (5, 352)]:
        if k % group_size:
            continue
        w = make_weight(rng, n, k, bits, group_size)
        for m in (1, 2, 3, 4, 5, 9, 40):
            x = rng.standard_normal((m, k)).astype(np.float32)
            expected = simulated_int8(x, w, isa)
            bound = 1e-5 * (np.abs(x) @ np.abs(np.array(w.dequantize())).T) + 1e-5
            assert (np.abs(run(x, w, isa=isa) - expected) <= bound).all(), (n, k, m)


@pytest.mark.parametrize("isa", INT8_ISAS)
@pytest.mark.parametrize("bits", INT8_BITS)
def test_int8_error_against_float_reference(bits: int, isa: str) -> None:
    rng = np.random.default_rng(0)
    w = make_weight(rng, 256, 1536, bits, 32)
    x = rng.standard_normal((16, 1536)).astype(np.float32)
    exact = reference(x, w)
    relative = np.abs(run(x, w, isa=isa) - exact).mean() / np.sqrt((exact**2).mean())
    # Per-block int8 rounding of Gaussian rows costs about 1% of the output RMS.
    assert relative < 0.03
    assert relative > 1e-4  # int8 math is really in use


@pytest.mark.parametrize("isa", INT8_ISAS)
@pytest.mark.parametrize("bits", [b for b in BITS if b not in INT8_BITS])
def test_int8_other_bits_use_float32(bits: int, isa: str) -> None:
    rng = np.random.default_rng(bits)
    w = make_weight(rng, 19, 128, bits, 32)
    x = rng.standard_normal((3, 128)).astype(np.float32)
    np.testing.assert_array_equal(run(x, w, "int8", isa), run(x, w, "f32", isa))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    isa=st.sampled_from(INT8_ISAS),
    bits=st.sampled_from(INT8_BITS),
    group_size=st.sampled_from(GROUP_SIZES),
    n=st.integers(1, 40),
    groups=st.integers(1, 12),
    rows=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_int8_rows_independent_of_batch(
    isa: str,
    bits: int,
    group_size: int,
    n: int,
    groups: int,
    rows: int,
    seed: int,
    data: st.DataObject,
) -> None:
    rng = np.random.default_rng(seed)
    w = make_weight(rng, n, groups * group_size, bits, group_size)
    x = rng.standard_normal((rows, groups * group_size)).astype(np.float32)
    assert_rows_batch_invariant(lambda batch: run(batch, w, isa=isa), x, data)


def test_kernel_math_env_selects_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    monkeypatch.setenv(kernels.MATH_ENV, "int8")
    rng = np.random.default_rng(1)
    w = make_weight(rng, 24, 256, 4, 64)
    x = rng.standard_normal((3, 256)).astype(np.float32)
    assert kernels.kernel_info()["math"] == "int8"
    # The CPU's best int8 variant: AVX-512 VNNI where present, else AVX2.
    best = _qmm.quantized_matmul(
        mx.array(x), w.weight, w.scales, w.biases, w.bits, w.group_size, math="int8"
    )
    np.testing.assert_array_equal(
        np.array(kernels.quantized_matmul(mx.array(x), w)), np.array(best)
    )
    assert not np.array_equal(np.array(best), run(x, w, "f32"))


def test_kernel_math_env_rejects_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    monkeypatch.setenv(kernels.MATH_ENV, "fp8")
    w = make_weight(np.random.default_rng(2), 8, 64, 4, 32)
    with pytest.raises(ValueError, match="DRAFTWISE_KERNEL_MATH='fp8'"):
        kernels.quantized_matmul(mx.zeros((1, 64)), w)

"""float16 group scales and biases: every variant computes as with the same values in float32."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import _qmm, make_weight, requires_extension, usable_isas

pytestmark = requires_extension

MATHS = ("f32", "int8", "bf16")


def _variants() -> list[tuple[str, str]]:
    """(isa, math) pairs this CPU runs, each distinct variant once."""
    pairs, names = [], set()
    for isa in usable_isas():
        for math in MATHS:
            try:
                name = _qmm.variant_name(isa, math)
            except ValueError:
                continue
            if name not in names:
                names.add(name)
                pairs.append((isa, math))
    return pairs


def _run(x: mx.array, weight: mx.array, scales: mx.array, biases: mx.array, w, isa, math):
    out = _qmm.quantized_matmul(x, weight, scales, biases, w.bits, w.group_size, isa=isa, math=math)
    return np.array(out)


@pytest.mark.parametrize(("isa", "math"), _variants())
@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("group_size", [32, 128])
@pytest.mark.parametrize("rows", [1, 3, 9, 17])
def test_half_groups_equal_widened_groups(
    isa: str, math: str, bits: int, group_size: int, rows: int
) -> None:
    # 301 columns: several thread tasks, and a last one narrower than the rest.
    rng = np.random.default_rng(bits * 1000 + group_size + rows)
    w = make_weight(rng, 301, 2 * 128, bits, group_size)
    half_scales = w.scales.astype(mx.float16)
    half_biases = w.biases.astype(mx.float16)
    x = mx.array(rng.standard_normal((rows, 256)).astype(np.float32))
    half = _run(x, w.weight, half_scales, half_biases, w, isa, math)
    widened = _run(
        x, w.weight, half_scales.astype(mx.float32), half_biases.astype(mx.float32), w, isa, math
    )
    np.testing.assert_array_equal(half, widened)


def test_half_groups_widen_subnormals_and_extremes() -> None:
    # One group per column; the scales cover zero, subnormals, the largest
    # float16 and a negative value, and the weight is all ones (q = 1).
    values = np.array([0.0, 2.0**-24, 3 * 2.0**-20, 65504.0, -1.5], dtype=np.float16)
    n = len(values)
    scales = mx.array(values.reshape(n, 1))
    biases = mx.zeros((n, 1), dtype=mx.float16)
    weight = mx.array(np.full((n, 32 * 8 // 32), 0x01010101, dtype=np.uint32))
    x = mx.zeros((1, 32)).at[0, 0].add(1.0)  # picks element 0 of each column
    out = np.array(_qmm.quantized_matmul(x, weight, scales, biases, 8, 32, math="f32"))
    np.testing.assert_array_equal(out[0], values.astype(np.float32))


@pytest.mark.parametrize(("isa", "math"), _variants())
def test_reads_half_groups_only_avx512_int8(isa: str, math: str) -> None:
    native = _qmm.variant_name(isa, math) == "avx512_i8"
    assert _qmm.reads_half_groups(isa, math, 4) == native
    assert _qmm.reads_half_groups(isa, math, 8) == native
    assert not _qmm.reads_half_groups(isa, math, 3)

"""The kernel against a float64 reference, for every ISA this CPU runs."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import (
    BITS,
    GROUP_SIZES,
    _qmm,
    make_weight,
    reference,
    requires_extension,
    tolerance,
    usable_isas,
)

pytestmark = requires_extension

# (n, groups) with k = groups * group_size. No n is a multiple of the 3-, 4-, 6-,
# 12- or 24-column tiles, so every remainder path runs.
RAGGED_SHAPES = [(1, 1), (7, 3), (37, 2), (50, 5)]


def run(x: np.ndarray, w, isa: str) -> np.ndarray:
    out = _qmm.quantized_matmul(
        mx.array(x), w.weight, w.scales, w.biases, w.bits, w.group_size, isa=isa
    )
    return np.array(out)


@pytest.mark.parametrize("isa", usable_isas())
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_qmm_matches_reference_rows_1_to_16(isa: str, bits: int, group_size: int) -> None:
    rng = np.random.default_rng(bits * 1000 + group_size)
    for n, groups in RAGGED_SHAPES:
        w = make_weight(rng, n, groups * group_size, bits, group_size)
        for m in range(1, 17):
            x = rng.standard_normal((m, groups * group_size)).astype(np.float32)
            got = run(x, w, isa)
            assert got.shape == (m, n)
            error = np.abs(got - reference(x, w))
            assert (error <= tolerance(x, w)).all(), (n, groups, m, error.max())


@pytest.mark.parametrize("isa", usable_isas())
@pytest.mark.parametrize("bits", [4, 8])
def test_qmm_many_rows_match_reference(isa: str, bits: int) -> None:
    rng = np.random.default_rng(bits)
    # More rows than one row block of the tiled path, K spanning several slabs.
    w = make_weight(rng, 53, 640, bits, 32)
    x = rng.standard_normal((150, 640)).astype(np.float32)
    got = run(x, w, isa)
    error = np.abs(got - reference(x, w))
    assert (error <= tolerance(x, w)).all(), error.max()


@pytest.mark.parametrize("isa", usable_isas())
def test_qmm_leading_dimensions_kept(isa: str) -> None:
    rng = np.random.default_rng(3)
    w = make_weight(rng, 24, 128, 4, 64)
    x = rng.standard_normal((2, 3, 128)).astype(np.float32)
    got = run(x, w, isa)
    assert got.shape == (2, 3, 24)
    flat = reference(x.reshape(6, 128), w).reshape(2, 3, 24)
    assert np.abs(got - flat).max() <= tolerance(x.reshape(6, 128), w).min() * 10


@pytest.mark.parametrize("isa", usable_isas())
def test_qmm_one_dimensional_x(isa: str) -> None:
    rng = np.random.default_rng(4)
    w = make_weight(rng, 9, 64, 5, 32)
    x = rng.standard_normal(64).astype(np.float32)
    got = run(x, w, isa)
    assert got.shape == (9,)
    assert np.allclose(got, reference(x[None], w)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", usable_isas())
def test_qmm_non_contiguous_x(isa: str) -> None:
    rng = np.random.default_rng(5)
    w = make_weight(rng, 16, 64, 4, 32)
    wide = mx.array(rng.standard_normal((64, 12)).astype(np.float32))
    x = wide.T[::2]  # [6, 64], strided
    got = np.array(_qmm.quantized_matmul(x, w.weight, w.scales, w.biases, 4, 32, isa=isa))
    assert np.allclose(got, reference(np.array(x), w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", usable_isas())
def test_qmm_zero_rows(isa: str) -> None:
    rng = np.random.default_rng(6)
    w = make_weight(rng, 8, 64, 4, 32)
    got = run(np.zeros((0, 64), np.float32), w, isa)
    assert got.shape == (0, 8)

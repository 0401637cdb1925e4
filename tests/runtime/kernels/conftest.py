"""Helpers for the kernel tests: random quantized weights and a float64 reference."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import strategies as st

from draftwise.runtime.weights import QuantizedTensor

try:
    from draftwise.runtime.kernels import _qmm
except ImportError:  # the extension was not built; kernel tests skip
    _qmm = None

BITS = (2, 3, 4, 5, 6, 8)
GROUP_SIZES = (32, 64, 128)

requires_extension = pytest.mark.skipif(
    _qmm is None, reason="draftwise.runtime.kernels._qmm is not built (pip install -v .)"
)


@pytest.fixture(autouse=True)
def float32_math_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the Python API with float32 math unless a test sets DRAFTWISE_KERNEL_MATH itself.

    The default ("auto") is bf16 on CPUs with AVX512_BF16; the API tests
    compare with float32 references.
    """
    monkeypatch.setenv("DRAFTWISE_KERNEL_MATH", "f32")


def usable_isas() -> list[str]:
    return list(_qmm.usable_isas()) if _qmm is not None else []


def make_weight(
    rng: np.random.Generator, n: int, k: int, bits: int, group_size: int
) -> QuantizedTensor:
    """Quantize a random float32 [n, k] matrix with mx.quantize."""
    dense = mx.array(rng.standard_normal((n, k)).astype(np.float32))
    weight, scales, biases = mx.quantize(dense, group_size=group_size, bits=bits)
    return QuantizedTensor(weight, scales, biases, bits, group_size, (n, k))


def unpacked_integers(w: QuantizedTensor) -> np.ndarray:
    """Unpack the quantized integers q [n, k] of w's little-endian bit stream."""
    n, k = w.shape
    words = np.array(w.weight).view(np.uint8)
    stream = np.unpackbits(words, axis=1, bitorder="little")[:, : k * w.bits]
    return (stream.reshape(n, k, w.bits).astype(np.int64) << np.arange(w.bits)).sum(axis=-1)


def reference(x: np.ndarray, w: QuantizedTensor) -> np.ndarray:
    """x @ dequantize(w).T in float64, from the exact integers, scales and biases."""
    scales = np.array(w.scales).astype(np.float64)
    biases = np.array(w.biases).astype(np.float64)
    q = unpacked_integers(w)
    dense = q * np.repeat(scales, w.group_size, axis=1) + np.repeat(biases, w.group_size, axis=1)
    return x.astype(np.float64) @ dense.T


def tolerance(x: np.ndarray, w: QuantizedTensor) -> np.ndarray:
    """Per-output bound for float32 math: a small multiple of eps * sum |x| |w|."""
    dense = np.abs(np.array(w.dequantize()).astype(np.float64))
    return 1e-5 * (np.abs(x.astype(np.float64)) @ dense.T) + 1e-6


def assert_rows_batch_invariant(
    run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, data: st.DataObject
) -> None:
    """Assert that rows of ``run(x)`` stay bit-identical in a slice, alone and shuffled."""
    rows = x.shape[0]
    full = run(x)

    start = data.draw(st.integers(0, rows - 1), label="start")
    stop = data.draw(st.integers(start + 1, rows), label="stop")
    np.testing.assert_array_equal(run(x[start:stop]), full[start:stop])

    row = data.draw(st.integers(0, rows - 1), label="row")
    np.testing.assert_array_equal(run(x[row : row + 1]), full[row : row + 1])

    order = data.draw(st.permutations(range(rows)), label="order")
    np.testing.assert_array_equal(run(x[list(order)]), full[list(order)])

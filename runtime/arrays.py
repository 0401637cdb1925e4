"""Typed conversions from evaluated MLX arrays to Python values."""

from __future__ import annotations

import mlx.core as mx


def scalar_int(array: mx.array) -> int:
    """Return the integer in a one-element array (evaluating it if needed)."""
    value = array.item()
    assert isinstance(value, int), f"expected an integer array, got {array.dtype}"
    return value


def scalar_float(array: mx.array) -> float:
    """Return the number in a one-element float array (evaluating it if needed)."""
    value = array.item()
    assert isinstance(value, float), f"expected a float array, got {array.dtype}"
    return value


def float_list(array: mx.array) -> list[float]:
    """Return a 1-D float array as a list of floats."""
    return [scalar_float(array[i]) for i in range(array.shape[0])]


def int_list(array: mx.array) -> list[int]:
    """Return a 1-D integer array as a list of ints."""
    values = array.tolist()
    assert isinstance(values, list), f"expected a 1-D array, got shape {array.shape}"
    return [int(v) for v in values]  # type: ignore[arg-type]

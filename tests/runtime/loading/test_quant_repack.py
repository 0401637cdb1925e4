"""Exact repacking of GGUF quant blocks into MLX's layout, and the Q6_K requantization."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize
from loading_builders import GGUF_QUANTIZABLE, quantized_tensor, random_blocks

from draftwise.runtime.loading.quant_repack import (
    DECODERS,
    GROUP_SIZE,
    _q6_k_integers,
    pack_bits,
    repack,
    requantize_q6_k,
)

Q = GGMLQuantizationType
EXACT_TYPES = sorted(DECODERS, key=lambda kind: kind.name)


def mlx_dequantize(weight: np.ndarray, scales: np.ndarray, biases: np.ndarray, bits: int):
    out = mx.dequantize(
        mx.array(weight), mx.array(scales), mx.array(biases), group_size=GROUP_SIZE, bits=bits
    )
    return np.array(out.astype(mx.float32))


def assert_same_values(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal bit for bit, except that 0.0 and -0.0 count as the same value."""
    assert actual.shape == expected.shape
    assert np.array_equal(actual, expected)
    differing_bits = actual.view(np.uint32) != expected.view(np.uint32)
    assert np.all(expected[differing_bits] == 0)


@pytest.mark.parametrize("ggml_type", EXACT_TYPES, ids=lambda kind: kind.name)
def test_repack_random_blocks_match_gguf(ggml_type: GGMLQuantizationType) -> None:
    raw = random_blocks(ggml_type, rows=12, columns=512, rng=np.random.default_rng(1))
    packed = repack(raw, ggml_type)

    assert packed.weight.dtype == np.uint32
    assert packed.weight.shape == (12, 512 * packed.bits // 32)
    assert packed.scales.shape == packed.biases.shape == (12, 512 // GROUP_SIZE)
    assert_same_values(
        mlx_dequantize(packed.weight, packed.scales, packed.biases, packed.bits),
        dequantize(raw, ggml_type),
    )


@pytest.mark.parametrize("ggml_type", GGUF_QUANTIZABLE, ids=lambda kind: kind.name)
def test_repack_gguf_quantized_values_match(ggml_type: GGMLQuantizationType) -> None:
    raw = quantized_tensor(ggml_type, rows=20, columns=96, rng=np.random.default_rng(2))
    packed = repack(raw, ggml_type)
    assert_same_values(
        mlx_dequantize(packed.weight, packed.scales, packed.biases, packed.bits),
        dequantize(raw, ggml_type),
    )


def test_repack_chunked_rows_match_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = random_blocks(Q.Q4_K, rows=37, columns=256, rng=np.random.default_rng(3))
    whole = repack(raw, Q.Q4_K)
    monkeypatch.setattr("draftwise.runtime.loading.quant_repack.CHUNK_ELEMENTS", 256 * 5)
    chunked = repack(raw, Q.Q4_K)
    assert np.array_equal(whole.weight, chunked.weight)
    assert np.array_equal(whole.scales, chunked.scales)
    assert np.array_equal(whole.biases, chunked.biases)


@pytest.mark.parametrize("bits", [4, 5, 8])
def test_pack_bits_matches_mlx_layout(bits: int) -> None:
    rng = np.random.default_rng(bits)
    q = rng.integers(0, 2**bits, size=(6, 128), dtype=np.uint8)
    ones = np.ones((6, 128 // GROUP_SIZE), dtype=np.float32)
    zeros = np.zeros_like(ones)
    unpacked = mlx_dequantize(pack_bits(q, bits), ones, zeros, bits)
    assert np.array_equal(unpacked, q.astype(np.float32))


def test_pack_bits_rejects_other_widths() -> None:
    with pytest.raises(ValueError, match="not 3"):
        pack_bits(np.zeros((1, 32), dtype=np.uint8), 3)


def test_repack_rejects_type_without_exact_layout() -> None:
    with pytest.raises(KeyError):
        repack(np.zeros((1, 210), dtype=np.uint8), Q.Q6_K)


def test_q6_k_integers_times_d_match_gguf() -> None:
    raw = random_blocks(Q.Q6_K, rows=5, columns=512, rng=np.random.default_rng(4))
    integers, d = _q6_k_integers(raw.reshape(5, 2, 210))
    values = np.repeat(d, 256, axis=1) * integers.astype(np.float32)
    assert_same_values(values, dequantize(raw, Q.Q6_K))


def test_requantize_q6_k_error_within_half_step() -> None:
    raw = random_blocks(Q.Q6_K, rows=16, columns=512, rng=np.random.default_rng(5))
    packed = requantize_q6_k(raw)
    expected = dequantize(raw, Q.Q6_K)
    actual = mlx_dequantize(packed.weight, packed.scales, packed.biases, 8)

    integers, d = _q6_k_integers(raw.reshape(16, 2, 210))
    groups = integers.reshape(16, -1, GROUP_SIZE)
    span = groups.max(axis=-1) - groups.min(axis=-1)
    step = np.maximum(1, -(-span // 255))
    bound = np.repeat(np.repeat(np.abs(d), 8, axis=1) * step / 2, GROUP_SIZE, axis=1)
    assert packed.bits == 8
    assert np.all(np.abs(actual - expected) <= bound * (1 + 1e-6))
    assert np.any(step > 1), "random scales should need steps above 1"


def test_requantize_q6_k_small_scales_are_exact() -> None:
    rng = np.random.default_rng(6)
    raw = random_blocks(Q.Q6_K, rows=8, columns=256, rng=rng).reshape(8, 1, 210)
    # Sub-block scales of at most 4 keep each group's span within 255 steps.
    raw[..., 192:208] = rng.integers(-4, 5, size=(8, 1, 16)).astype(np.int8).view(np.uint8)
    raw = raw.reshape(8, 210)
    packed = requantize_q6_k(raw)
    assert_same_values(
        mlx_dequantize(packed.weight, packed.scales, packed.biases, 8),
        dequantize(raw, Q.Q6_K),
    )

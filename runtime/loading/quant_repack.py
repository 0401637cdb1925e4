"""Repack GGUF quantized blocks into MLX's affine layout without loss.

MLX stores a quantized matrix as unsigned ``bits``-wide integers ``q``, packed
least-significant bit first into uint32 words, with one float32 ``scale`` and
``bias`` per group of 32 elements: ``w = scale * q + bias``. The GGUF block
formats below have exactly that form per 32 elements, so the integers are
copied and only the scale and bias are rewritten:

=========  ====  ===========================================  =================
type       bits  GGUF value                                   MLX scale, bias
=========  ====  ===========================================  =================
Q4_0       4     ``d * (q - 8)``                              ``d``, ``-8 d``
Q4_1       4     ``d * q + m``                                ``d``, ``m``
Q5_0       5     ``d * (q - 16)``                             ``d``, ``-16 d``
Q5_1       5     ``d * q + m``                                ``d``, ``m``
Q8_0       8     ``d * x`` with int8 ``x``, ``q = x + 128``   ``d``, ``-128 d``
Q4_K       4     ``d sc_j * q - dmin m_j`` per 32 elements    ``d sc_j``, ``-dmin m_j``
Q5_K       5     as Q4_K with a fifth bit                     ``d sc_j``, ``-dmin m_j``
=========  ====  ===========================================  =================

``d``, ``dmin`` and ``m`` are float16 and ``sc_j``, ``m_j`` 6-bit integers, so
``scale * q`` is exact in float32 and ``mx.dequantize`` reproduces
``gguf.quants.dequantize`` bit for bit (tests check every type).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

GROUP_SIZE = 32
# Rows are repacked in chunks of about this many elements to bound the
# temporary memory.
CHUNK_ELEMENTS = 1 << 22

# One decoder per type: raw blocks [rows, blocks, block_bytes] ->
# integers [rows, blocks * block_size] (uint8), scales and biases
# [rows, blocks * block_size / 32] (float32).
BlockDecoder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class PackedMatrix:
    """A matrix in MLX's affine layout as numpy arrays, ready for `mx.array`."""

    weight: np.ndarray  # [out, in * bits / 32] uint32
    scales: np.ndarray  # [out, in / 32] float32
    biases: np.ndarray  # [out, in / 32] float32
    bits: int


def _half(raw: np.ndarray) -> np.ndarray:
    """Read a float16 stored in the last axis (2 bytes) as float32."""
    return np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32)


def _nibbles_split(qs: np.ndarray) -> np.ndarray:
    """Q4_0/Q5_0 order: the low nibbles are elements 0..15, the high ones 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """Unpack 4 bytes of fifth bits, element ``i`` at bit ``i`` (little-endian)."""
    return np.unpackbits(qh, axis=-1, bitorder="little")


def _decode_q4_0(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = _half(blocks[..., 0:2])
    q = _nibbles_split(blocks[..., 2:18])
    return q.reshape(q.shape[0], -1), d, d * np.float32(-8)


def _decode_q4_1(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, m = _half(blocks[..., 0:2]), _half(blocks[..., 2:4])
    q = _nibbles_split(blocks[..., 4:20])
    return q.reshape(q.shape[0], -1), d, m


def _decode_q5_0(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = _half(blocks[..., 0:2])
    q = _nibbles_split(blocks[..., 6:22]) | (_high_bits(blocks[..., 2:6]) << 4)
    return q.reshape(q.shape[0], -1), d, d * np.float32(-16)


def _decode_q5_1(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, m = _half(blocks[..., 0:2]), _half(blocks[..., 2:4])
    q = _nibbles_split(blocks[..., 8:24]) | (_high_bits(blocks[..., 4:8]) << 4)
    return q.reshape(q.shape[0], -1), d, m


def _decode_q8_0(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = _half(blocks[..., 0:2])
    # int8 x + 128 as uint8 is x's bit pattern with the sign bit flipped.
    q = blocks[..., 2:34] ^ np.uint8(0x80)
    return q.reshape(q.shape[0], -1), d, d * np.float32(-128)


def _k_scales_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unpack the 12-byte field of 8 six-bit scales and 8 six-bit mins (Q4_K, Q5_K).

    Bytes 0-3 contain scales 0-3 in their low 6 bits, and bytes 4-7 mins 0-3.
    Bytes 8-11 contain the low 4 bits of scales 4-7 (low nibble) and mins 4-7
    (high nibble). Their top 2 bits are the top bits of bytes 0-3 and 4-7.
    """
    low_scales, low_mins, mixed = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    scales = np.concatenate(
        [low_scales & 0x3F, (mixed & 0x0F) | ((low_scales >> 2) & 0x30)], axis=-1
    )
    mins = np.concatenate([low_mins & 0x3F, (mixed >> 4) | ((low_mins >> 2) & 0x30)], axis=-1)
    return scales.astype(np.float32), mins.astype(np.float32)


def _k_low_nibbles(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K order: each 32-byte run holds sub-block 2c (low) and 2c+1 (high)."""
    runs = qs.reshape(*qs.shape[:-1], 4, 1, 32)
    return np.concatenate([runs & 0x0F, runs >> 4], axis=-2).reshape(*qs.shape[:-1], 256)


def _k_scale_bias(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d, dmin = _half(blocks[..., 0:2]), _half(blocks[..., 2:4])
    sub_scales, sub_mins = _k_scales_mins(blocks[..., 4:16])
    scales = d[..., None] * sub_scales
    biases = -(dmin[..., None] * sub_mins)
    rows = blocks.shape[0]
    return scales.reshape(rows, -1), biases.reshape(rows, -1)


def _decode_q4_k(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scales, biases = _k_scale_bias(blocks)
    q = _k_low_nibbles(blocks[..., 16:144])
    return q.reshape(q.shape[0], -1), scales, biases


def _decode_q5_k(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scales, biases = _k_scale_bias(blocks)
    # Byte i of qh holds the fifth bit of element i of sub-block j at bit j.
    qh = blocks[..., 16:48]
    high = (qh[..., None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1
    q = _k_low_nibbles(blocks[..., 48:176]) | (high.reshape(*qh.shape[:-1], 256) << 4)
    return q.reshape(q.shape[0], -1), scales, biases


DECODERS: dict[GGMLQuantizationType, tuple[int, BlockDecoder]] = {
    GGMLQuantizationType.Q4_0: (4, _decode_q4_0),
    GGMLQuantizationType.Q4_1: (4, _decode_q4_1),
    GGMLQuantizationType.Q5_0: (5, _decode_q5_0),
    GGMLQuantizationType.Q5_1: (5, _decode_q5_1),
    GGMLQuantizationType.Q8_0: (8, _decode_q8_0),
    GGMLQuantizationType.Q4_K: (4, _decode_q4_k),
    GGMLQuantizationType.Q5_K: (5, _decode_q5_k),
}


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned ``bits``-wide integers [rows, n] into uint32 [rows, n * bits / 32].

    Element ``k`` occupies bits ``k * bits`` to ``k * bits + bits - 1`` of the
    little-endian bit stream, which is the order `mx.quantize` writes. Only
    uint8 arithmetic is used, which is several times faster than shifting
    wider integers.
    """
    rows = q.shape[0]
    if bits == 8:
        stream = q
    elif bits == 4:
        stream = q[:, 0::2] | (q[:, 1::2] << 4)
    elif bits == 5:
        # Eight 5-bit values fill five bytes.
        v = [q[:, k::8] for k in range(8)]
        stream = np.stack(
            [
                v[0] | (v[1] << 5),
                (v[1] >> 3) | (v[2] << 2) | (v[3] << 7),
                (v[3] >> 1) | (v[4] << 4),
                (v[4] >> 4) | (v[5] << 1) | (v[6] << 6),
                (v[6] >> 2) | (v[7] << 3),
            ],
            axis=-1,
        )
    else:
        raise ValueError(f"pack_bits supports 4, 5 and 8 bits, not {bits}")
    return np.ascontiguousarray(stream, dtype=np.uint8).reshape(rows, -1).view(np.uint32)


def repack(raw: np.ndarray, ggml_type: GGMLQuantizationType) -> PackedMatrix:
    """Repack a quantized GGUF matrix (raw bytes [out, row_bytes]) into MLX's layout.

    Raises KeyError when ``ggml_type`` has no exact MLX equivalent (see DECODERS).
    """
    bits, decode = DECODERS[ggml_type]
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    rows, row_bytes = raw.shape
    columns = row_bytes // type_size * block_size
    weight = np.empty((rows, columns * bits // 32), dtype=np.uint32)
    scales = np.empty((rows, columns // GROUP_SIZE), dtype=np.float32)
    biases = np.empty_like(scales)
    step = max(1, CHUNK_ELEMENTS // columns)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        blocks = np.asarray(raw[start:stop]).reshape(stop - start, -1, type_size)
        q, chunk_scales, chunk_biases = decode(blocks)
        weight[start:stop] = pack_bits(q, bits)
        scales[start:stop] = chunk_scales
        biases[start:stop] = chunk_biases
    return PackedMatrix(weight, scales, biases, bits)


def _q6_k_integers(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode Q6_K blocks [rows, blocks, 210] into ``d`` and integers ``sc * (q - 32)``.

    A block is 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16
    int8 sub-block scales and a float16 ``d``. Element ``i`` of sub-block
    ``j`` is ``d * sc_j * (q - 32)``. Returns int16 [rows, blocks * 256] and
    float32 ``d`` [rows, blocks].
    """
    rows, count = blocks.shape[:2]
    low_bytes = blocks[..., 0:128].reshape(rows, count, 2, 1, 64)
    high_bytes = blocks[..., 128:192].reshape(rows, count, 2, 1, 32)
    # Per 128-element half: low nibbles give elements 0-63, high nibbles
    # 64-127; bit pairs 0-1, 2-3, 4-5, 6-7 give the top bits of each 32.
    low = np.concatenate([low_bytes & 0x0F, low_bytes >> 4], axis=-2).reshape(rows, count, 2, 4, 32)
    high = (high_bytes >> np.array([0, 2, 4, 6], dtype=np.uint8)[:, None]) & 0x03
    # |sc * (q - 32)| <= 128 * 32, so every product fits in int16.
    q = (low | (high << 4)).reshape(rows, count, 16, 16).astype(np.int16) - np.int16(32)
    sub_scales = blocks[..., 192:208].view(np.int8).astype(np.int16)
    integers = (q * sub_scales[..., None]).reshape(rows, count * 256)
    return integers, _half(blocks[..., 208:210])


def requantize_q6_k(raw: np.ndarray) -> PackedMatrix:
    """Requantize a Q6_K matrix (raw bytes [out, row_bytes]) to 8 bits, groups of 32.

    Each 32-element group contains values ``d * a`` with integers ``a`` spanning
    ``hi - lo``. With ``step = max(1, ceil((hi - lo) / 255))`` the group
    stores ``round((a - lo) / step)`` with scale ``d * step`` and bias
    ``d * lo``, all exact in float32. The error is at most ``d * step / 2``
    per element and zero in groups whose span fits 255 steps of ``d``.
    """
    block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType.Q6_K]
    rows, row_bytes = raw.shape
    columns = row_bytes // type_size * block_size
    groups = columns // GROUP_SIZE
    weight = np.empty((rows, columns // 4), dtype=np.uint32)
    scales = np.empty((rows, groups), dtype=np.float32)
    biases = np.empty_like(scales)
    step_rows = max(1, CHUNK_ELEMENTS // columns)
    for start in range(0, rows, step_rows):
        stop = min(rows, start + step_rows)
        blocks = np.asarray(raw[start:stop]).reshape(stop - start, -1, type_size)
        integers, d = _q6_k_integers(blocks)
        grouped = integers.reshape(stop - start, groups, GROUP_SIZE)
        lowest = grouped.min(axis=-1)
        step = np.maximum(1, -(-(grouped.max(axis=-1) - lowest) // 255)).astype(np.float32)
        # Round half up: floor((2 * offset + step) / (2 * step)). The operands
        # are integers below 2**15, so the correctly rounded float32 quotient
        # never crosses an integer and the floor is exact.
        offsets = (grouped - lowest[..., None]).astype(np.float32)
        q = np.floor((2 * offsets + step[..., None]) / (2 * step[..., None]))
        weight[start:stop] = pack_bits(q.reshape(stop - start, columns).astype(np.uint8), 8)
        group_d = np.repeat(d, block_size // GROUP_SIZE, axis=1)
        scales[start:stop] = group_d * step
        biases[start:stop] = group_d * lowest.astype(np.float32)
    return PackedMatrix(weight, scales, biases, 8)

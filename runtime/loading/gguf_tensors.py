"""Convert GGUF tensors into MLX weights under a precision policy.

Policies:

- ``"exact"``: types with an exact MLX layout (see `quant_repack`) are
  repacked without loss, with float32 group scales and biases; Q6_K, whose
  16-element sub-blocks fit no MLX group size (32, 64, 128), is requantized
  to 8 bits with groups of 32 (`quant_repack.requantize_q6_k`).
- ``"auto"``: as ``"exact"``, but a matrix's group scales and biases are
  stored as float16 when they fit (see `half_groups`). `gguf_loader` asks
  for this layout only where the kernel reads float16 groups itself. A
  one-row matmul reads every weight once and is bound by memory bandwidth.
  At 4 bits, float32 groups of 32 add 0.25 bytes to the 0.5 of each
  weight, and float16 halves that. Rounding a scale to float16 moves it by
  at most 2**-12 of itself. Q4_0, Q4_1, Q5_0 and Q8_0 scales are float16 in
  the file and stay exact.
- ``"float32"``: as ``"exact"``, but Q6_K is dequantized to float32.
- ``"float32-all"``: every tensor is dequantized to float32 with
  `gguf.quants.dequantize`, an independent reference for accuracy checks.

F32, F16 and BF16 tensors always become float32 arrays. Quantized embedding
tables stay quantized like every other matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeAlias

import mlx.core as mx
import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from draftwise.runtime.errors import ModelFormatError
from draftwise.runtime.loading.gguf_file import GGUFFile, GGUFTensorInfo
from draftwise.runtime.loading.quant_repack import (
    CHUNK_ELEMENTS,
    DECODERS,
    GROUP_SIZE,
    PackedMatrix,
    repack,
    requantize_q6_k,
)
from draftwise.runtime.weights import QuantizedTensor

Policy = Literal["auto", "exact", "float32", "float32-all"]
POLICIES: tuple[str, ...] = ("auto", "exact", "float32", "float32-all")

# float16's smallest normal magnitude. Smaller scales would lose relative
# precision as subnormals, so a matrix with one keeps float32 groups.
HALF_MIN_NORMAL = 2.0**-14
HALF_MAX = 65504.0

FLOAT_TYPES = frozenset(
    {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}
)
# Types without an exact MLX layout that are still loaded, and their
# requantization under the "auto" policy.
REQUANTIZED_TYPES: dict[GGMLQuantizationType, Callable[[np.ndarray], PackedMatrix]] = {
    GGMLQuantizationType.Q6_K: requantize_q6_k
}
SUPPORTED_TYPES = FLOAT_TYPES | frozenset(DECODERS) | frozenset(REQUANTIZED_TYPES)

Weight: TypeAlias = mx.array | QuantizedTensor


def check_policy(policy: str) -> Policy:
    """Return ``policy`` if it names a policy, else raise ValueError naming the choices."""
    if policy not in POLICIES:
        raise ValueError(f"unknown weight policy {policy!r}; choose one of {', '.join(POLICIES)}")
    return policy  # type: ignore[return-value]


def convert_tensor(source: GGUFFile, info: GGUFTensorInfo, policy: Policy) -> Weight:
    """Return one tensor as a float32 array or a QuantizedTensor, per ``policy``.

    Raises `ModelFormatError` naming the tensor, its type and the file when
    the type is not supported or a quantized tensor is not a matrix.
    """
    _check_supported(source.path, info)
    raw = source.tensor_data(info)
    if info.ggml_type in FLOAT_TYPES:
        return mx.array(_float32(raw, info.ggml_type).reshape(info.shape))

    if len(info.shape) != 2:
        raise ModelFormatError(
            f"tensor '{info.name}' in '{source.path}' is a {info.ggml_type.name} tensor of "
            f"shape {list(info.shape)}; draftwise loads quantized tensors only as matrices"
        )
    if policy == "float32-all":
        return _dequantized(raw, info)
    if info.ggml_type in DECODERS:
        return _quantized(repack(raw, info.ggml_type), info, policy)
    if policy == "float32":
        return _dequantized(raw, info)
    return _quantized(REQUANTIZED_TYPES[info.ggml_type](raw), info, policy)


def _quantized(packed: PackedMatrix, info: GGUFTensorInfo, policy: Policy) -> QuantizedTensor:
    scales, biases = packed.scales, packed.biases
    if policy == "auto":
        scales, biases = half_groups(scales, biases)
    return QuantizedTensor(
        weight=mx.array(packed.weight),
        scales=mx.array(scales),
        biases=mx.array(biases),
        bits=packed.bits,
        group_size=GROUP_SIZE,
        shape=(info.shape[0], info.shape[1]),
    )


def half_groups(scales: np.ndarray, biases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return float16 copies of float32 group scales and biases, or the originals.

    float16 is used when every value is finite and at most HALF_MAX in
    magnitude, and every nonzero scale is at least HALF_MIN_NORMAL (so
    each rounds by at most 2**-12 of itself). Biases may be subnormal: their
    rounding error, at most 2**-25, is far below a quantization step.
    """
    magnitudes = np.abs(scales)
    nonzero = magnitudes[magnitudes > 0]
    fits = (
        bool(np.all(np.isfinite(scales)))
        and bool(np.all(np.isfinite(biases)))
        and float(magnitudes.max(initial=0.0)) <= HALF_MAX
        and float(np.abs(biases).max(initial=0.0)) <= HALF_MAX
        and float(nonzero.min(initial=HALF_MIN_NORMAL)) >= HALF_MIN_NORMAL
    )
    if not fits:
        return scales, biases
    return scales.astype(np.float16), biases.astype(np.float16)


def _check_supported(path: Path, info: GGUFTensorInfo) -> None:
    if info.ggml_type in SUPPORTED_TYPES:
        return
    supported = ", ".join(sorted(kind.name for kind in SUPPORTED_TYPES))
    raise ModelFormatError(
        f"tensor '{info.name}' in '{path}' has type {info.ggml_type.name}, which draftwise "
        f"does not load (supported: {supported}); use a GGUF quantized as Q4_K_M, Q5_K_M, "
        "Q8_0 or F16"
    )


def _float32(raw: np.ndarray, ggml_type: GGMLQuantizationType) -> np.ndarray:
    flat = np.ascontiguousarray(raw)
    if ggml_type == GGMLQuantizationType.F32:
        return flat.view(np.float32).copy()
    if ggml_type == GGMLQuantizationType.F16:
        return flat.view(np.float16).astype(np.float32)
    # bfloat16 is the upper half of a float32.
    return (flat.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def _row_chunks(info: GGUFTensorInfo) -> range:
    rows, columns = info.shape
    return range(0, rows, max(1, CHUNK_ELEMENTS // columns))


def _dequantized(raw: np.ndarray, info: GGUFTensorInfo) -> mx.array:
    rows, columns = info.shape
    out = np.empty((rows, columns), dtype=np.float32)
    step = _row_chunks(info).step
    for start in _row_chunks(info):
        chunk = np.asarray(raw[start : start + step])
        out[start : start + step] = dequantize(chunk, info.ggml_type)
    return mx.array(out)

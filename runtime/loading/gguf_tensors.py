"""Convert GGUF tensors into MLX weights under a precision policy.

Policies:

- ``"auto"``: types with an exact MLX layout (see `quant_repack`) are repacked
  without loss; Q6_K, whose 16-element sub-blocks fit no MLX group size
  (32, 64, 128), is requantized to 8 bits with groups of 32
  (`quant_repack.requantize_q6_k`).
- ``"float32"``: as ``"auto"``, but Q6_K is dequantized to float32.
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

Policy = Literal["auto", "float32", "float32-all"]
POLICIES: tuple[str, ...] = ("auto", "float32", "float32-all")

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
        return _quantized(repack(raw, info.ggml_type), info)
    if policy == "float32":
        return _dequantized(raw, info)
    return _quantized(REQUANTIZED_TYPES[info.ggml_type](raw), info)


def _quantized(packed: PackedMatrix, info: GGUFTensorInfo) -> QuantizedTensor:
    return QuantizedTensor(
        weight=mx.array(packed.weight),
        scales=mx.array(packed.scales),
        biases=mx.array(packed.biases),
        bits=packed.bits,
        group_size=GROUP_SIZE,
        shape=(info.shape[0], info.shape[1]),
    )


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

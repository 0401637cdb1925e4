"""Save and load an MTP drafter's own weights as one safetensors file.

Matrices are stored 8-bit affine-quantized (``NAME.q``, ``NAME.scales``,
``NAME.biases``) or float16; vectors float16; the candidate token ids int32.
The configuration travels in the file's metadata. Loading keeps quantized
matrices quantized, for the verify kernel's matrix-vector products (about
three times faster than float32 on one row), or dequantizes them for
training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx

from draftwise.runtime.drafters.mtp import MTPWeights
from draftwise.runtime.drafters.mtp_config import MTPConfig
from draftwise.runtime.drafters.mtp_model import parameter_shapes
from draftwise.runtime.weights import QuantizedTensor

FORMAT = "draftwise-mtp-1"
GROUP_SIZE = 64


def save_mtp(weights: MTPWeights, path: Path, bits: int | None = 8) -> None:
    """Write ``weights`` to ``path``; ``bits`` None keeps matrices float16."""
    arrays: dict[str, mx.array] = {"candidate_ids": weights.candidate_ids.astype(mx.int32)}
    for name, value in weights.params.items():
        quantizable = value.ndim == 2 and value.shape[1] % GROUP_SIZE == 0
        if bits is not None and quantizable:
            q, scales, biases = mx.quantize(
                value.astype(mx.float32), group_size=GROUP_SIZE, bits=bits
            )
            arrays[name + ".q"] = q
            arrays[name + ".scales"] = scales.astype(mx.float16)
            arrays[name + ".biases"] = biases.astype(mx.float16)
        else:
            arrays[name] = value.astype(mx.float16)
    metadata = {
        "format": FORMAT,
        "config": json.dumps(weights.config.to_json()),
        "bits": str(bits or 16),
        "group_size": str(GROUP_SIZE),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(path), arrays, metadata=metadata)


def load_mtp(path: Path, *, quantized: bool = True) -> MTPWeights:
    """Read a drafter written by `save_mtp`; raise ValueError naming what is wrong.

    ``quantized`` keeps 8-bit matrices as `QuantizedTensor`; otherwise every
    tensor becomes float32.
    """
    if not Path(path).is_file():
        raise ValueError(
            f"MTP drafter file {path} does not exist; train one with draftwise train-drafter"
        )
    loaded = mx.load(str(path), return_metadata=True)
    if not isinstance(loaded, tuple):
        raise ValueError(f"{path} is not a safetensors file; pass an MTP drafter file")
    arrays, metadata = loaded
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not an MTP drafter file (format {metadata.get('format')!r})")
    config = MTPConfig.from_json(json.loads(_metadata_text(metadata, "config", path)))
    bits = int(_metadata_text(metadata, "bits", path))
    group_size = int(_metadata_text(metadata, "group_size", path))
    params: dict[str, mx.array | QuantizedTensor] = {}
    for name, shape in parameter_shapes(config).items():
        if name + ".q" in arrays:
            if len(shape) != 2:
                raise ValueError(
                    f"{path}: tensor {name} is stored quantized but has shape {shape}; "
                    "only matrices are quantized, so the file is damaged"
                )
            matrix_shape = (shape[0], shape[1])
            packed = arrays[name + ".q"]
            scales = arrays[name + ".scales"].astype(mx.float32)
            biases = arrays[name + ".biases"].astype(mx.float32)
            packed_shape = (shape[0], shape[1] * bits // 32)
            if tuple(packed.shape) != packed_shape:
                raise ValueError(
                    f"{path}: tensor {name}.q has shape {tuple(packed.shape)}, "
                    f"expected {packed_shape}; the file is damaged"
                )
            if quantized:
                params[name] = QuantizedTensor(
                    packed, scales, biases, bits, group_size, matrix_shape
                )
                continue
            value = mx.dequantize(packed, scales, biases, group_size=group_size, bits=bits)
        elif name in arrays:
            value = arrays[name].astype(mx.float32)
        else:
            raise ValueError(f"{path} lacks tensor {name}; the file is incomplete")
        if tuple(value.shape) != shape:
            raise ValueError(
                f"{path}: tensor {name} has shape {tuple(value.shape)}, expected {shape}"
            )
        params[name] = value
    mx.eval([a for v in params.values() for a in _arrays_of(v)])
    return MTPWeights(config, params, arrays["candidate_ids"].astype(mx.int32))


def _metadata_text(metadata: dict[str, Any], key: str, path: Path) -> str:
    value = metadata.get(key)
    if not isinstance(value, str):
        raise ValueError(
            f"{path}: metadata field {key!r} is {value!r}, expected a string; "
            "the file is damaged, so save the drafter again"
        )
    return value


def _arrays_of(value: mx.array | QuantizedTensor) -> list[mx.array]:
    if isinstance(value, QuantizedTensor):
        return [value.weight, value.scales, value.biases]
    return [value]

"""Save and load an MTP drafter's own weights as one safetensors file.

Matrices are stored 8-bit affine-quantized (``NAME.q``, ``NAME.scales``,
``NAME.biases``) or float16; vectors float16; the candidate token ids int32.
The configuration travels in the file's metadata. Loading dequantizes to
float32: the drafter is small, and its matrices then multiply with no
kernel of their own.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx

from draftwise.runtime.drafters.mtp import MTPWeights
from draftwise.runtime.drafters.mtp_config import MTPConfig
from draftwise.runtime.drafters.mtp_model import parameter_shapes

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


def load_mtp(path: Path) -> MTPWeights:
    """Read a drafter written by `save_mtp`; raise ValueError naming what is wrong."""
    if not Path(path).is_file():
        raise ValueError(
            f"MTP drafter file {path} does not exist; train one with draftwise train-drafter"
        )
    arrays, metadata = mx.load(str(path), return_metadata=True)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not an MTP drafter file (format {metadata.get('format')!r})")
    config = MTPConfig.from_json(json.loads(metadata["config"]))
    bits = int(metadata["bits"])
    group_size = int(metadata["group_size"])
    params = {}
    for name, shape in parameter_shapes(config).items():
        if name + ".q" in arrays:
            value = mx.dequantize(
                arrays[name + ".q"],
                arrays[name + ".scales"].astype(mx.float32),
                arrays[name + ".biases"].astype(mx.float32),
                group_size=group_size,
                bits=bits,
            )
        elif name in arrays:
            value = arrays[name].astype(mx.float32)
        else:
            raise ValueError(f"{path} lacks tensor {name}; the file is incomplete")
        if tuple(value.shape) != shape:
            raise ValueError(
                f"{path}: tensor {name} has shape {tuple(value.shape)}, expected {shape}"
            )
        params[name] = value
    mx.eval(list(params.values()))
    return MTPWeights(config, params, arrays["candidate_ids"].astype(mx.int32))

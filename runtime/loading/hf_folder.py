"""Load a Hugging Face or MLX safetensors folder into the same form as a GGUF file.

A folder contains ``config.json``, one or more ``*.safetensors`` files and
usually ``tokenizer.json``, ``tokenizer_config.json`` and
``generation_config.json``. Tensor names are mapped to GGUF names and values
are rewritten the way llama.cpp's converter writes them, so a model module
cannot tell the sources apart:

- Gemma RMSNorm weights ``w`` (applied as ``1 + w`` by Hugging Face) are
  stored as ``1 + w``.
- Llama query/key rows are permuted so that rotary embedding rotates
  adjacent pairs (``config["rope_traditional"]``).
- MLX-quantized matrices (``.weight`` uint32 with ``.scales`` and
  ``.biases``) become QuantizedTensor with float32 scales and biases; float
  tensors become float32.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from draftwise.runtime.errors import ModelFormatError, ModelNotFoundError
from draftwise.runtime.loading.converted_cache import default_cache_dir, file_sha256
from draftwise.runtime.loading.hf_config import hf_metadata, read_json
from draftwise.runtime.loading.loaded_model import LoadedModel
from draftwise.runtime.loading.model_config import config_from_metadata
from draftwise.runtime.weights import QuantizedTensor, WeightDict

_LAYER_NAMES: dict[str, str] = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
}
# The norm after attention feeds the MLP in Qwen2/Llama; Gemma 3 has
# separate norms after attention, before the MLP and after it.
_POST_ATTENTION = {"gemma3": "post_attention_norm", "llama": "ffn_norm", "qwen2": "ffn_norm"}
_GEMMA_EXTRA = {
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
_GLOBAL_NAMES = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}
# Tensors of multimodal checkpoints and buffers a text model does not use.
_SKIPPED = re.compile(r"(^|\.)(vision_tower|multi_modal_projector|rotary_emb)\.")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_QUANTIZED_PARTS = ("weight", "scales", "biases")


def gguf_tensor_name(hf_name: str, architecture: str) -> str | None:
    """Return the GGUF name of a Hugging Face tensor, or None for one to skip.

    ``hf_name`` is a module path plus ``.weight``/``.bias`` (or ``.scales``/
    ``.biases`` of an MLX-quantized module), with any ``language_model.``
    prefix already removed.
    """
    module, _, suffix = hf_name.rpartition(".")
    if module in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[module]}.{suffix}"
    match = _LAYER.match(module)
    if match is None:
        return None
    layer, local = match.groups()
    names = {**_LAYER_NAMES, "post_attention_layernorm": _POST_ATTENTION[architecture]}
    if architecture == "gemma3":
        names.update(_GEMMA_EXTRA)
    if local not in names:
        return None
    return f"blk.{layer}.{names[local]}.{suffix}"


def load_safetensors_folder(
    path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
) -> LoadedModel:
    """Load a safetensors model folder as a LoadedModel with GGUF names and conventions.

    ``cache_dir`` contains the memo of file digests (see `converted_cache`).
    Raises `ModelNotFoundError` for a missing folder, `UnsupportedArchitectureError`
    for an unknown ``model_type`` and `ModelFormatError` for a folder without
    config.json or weights, or with a tensor that has no GGUF name.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelNotFoundError(f"model folder '{folder}' does not exist or is not a folder")
    config_json = read_json(folder / "config.json", required=True)
    weight_files = sorted(folder.glob("*.safetensors"))
    if not weight_files:
        raise ModelFormatError(
            f"model folder '{folder}' has no *.safetensors files; download the weights again"
        )
    metadata = hf_metadata(folder, config_json)
    architecture = str(metadata["general.architecture"])
    weights = _load_weights(folder, weight_files, architecture, config_json)
    if architecture == "llama":
        _permute_query_key_rows(weights, metadata)
    shapes = {name: _shape(value) for name, value in weights.items()}
    config = config_from_metadata(metadata, shapes, folder)
    text_config = config_json.get("text_config", config_json)
    if "query_pre_attn_scalar" in text_config:
        config["query_pre_attn_scalar"] = float(text_config["query_pre_attn_scalar"])

    tokenizer_path = folder / "tokenizer.json"
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return LoadedModel(
        architecture=architecture,
        metadata=metadata,
        config=config,
        weights=weights,
        source_sha256=_folder_digest(folder, cache),
        path=folder,
        policy="auto",
        tokenizer_json=tokenizer_path.read_text("utf-8") if tokenizer_path.exists() else None,
    )


def _load_weights(
    folder: Path, files: list[Path], architecture: str, config_json: dict[str, Any]
) -> WeightDict:
    arrays: dict[str, mx.array] = {}
    for file in files:
        try:
            loaded = mx.load(str(file))
        except (RuntimeError, ValueError, OSError) as error:
            raise ModelFormatError(
                f"weights file '{file}' could not be read ({error}); download it again"
            ) from error
        assert isinstance(loaded, dict)
        for hf_name, array in loaded.items():
            arrays[_text_model_name(hf_name)] = array

    weights: WeightDict = {}
    for hf_name, array in arrays.items():
        module, _, part = hf_name.rpartition(".")
        if _SKIPPED.search(hf_name) or part in ("scales", "biases"):
            continue
        gguf_name = gguf_tensor_name(hf_name, architecture)
        if gguf_name is None:
            raise ModelFormatError(
                f"tensor '{hf_name}' in '{folder}' has no GGUF equivalent for architecture "
                f"'{architecture}'; the folder holds a different model than config.json says"
            )
        if module + ".scales" in arrays:
            weights[gguf_name] = _quantized(module, arrays, config_json, folder)
        else:
            weights[gguf_name] = array.astype(mx.float32)
        if architecture == "gemma3" and gguf_name.endswith("norm.weight"):
            weights[gguf_name] = array.astype(mx.float32) + 1.0
    return weights


def _text_model_name(hf_name: str) -> str:
    """Drop the text-model prefix of multimodal checkpoints."""
    if hf_name.startswith("model.language_model."):
        return "model." + hf_name.removeprefix("model.language_model.")
    return hf_name.removeprefix("language_model.")


def _quantized(
    module: str, arrays: dict[str, mx.array], config_json: dict[str, Any], folder: Path
) -> QuantizedTensor:
    settings = config_json.get("quantization") or config_json.get("quantization_config") or {}
    # mlx-lm may override the bits or group size of single modules.
    specific = settings.get(module) or settings.get("language_model." + module)
    if isinstance(specific, dict):
        settings = {**settings, **specific}
    if settings.get("mode", "affine") != "affine" or "bits" not in settings:
        raise ModelFormatError(
            f"module '{module}' in '{folder}' is quantized as {settings or 'unknown'}; "
            "draftwise reads MLX affine quantization (bits, group_size) only"
        )
    weight, scales, biases = (arrays[f"{module}.{part}"] for part in _QUANTIZED_PARTS)
    bits, group_size = int(settings["bits"]), int(settings.get("group_size", 64))
    return QuantizedTensor(
        weight=weight,
        scales=scales.astype(mx.float32),
        biases=biases.astype(mx.float32),
        bits=bits,
        group_size=group_size,
        shape=(int(weight.shape[0]), int(weight.shape[1]) * 32 // bits),
    )


def _shape(value: mx.array | QuantizedTensor) -> tuple[int, ...]:
    return value.shape if isinstance(value, QuantizedTensor) else tuple(value.shape)


def llama_rope_row_order(num_rows: int, num_heads: int) -> np.ndarray:
    """Return the row order that turns Hugging Face query/key rows into GGUF order.

    Within each head, Hugging Face rotates element ``j`` with ``j + d/2``;
    llama.cpp's Llama converter interleaves the halves so that pairs are
    adjacent: GGUF row ``2 j + i`` is Hugging Face row ``i * d/2 + j``.
    """
    half = num_rows // num_heads // 2
    return np.arange(num_rows).reshape(num_heads, 2, half).transpose(0, 2, 1).reshape(-1)


def _permute_query_key_rows(weights: WeightDict, metadata: dict[str, Any]) -> None:
    num_heads = int(metadata["llama.attention.head_count"])
    num_kv_heads = int(metadata.get("llama.attention.head_count_kv", num_heads))
    for name in list(weights):
        if ".attn_q." in name:
            heads = num_heads
        elif ".attn_k." in name:
            heads = num_kv_heads
        else:
            continue
        value = weights[name]
        rows = value.shape[0]
        order = mx.array(llama_rope_row_order(rows, heads))
        if isinstance(value, QuantizedTensor):
            weights[name] = QuantizedTensor(
                weight=value.weight[order],
                scales=value.scales[order],
                biases=value.biases[order],
                bits=value.bits,
                group_size=value.group_size,
                shape=value.shape,
            )
        else:
            weights[name] = value[order]


def _folder_digest(folder: Path, cache: Path) -> str:
    """Return sha256 over the sorted lines ``<file name> <file sha256>`` of the folder."""
    digest = hashlib.sha256()
    for file in sorted(item for item in folder.iterdir() if item.is_file()):
        digest.update(f"{file.name} {file_sha256(file, cache)}\n".encode())
    return digest.hexdigest()

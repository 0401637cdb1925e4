"""Model hyper-parameters in neutral names, read from GGUF-style metadata keys.

Keys of the returned dict (always present unless marked optional):

- ``architecture``, ``vocab_size`` (rows of ``token_embd.weight``),
  ``hidden_size``, ``num_layers``, ``num_heads``, ``num_kv_heads``,
  ``head_dim`` (query/key width), ``value_head_dim``, ``intermediate_size``
- ``rms_norm_eps``, ``context_length``
- ``rope_theta``, ``rope_dim`` (rotated dimensions per head),
  ``rope_traditional`` (True: rotate adjacent pairs, as llama.cpp's converter
  arranges Llama query/key rows; False: rotate halves),
  ``rope_scaling`` (None or ``{"type", "factor", "original_context_length"}``)
- ``tied_embeddings`` (no ``output.weight``: the output head reuses
  ``token_embd.weight``), ``attention_bias`` (query/key/value biases present),
  ``qk_norm`` (per-head query/key RMSNorm present)
- ``hidden_activation``: ``"silu"`` or ``"gelu_tanh"``
- ``sliding_window`` (0: none), ``global_layers`` (layers that attend over the
  whole context when a window is set), ``rope_theta_local`` (rope base of the
  windowed layers)
- ``embedding_scale`` (multiplier of the embedded tokens),
  ``query_pre_attn_scalar`` (attention scores are scaled by its inverse square
  root), ``final_logit_softcapping`` and ``attn_logit_softcapping`` (None: off)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from draftwise.runtime.errors import ModelFormatError, UnsupportedArchitectureError

SUPPORTED_ARCHITECTURES = ("gemma3", "llama", "qwen2")

# Gemma 3 makes every sixth layer global and rotates the windowed layers with
# base 10,000. llama.cpp hard-codes both for gemma3 GGUF files, which store
# neither (Hugging Face: sliding_window_pattern=6, rope_local_base_freq=10000).
GEMMA3_GLOBAL_LAYER_PERIOD = 6
GEMMA3_LOCAL_ROPE_THETA = 10000.0
# Gemma 3 27B scales queries by hidden_size / num_heads instead of head_dim
# (query_pre_attn_scalar=168); llama.cpp recognizes it by its 62 layers.
GEMMA3_27B_LAYERS = 62

_REPAIR = (
    "the file is incomplete or was written by an unsupported converter; "
    "re-run `draftwise pull` for this model or download it again"
)


def check_architecture(architecture: object, path: Path) -> str:
    """Return ``architecture`` if draftwise implements it, else raise naming the choices."""
    if architecture in SUPPORTED_ARCHITECTURES:
        return str(architecture)
    raise UnsupportedArchitectureError(
        f"model '{path}' has architecture '{architecture}', which draftwise does not implement "
        f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)}); pick a model of a supported family"
    )


def config_from_metadata(
    metadata: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], path: Path
) -> dict[str, Any]:
    """Return the neutral config of a model from its metadata and its tensor shapes.

    Raises `UnsupportedArchitectureError` for an unknown architecture and
    `ModelFormatError` naming the key when a required hyper-parameter is
    absent or not a number.
    """
    architecture = check_architecture(metadata.get("general.architecture"), path)
    try:
        return _config(architecture, metadata, shapes, path)
    except (TypeError, ValueError) as error:
        raise ModelFormatError(
            f"model '{path}' has an invalid hyper-parameter in its metadata ({error}); {_REPAIR}"
        ) from error


def _config(
    architecture: str,
    metadata: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    path: Path,
) -> dict[str, Any]:
    prefix = architecture + "."

    def required(key: str) -> Any:
        if prefix + key not in metadata:
            raise ModelFormatError(
                f"model '{path}' is missing the metadata key '{prefix + key}'; {_REPAIR}"
            )
        return metadata[prefix + key]

    hidden_size = int(required("embedding_length"))
    num_heads = int(required("attention.head_count"))
    head_dim = int(metadata.get(prefix + "attention.key_length", hidden_size // num_heads))
    if "token_embd.weight" not in shapes:
        raise ModelFormatError(f"model '{path}' has no token_embd.weight tensor; {_REPAIR}")
    config: dict[str, Any] = {
        "architecture": architecture,
        "vocab_size": int(shapes["token_embd.weight"][0]),
        "hidden_size": hidden_size,
        "num_layers": int(required("block_count")),
        "num_heads": num_heads,
        "num_kv_heads": int(metadata.get(prefix + "attention.head_count_kv", num_heads)),
        "head_dim": head_dim,
        "value_head_dim": int(metadata.get(prefix + "attention.value_length", head_dim)),
        "intermediate_size": int(required("feed_forward_length")),
        "rms_norm_eps": float(metadata.get(prefix + "attention.layer_norm_rms_epsilon", 1e-6)),
        "context_length": int(metadata.get(prefix + "context_length", 4096)),
        "rope_theta": float(metadata.get(prefix + "rope.freq_base", 10000.0)),
        "rope_dim": int(metadata.get(prefix + "rope.dimension_count", head_dim)),
        "rope_traditional": architecture == "llama",
        "rope_scaling": _rope_scaling(metadata, prefix),
        "tied_embeddings": "output.weight" not in shapes,
        "attention_bias": "blk.0.attn_q.bias" in shapes,
        "qk_norm": "blk.0.attn_q_norm.weight" in shapes,
        "hidden_activation": "gelu_tanh" if architecture == "gemma3" else "silu",
        "sliding_window": 0,
        "global_layers": [],
        "rope_theta_local": float(metadata.get(prefix + "rope.freq_base", 10000.0)),
        "embedding_scale": 1.0,
        "query_pre_attn_scalar": float(head_dim),
        "final_logit_softcapping": _optional_float(metadata, prefix + "final_logit_softcapping"),
        "attn_logit_softcapping": _optional_float(metadata, prefix + "attn_logit_softcapping"),
    }
    if architecture == "gemma3":
        config.update(_gemma3_fields(metadata, config))
    return config


def _optional_float(metadata: Mapping[str, Any], key: str) -> float | None:
    value = metadata.get(key)
    return None if value in (None, 0, 0.0) else float(value)


def _rope_scaling(metadata: Mapping[str, Any], prefix: str) -> dict[str, Any] | None:
    # NOTE: Llama 3.1-style frequency scaling is not described here: GGUF files
    # carry it as a rope_freqs.weight tensor (loaded with the weights), and a
    # folder's low/high frequency factors are dropped.
    kind = metadata.get(prefix + "rope.scaling.type")
    factor = metadata.get(prefix + "rope.scaling.factor")
    if kind in (None, "none") and not factor:
        return None
    return {
        "type": str(kind or "linear"),
        "factor": float(factor or 1.0),
        "original_context_length": metadata.get(prefix + "rope.scaling.original_context_length"),
    }


def _gemma3_fields(metadata: Mapping[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    num_layers = config["num_layers"]
    pattern = metadata.get("gemma3.attention.sliding_window_pattern", GEMMA3_GLOBAL_LAYER_PERIOD)
    if isinstance(pattern, int | float):
        period = int(pattern)
        global_layers = [layer for layer in range(num_layers) if layer % period == period - 1]
    else:
        # A per-layer list: true marks a windowed layer.
        global_layers = [layer for layer, windowed in enumerate(pattern) if not windowed]
    if num_layers == GEMMA3_27B_LAYERS:
        query_scalar = config["hidden_size"] / config["num_heads"]
    else:
        query_scalar = float(config["head_dim"])
    return {
        "sliding_window": int(metadata.get("gemma3.attention.sliding_window", 0)),
        "global_layers": global_layers,
        "rope_theta_local": float(
            metadata.get("gemma3.rope.freq_base_swa", GEMMA3_LOCAL_ROPE_THETA)
        ),
        "embedding_scale": math.sqrt(config["hidden_size"]),
        "query_pre_attn_scalar": query_scalar,
    }

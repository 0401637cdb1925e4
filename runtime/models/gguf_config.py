"""Read transformer hyper-parameters from GGUF metadata keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from draftwise.runtime.models.layers import Weight
from draftwise.runtime.weights import QuantizedTensor


def _rows(weight: Weight) -> int:
    if isinstance(weight, QuantizedTensor):
        return weight.shape[0]
    return int(weight.shape[0])


def base_fields(
    architecture: str, metadata: Mapping[str, Any], weights: Mapping[str, Weight]
) -> dict[str, Any]:
    """Return the ModelConfig fields every architecture stores under ``{architecture}.*``."""
    prefix = architecture + "."
    hidden = int(metadata[prefix + "embedding_length"])
    num_heads = int(metadata[prefix + "attention.head_count"])
    head_dim = int(metadata.get(prefix + "attention.key_length", hidden // num_heads))
    return {
        "architecture": architecture,
        "vocab_size": _rows(weights["token_embd.weight"]),
        "hidden_size": hidden,
        "num_layers": int(metadata[prefix + "block_count"]),
        "num_heads": num_heads,
        "num_kv_heads": int(metadata.get(prefix + "attention.head_count_kv", num_heads)),
        "head_dim": head_dim,
        "intermediate_size": int(metadata[prefix + "feed_forward_length"]),
        "rms_norm_eps": float(metadata.get(prefix + "attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(metadata.get(prefix + "rope.freq_base", 10000.0)),
        "context_length": int(metadata.get(prefix + "context_length", 32768)),
        "tied_embeddings": "output.weight" not in weights,
    }

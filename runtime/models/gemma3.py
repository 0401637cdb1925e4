"""Gemma 3: query/key norms, norms after attention and MLP, GELU, sliding windows.

llama.cpp's converter stores Gemma's RMSNorm weights as ``1 + w``, so the
plain RMSNorm of the shared transformer applies them unchanged. Every
sixth layer attends over the whole context with the global rope base; the
others use a sliding window and a local rope base of 10,000.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from draftwise.runtime.models.config import ModelConfig
from draftwise.runtime.models.gguf_config import base_fields
from draftwise.runtime.models.layers import Weight
from draftwise.runtime.models.transformer import Transformer

GLOBAL_LAYER_PERIOD = 6
LOCAL_ROPE_THETA = 10000.0


def build(metadata: Mapping[str, Any], weights: dict[str, Weight], name: str) -> Transformer:
    fields = base_fields("gemma3", metadata, weights)
    num_layers = fields["num_layers"]
    fields["sliding_window"] = int(metadata.get("gemma3.attention.sliding_window", 512))
    fields["global_layers"] = tuple(
        layer
        for layer in range(num_layers)
        if layer % GLOBAL_LAYER_PERIOD == GLOBAL_LAYER_PERIOD - 1
    )
    fields["rope_theta_local"] = LOCAL_ROPE_THETA
    scaling = metadata.get("gemma3.rope.scaling.factor")
    if scaling:
        fields["rope_scale"] = 1.0 / float(scaling)
    fields["embedding_scale"] = math.sqrt(fields["hidden_size"])
    config = ModelConfig(**fields)
    return Transformer(config, weights, traditional_rope=False, activation="gelu_tanh", name=name)

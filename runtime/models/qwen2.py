"""Qwen2 and Qwen2.5: attention biases on q, k and v; rotary embedding on split halves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from draftwise.runtime.models.config import ModelConfig
from draftwise.runtime.models.gguf_config import base_fields
from draftwise.runtime.models.layers import Weight
from draftwise.runtime.models.transformer import Transformer


def build(metadata: Mapping[str, Any], weights: dict[str, Weight], name: str) -> Transformer:
    config = ModelConfig(**base_fields("qwen2", metadata, weights))
    return Transformer(config, weights, traditional_rope=False, activation="silu", name=name)

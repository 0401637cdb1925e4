"""Llama (SmolLM2 and relatives).

llama.cpp's converter permutes the rows of the query and key projections
of Llama models so that rotary embedding applies to adjacent pairs; with
GGUF weights the rotation is therefore the interleaved ("traditional") one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from draftwise.runtime.models.config import ModelConfig
from draftwise.runtime.models.gguf_config import base_fields
from draftwise.runtime.models.layers import Weight
from draftwise.runtime.models.transformer import Transformer


def build(metadata: Mapping[str, Any], weights: dict[str, Weight], name: str) -> Transformer:
    config = ModelConfig(**base_fields("llama", metadata, weights))
    return Transformer(config, weights, traditional_rope=True, activation="silu", name=name)

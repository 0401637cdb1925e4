"""Translate a Hugging Face folder's JSON configuration into GGUF metadata keys.

The result uses the keys llama.cpp's converter writes (``qwen2.block_count``,
``tokenizer.chat_template``, ...), so `model_config.config_from_metadata` and
the tokenizer read a folder exactly like a GGUF file. Values GGUF has no key
for are written under the keys llama.cpp reads for them where one exists
(``gemma3.rope.freq_base_swa``), else under ``draftwise.*``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from draftwise.runtime.errors import ModelFormatError, UnsupportedArchitectureError
from draftwise.runtime.loading.model_config import SUPPORTED_ARCHITECTURES

# Hugging Face model_type -> GGUF architecture.
ARCHITECTURES = {"qwen2": "qwen2", "llama": "llama", "gemma3_text": "gemma3", "gemma3": "gemma3"}

# GGUF key suffix (after "<arch>.") -> Hugging Face config field.
_HYPER_PARAMETERS = {
    "block_count": "num_hidden_layers",
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "attention.value_length": "head_dim",
    "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "final_logit_softcapping": "final_logit_softcapping",
    "attn_logit_softcapping": "attn_logit_softcapping",
}

# tokenizer_config.json field -> GGUF key of the token's id.
_SPECIAL_TOKEN_KEYS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
}


def read_json(path: Path, *, required: bool = False) -> dict[str, Any]:
    """Return the JSON object in ``path``; {} when it is absent and not required."""
    if not path.exists():
        if required:
            raise ModelFormatError(f"model folder '{path.parent}' has no {path.name}")
        return {}
    try:
        value = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ModelFormatError(
            f"'{path}' is not valid JSON ({error}); download it again"
        ) from error
    if not isinstance(value, dict):
        raise ModelFormatError(f"'{path}' does not hold a JSON object")
    return value


def hf_metadata(folder: Path, config_json: dict[str, Any]) -> dict[str, Any]:
    """Return GGUF-style metadata for the model in ``folder``."""
    text_config = {**config_json, **config_json.get("text_config", {})}
    model_type = text_config.get("model_type")
    architecture = ARCHITECTURES.get(str(model_type))
    if architecture is None:
        raise UnsupportedArchitectureError(
            f"model folder '{folder}' has model_type '{model_type}', which draftwise does not "
            f"implement (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    metadata: dict[str, Any] = {
        "general.architecture": architecture,
        "general.name": folder.name,
    }
    for key, field in _HYPER_PARAMETERS.items():
        if text_config.get(field) is not None:
            metadata[f"{architecture}.{key}"] = text_config[field]
    metadata.update(_rope_scaling(architecture, text_config.get("rope_scaling")))
    if architecture == "gemma3":
        metadata.update(_gemma3_keys(text_config))
    metadata.update(_tokenizer_keys(folder))
    return metadata


def _rope_scaling(architecture: str, scaling: Any) -> dict[str, Any]:
    if not isinstance(scaling, dict):
        return {}
    keys: dict[str, Any] = {
        f"{architecture}.rope.scaling.type": scaling.get("rope_type", scaling.get("type")),
        f"{architecture}.rope.scaling.factor": scaling.get("factor"),
    }
    original = scaling.get("original_max_position_embeddings")
    if original is not None:
        keys[f"{architecture}.rope.scaling.original_context_length"] = original
    return keys


def _gemma3_keys(text_config: dict[str, Any]) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    if text_config.get("sliding_window"):
        keys["gemma3.attention.sliding_window"] = text_config["sliding_window"]
    layer_types = text_config.get("layer_types")
    if isinstance(layer_types, list):
        keys["gemma3.attention.sliding_window_pattern"] = [
            kind == "sliding_attention" for kind in layer_types
        ]
    elif text_config.get("sliding_window_pattern"):
        keys["gemma3.attention.sliding_window_pattern"] = text_config["sliding_window_pattern"]
    if text_config.get("rope_local_base_freq"):
        keys["gemma3.rope.freq_base_swa"] = text_config["rope_local_base_freq"]
    return keys


def _token_content(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _tokenizer_keys(folder: Path) -> dict[str, Any]:
    tokenizer_config = read_json(folder / "tokenizer_config.json")
    tokenizer_json = read_json(folder / "tokenizer.json")
    ids = {entry["content"]: entry["id"] for entry in tokenizer_json.get("added_tokens", [])}
    ids = {**(tokenizer_json.get("model") or {}).get("vocab", {}), **ids}
    keys: dict[str, Any] = {}
    for field, key in _SPECIAL_TOKEN_KEYS.items():
        token = _token_content(tokenizer_config.get(field))
        if token is not None and token in ids:
            keys[key] = ids[token]
    for flag in ("add_bos_token", "add_eos_token"):
        if flag in tokenizer_config:
            keys[f"tokenizer.ggml.{flag}"] = bool(tokenizer_config[flag])
    template = _chat_template(folder, tokenizer_config)
    if template is not None:
        keys["tokenizer.chat_template"] = template
    eos = read_json(folder / "generation_config.json").get("eos_token_id")
    if eos is not None:
        keys["draftwise.eos_token_ids"] = eos if isinstance(eos, list) else [eos]
    return keys


def _chat_template(folder: Path, tokenizer_config: dict[str, Any]) -> str | None:
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.exists():
        return jinja_file.read_text("utf-8")
    template = tokenizer_config.get("chat_template")
    if template is None:
        template = read_json(folder / "chat_template.json").get("chat_template")
    if isinstance(template, list):
        # A list of named templates: use the default one.
        named = {entry.get("name"): entry.get("template") for entry in template}
        template = named.get("default")
    return template if isinstance(template, str) else None

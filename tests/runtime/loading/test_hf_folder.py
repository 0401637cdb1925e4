"""load_safetensors_folder on tiny Hugging Face and MLX folders written by the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from loading_builders import CHATML_TEMPLATE, TinyVocab, tiny_tokenizer_json

from draftwise.runtime.errors import (
    ModelFormatError,
    ModelNotFoundError,
    UnsupportedArchitectureError,
)
from draftwise.runtime.loading import load_safetensors_folder, load_tokenizer
from draftwise.runtime.loading.hf_folder import gguf_tensor_name, llama_rope_row_order
from draftwise.runtime.weights import QuantizedTensor

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 64, 4, 2, 128, 2
HEAD_DIM = HIDDEN // HEADS


def hf_tensors(vocab_size: int, architecture: str, rng: np.random.Generator) -> dict[str, Any]:
    """Float tensors named as Hugging Face names them, as numpy float32."""
    kv = KV_HEADS * HEAD_DIM
    tensors = {
        "model.embed_tokens.weight": rng.standard_normal((vocab_size, HIDDEN)),
        "model.norm.weight": rng.standard_normal(HIDDEN) * 0.1,
    }
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}."
        shapes = {
            "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
            "self_attn.k_proj.weight": (kv, HIDDEN),
            "self_attn.v_proj.weight": (kv, HIDDEN),
            "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
            "mlp.gate_proj.weight": (FFN, HIDDEN),
            "mlp.up_proj.weight": (FFN, HIDDEN),
            "mlp.down_proj.weight": (HIDDEN, FFN),
            "input_layernorm.weight": (HIDDEN,),
            "post_attention_layernorm.weight": (HIDDEN,),
        }
        if architecture == "qwen2":
            shapes.update(
                {
                    "self_attn.q_proj.bias": (HIDDEN,),
                    "self_attn.k_proj.bias": (kv,),
                    "self_attn.v_proj.bias": (kv,),
                }
            )
        if architecture == "gemma3":
            shapes.update(
                {
                    "self_attn.q_norm.weight": (HEAD_DIM,),
                    "self_attn.k_norm.weight": (HEAD_DIM,),
                    "pre_feedforward_layernorm.weight": (HIDDEN,),
                    "post_feedforward_layernorm.weight": (HIDDEN,),
                }
            )
        for name, shape in shapes.items():
            tensors[prefix + name] = rng.standard_normal(shape) * 0.1
    return {name: value.astype(np.float32) for name, value in tensors.items()}


def write_folder(
    folder: Path,
    vocab: TinyVocab,
    *,
    architecture: str = "qwen2",
    quantize: dict[str, tuple[int, int]] | None = None,
    config_extra: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a folder; ``quantize`` maps module paths to MLX (bits, group_size)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = hf_tensors(len(vocab.tokens), architecture, np.random.default_rng(seed))
    arrays: dict[str, mx.array] = {}
    quantization: dict[str, Any] = {}
    for name, value in tensors.items():
        module = name.rsplit(".", 1)[0]
        if quantize and module in quantize:
            bits, group_size = quantize[module]
            weight, scales, biases = mx.quantize(mx.array(value), group_size=group_size, bits=bits)
            arrays[module + ".weight"] = weight
            arrays[module + ".scales"] = scales.astype(mx.bfloat16)
            arrays[module + ".biases"] = biases.astype(mx.bfloat16)
            quantization[module] = {"bits": bits, "group_size": group_size}
        else:
            arrays[name] = mx.array(value).astype(mx.bfloat16)
    mx.save_safetensors(str(folder / "model.safetensors"), arrays)

    config: dict[str, Any] = {
        "model_type": {"gemma3": "gemma3_text"}.get(architecture, architecture),
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "intermediate_size": FFN,
        "vocab_size": len(vocab.tokens),
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        **(config_extra or {}),
    }
    if quantization:
        first = next(iter(quantization.values()))
        config["quantization"] = {**first, **quantization}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text(tiny_tokenizer_json(vocab))
    tokenizer_config = {"eos_token": "<|im_end|>", "chat_template": CHATML_TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    return tensors


def rounded(values: np.ndarray) -> np.ndarray:
    """The float32 value of ``values`` after the bfloat16 round trip the folder applies."""
    return np.array(mx.array(values).astype(mx.bfloat16).astype(mx.float32))


def test_folder_qwen2_names_and_values(
    tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path
) -> None:
    folder = tmp_path / "qwen2-tiny"
    tensors = write_folder(folder, byte_vocab)
    model = load_safetensors_folder(folder, cache_dir=cache_dir)

    assert model.architecture == "qwen2"
    assert len(model.weights) == len(tensors)
    expected = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "blk.1.attn_q.bias": "model.layers.1.self_attn.q_proj.bias",
        "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight",
        "blk.0.ffn_norm.weight": "model.layers.0.post_attention_layernorm.weight",
        "blk.1.ffn_down.weight": "model.layers.1.mlp.down_proj.weight",
    }
    for gguf_name, hf_name in expected.items():
        value = model.weights[gguf_name]
        assert isinstance(value, mx.array)
        assert value.dtype == mx.float32
        assert np.array_equal(np.array(value), rounded(tensors[hf_name])), gguf_name


def test_folder_qwen2_config_and_metadata(
    tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path
) -> None:
    folder = tmp_path / "qwen2-tiny"
    write_folder(folder, byte_vocab, config_extra={"sliding_window": 4096})
    model = load_safetensors_folder(folder, cache_dir=cache_dir)

    assert model.metadata["qwen2.embedding_length"] == HIDDEN
    assert model.metadata["qwen2.attention.head_count_kv"] == KV_HEADS
    assert model.config["num_layers"] == LAYERS
    assert model.config["head_dim"] == HEAD_DIM
    assert model.config["vocab_size"] == len(byte_vocab.tokens)
    assert model.config["tied_embeddings"] is True
    assert model.config["attention_bias"] is True
    # Qwen2 configs carry a sliding_window that is off (use_sliding_window=false).
    assert model.config["sliding_window"] == 0


def test_folder_mlx_quantized_modules(
    tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path
) -> None:
    folder = tmp_path / "qwen2-4bit"
    quantize = {
        "model.layers.0.mlp.down_proj": (4, 64),
        "model.layers.1.mlp.up_proj": (8, 32),
        "model.embed_tokens": (4, 64),
    }
    tensors = write_folder(folder, byte_vocab, quantize=quantize)
    stored = mx.load(str(folder / "model.safetensors"))
    assert isinstance(stored, dict)
    model = load_safetensors_folder(folder, cache_dir=cache_dir)

    for module, gguf_name in [
        ("model.layers.0.mlp.down_proj", "blk.0.ffn_down.weight"),
        ("model.layers.1.mlp.up_proj", "blk.1.ffn_up.weight"),
        ("model.embed_tokens", "token_embd.weight"),
    ]:
        value = model.weights[gguf_name]
        bits, group_size = quantize[module]
        assert isinstance(value, QuantizedTensor), gguf_name
        assert (value.bits, value.group_size) == (bits, group_size)
        assert value.shape == tensors[module + ".weight"].shape
        assert value.scales.dtype == mx.float32
        expected = mx.dequantize(
            stored[module + ".weight"],
            stored[module + ".scales"].astype(mx.float32),
            stored[module + ".biases"].astype(mx.float32),
            group_size=group_size,
            bits=bits,
        )
        assert np.array_equal(np.array(value.dequantize()), np.array(expected)), gguf_name


def test_folder_tokenizer_and_template(
    tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path
) -> None:
    folder = tmp_path / "qwen2-tiny"
    write_folder(folder, byte_vocab)
    tokenizer = load_tokenizer(load_safetensors_folder(folder, cache_dir=cache_dir))

    assert tokenizer.eos_token_id == byte_vocab.tokens.index("<|im_end|>")
    assert tokenizer.eos_token_ids == {0, 2}
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    text = "def f(x):\n\treturn x  # 你好 😀\r\n"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_folder_digest_tracks_files(tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path) -> None:
    folder = tmp_path / "qwen2-tiny"
    write_folder(folder, byte_vocab)
    first = load_safetensors_folder(folder, cache_dir=cache_dir).source_sha256
    assert load_safetensors_folder(folder, cache_dir=cache_dir).source_sha256 == first
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    assert load_safetensors_folder(folder, cache_dir=cache_dir).source_sha256 != first


def test_folder_gemma3_norms_and_layers(
    tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path
) -> None:
    folder = tmp_path / "gemma3-tiny"
    layer_types = ["sliding_attention", "full_attention"]
    tensors = write_folder(
        folder,
        byte_vocab,
        architecture="gemma3",
        config_extra={
            "head_dim": HEAD_DIM,
            "sliding_window": 512,
            "layer_types": layer_types,
            "rope_local_base_freq": 10000.0,
            "query_pre_attn_scalar": 48,
        },
    )
    model = load_safetensors_folder(folder, cache_dir=cache_dir)

    for gguf_name, hf_name in {
        "blk.0.attn_norm.weight": "model.layers.0.input_layernorm.weight",
        "blk.0.post_attention_norm.weight": "model.layers.0.post_attention_layernorm.weight",
        "blk.0.ffn_norm.weight": "model.layers.0.pre_feedforward_layernorm.weight",
        "blk.0.post_ffw_norm.weight": "model.layers.0.post_feedforward_layernorm.weight",
        "blk.1.attn_q_norm.weight": "model.layers.1.self_attn.q_norm.weight",
        "output_norm.weight": "model.norm.weight",
    }.items():
        stored = np.array(model.weights[gguf_name])
        assert np.allclose(stored, rounded(tensors[hf_name]) + 1.0), gguf_name
    assert np.array_equal(
        np.array(model.weights["blk.0.attn_q.weight"]),
        rounded(tensors["model.layers.0.self_attn.q_proj.weight"]),
    )
    config = model.config
    assert config["global_layers"] == [1]
    assert config["sliding_window"] == 512
    assert config["rope_theta_local"] == 10000.0
    assert config["query_pre_attn_scalar"] == 48.0
    assert config["rope_traditional"] is False


def rope_per_head(x: mx.array, *, traditional: bool) -> mx.array:
    # [tokens, heads * head_dim] -> [1, heads, tokens, head_dim]
    heads = x.reshape(x.shape[0], -1, HEAD_DIM).transpose(1, 0, 2)[None]
    return mx.fast.rope(heads, HEAD_DIM, traditional=traditional, base=10000.0, scale=1.0, offset=0)


def test_folder_llama_query_rows_match_gguf_rope(
    tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path
) -> None:
    folder = tmp_path / "llama-tiny"
    tensors = write_folder(folder, byte_vocab, architecture="llama")
    model = load_safetensors_folder(folder, cache_dir=cache_dir)
    assert model.config["rope_traditional"] is True

    hf_weight = mx.array(rounded(tensors["model.layers.0.self_attn.q_proj.weight"]))
    gguf_weight = model.weights["blk.0.attn_q.weight"]
    assert isinstance(gguf_weight, mx.array)
    x = mx.array(np.random.default_rng(1).standard_normal((5, HIDDEN)).astype(np.float32))
    hf_rotated = rope_per_head(x @ hf_weight.T, traditional=False)
    gguf_rotated = rope_per_head(x @ gguf_weight.T, traditional=True)

    # The same rotation, with the head dimensions listed in GGUF order.
    order = mx.array(llama_rope_row_order(HEAD_DIM, 1))
    assert np.allclose(np.array(hf_rotated[..., order]), np.array(gguf_rotated), atol=1e-5)


def test_folder_llama_quantized_key_rows_permuted(
    tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path
) -> None:
    folder = tmp_path / "llama-4bit"
    module = "model.layers.0.self_attn.k_proj"
    tensors = write_folder(folder, byte_vocab, architecture="llama", quantize={module: (4, 32)})
    model = load_safetensors_folder(folder, cache_dir=cache_dir)

    value = model.weights["blk.0.attn_k.weight"]
    assert isinstance(value, QuantizedTensor)
    original = mx.array(tensors[module + ".weight"])
    weight, scales, biases = mx.quantize(original, group_size=32, bits=4)
    hf_dequantized = np.array(mx.dequantize(weight, scales, biases, group_size=32, bits=4))
    order = llama_rope_row_order(KV_HEADS * HEAD_DIM, KV_HEADS)
    assert np.allclose(np.array(value.dequantize()), hf_dequantized[order], atol=1e-2)


def test_llama_rope_row_order_interleaves_halves() -> None:
    assert llama_rope_row_order(8, 2).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_gguf_tensor_name_mapping() -> None:
    assert gguf_tensor_name("lm_head.weight", "qwen2") == "output.weight"
    assert gguf_tensor_name("model.layers.3.mlp.gate_proj.scales", "llama") == (
        "blk.3.ffn_gate.scales"
    )
    assert gguf_tensor_name("model.layers.0.post_attention_layernorm.weight", "gemma3") == (
        "blk.0.post_attention_norm.weight"
    )
    assert gguf_tensor_name("model.layers.0.mystery.weight", "qwen2") is None


def test_folder_multimodal_prefix_and_skipped_towers(
    tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path
) -> None:
    folder = tmp_path / "gemma3-mm"
    write_folder(folder, byte_vocab, architecture="gemma3")
    arrays = mx.load(str(folder / "model.safetensors"))
    assert isinstance(arrays, dict)
    renamed = {"language_model." + name: value for name, value in arrays.items()}
    renamed["vision_tower.vision_model.embeddings.patch_embedding.weight"] = mx.zeros((4, 4))
    mx.save_safetensors(str(folder / "model.safetensors"), renamed)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(
        json.dumps({"model_type": "gemma3", "text_config": {**config, "model_type": "gemma3_text"}})
    )
    model = load_safetensors_folder(folder, cache_dir=cache_dir)
    assert "token_embd.weight" in model.weights
    assert not any("vision" in name for name in model.weights)


def test_folder_unknown_model_type(tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path) -> None:
    folder = tmp_path / "mamba"
    write_folder(folder, byte_vocab, config_extra={"model_type": "mamba"})
    with pytest.raises(UnsupportedArchitectureError, match="'mamba'"):
        load_safetensors_folder(folder, cache_dir=cache_dir)


def test_folder_unknown_tensor(tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path) -> None:
    folder = tmp_path / "qwen2-extra"
    write_folder(folder, byte_vocab)
    mx.save_safetensors(
        str(folder / "extra.safetensors"), {"model.layers.0.mystery.weight": mx.zeros((2, 2))}
    )
    with pytest.raises(ModelFormatError, match="mystery"):
        load_safetensors_folder(folder, cache_dir=cache_dir)


def test_folder_without_config(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError, match=r"no config\.json"):
        load_safetensors_folder(tmp_path / "empty", cache_dir=cache_dir)


def test_folder_missing(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        load_safetensors_folder(tmp_path / "absent", cache_dir=cache_dir)


def test_folder_damaged_weights(tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path) -> None:
    folder = tmp_path / "qwen2-damaged"
    write_folder(folder, byte_vocab)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelFormatError, match="could not be read"):
        load_safetensors_folder(folder, cache_dir=cache_dir)

"""Fused query/key/value and gate/up projections: same logits, same weights, formats kept apart."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from fakes import quantize, tiny_config, tiny_weights

from draftwise.runtime.models import layers
from draftwise.runtime.models.transformer import Transformer
from draftwise.runtime.weights import QuantizedTensor


def _model(weights: dict, architecture: str = "qwen2") -> Transformer:
    return Transformer(
        tiny_config(architecture),
        weights,
        traditional_rope=False,
        activation="silu",
        name="tiny",
    )


def _logits(model: Transformer, tokens: list[int]) -> np.ndarray:
    cache = model.make_cache()
    prompt = np.array(model(mx.array(tokens[:-3], dtype=mx.uint32), cache).logits)
    step = np.array(model(mx.array(tokens[-3:], dtype=mx.uint32), cache).logits)
    return np.concatenate([prompt, step])


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_fused_projections_same_columns(architecture: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(architecture)
    fused = _model(tiny_weights(config, seed=3), architecture)
    assert set(fused._fused) == {
        f"blk.{layer}.{name}" for layer in range(2) for name in ("attn_qkv", "ffn_gate_up")
    }
    with monkeypatch.context() as patch:
        patch.setattr(Transformer, "_fuse", lambda self, key, names: None)
        separate = _model(tiny_weights(config, seed=3), architecture)
    assert separate._fused == {}

    x = mx.random.normal((5, config.hidden_size), key=mx.random.key(7))
    for key, names in [
        ("attn_qkv", ("attn_q", "attn_k", "attn_v")),
        ("ffn_gate_up", ("ffn_gate", "ffn_up")),
    ]:
        for layer in range(config.num_layers):
            weight, bias, _ = fused._fused[f"blk.{layer}.{key}"]
            together = np.array(layers.linear(x, weight, bias))
            alone = []
            for name in names:
                prefix = f"blk.{layer}.{name}"
                weight_alone = separate.weights[prefix + ".weight"]
                bias_alone = separate.weights.get(prefix + ".bias")
                alone.append(np.array(layers.linear(x, weight_alone, bias_alone)))
            np.testing.assert_array_equal(together, np.concatenate(alone, axis=1))

    # The whole model: the same tokens, up to the SiLU of the fused path
    # (the kernel's, or MLX's on column slices), which rounds differently.
    tokens = [5, 17, 3, 40, 22, 9, 61, 2]
    fused_logits = _logits(fused, tokens)
    separate_logits = _logits(separate, tokens)
    np.testing.assert_allclose(fused_logits, separate_logits, rtol=0, atol=0.2)
    assert np.array_equal(fused_logits.argmax(axis=1), separate_logits.argmax(axis=1))


def test_fused_model_keeps_each_matrix_under_its_name() -> None:
    config = tiny_config()
    original = tiny_weights(config, seed=1)
    expected = {
        name: np.array(weight.dequantize())
        for name, weight in original.items()
        if isinstance(weight, QuantizedTensor)
    }
    biases = {name: np.array(w) for name, w in original.items() if name.endswith(".bias")}
    model = _model(dict(original))
    for name, matrix in expected.items():
        weight = model.weights[name]
        assert isinstance(weight, QuantizedTensor)
        np.testing.assert_array_equal(np.array(weight.dequantize()), matrix)
    for name, bias in biases.items():
        np.testing.assert_array_equal(np.array(model.weights[name]), bias)


def test_projections_of_different_widths_stay_separate() -> None:
    config = tiny_config()
    weights = tiny_weights(config, seed=2)
    value = weights["blk.1.attn_v.weight"]
    assert isinstance(value, QuantizedTensor)
    weights["blk.1.attn_v.weight"] = quantize(value.dequantize(), bits=8)
    model = _model(weights)
    assert "blk.0.attn_qkv" in model._fused
    assert "blk.1.attn_qkv" not in model._fused
    assert "blk.1.ffn_gate_up" in model._fused
    logits = model(mx.array([1, 2, 3], dtype=mx.uint32), model.make_cache()).logits
    assert logits.shape == (3, config.vocab_size)
    assert np.all(np.isfinite(np.array(logits)))

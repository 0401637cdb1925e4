"""Fused query/key/value and gate/up projections: same logits, same weights, formats kept apart."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from fakes import quantize, tiny_config, tiny_weights

from draftwise.runtime import kernels
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
def test_fused_projections_give_the_same_logits(
    architecture: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(architecture)
    tokens = [5, 17, 3, 40, 22, 9, 61, 2]
    fused = _model(tiny_weights(config, seed=3), architecture)
    assert set(fused._fused) == {
        f"blk.{layer}.{name}" for layer in range(2) for name in ("attn_qkv", "ffn_gate_up")
    }
    with_silu_kernel = _logits(fused, tokens)
    with monkeypatch.context() as patch:
        patch.setattr(Transformer, "_fuse", lambda self, key, names: None)
        separate = _model(tiny_weights(config, seed=3), architecture)
    assert separate._fused == {}
    # The fused SiLU kernel rounds differently from MLX's sigmoid; with MLX
    # ops on both sides, every bit must agree.
    monkeypatch.setattr(kernels, "silu_mul", lambda gate_up: None)
    np.testing.assert_array_equal(_logits(fused, tokens), _logits(separate, tokens))
    np.testing.assert_allclose(with_silu_kernel, _logits(separate, tokens), rtol=1e-3, atol=1e-3)


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

"""Shared test fakes: tiny random models and a character tokenizer."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx

from draftwise.runtime.models.config import ModelConfig
from draftwise.runtime.models.layers import Weight
from draftwise.runtime.models.transformer import Transformer
from draftwise.runtime.weights import QuantizedTensor

TINY_VOCAB = 96
EOS_ID = TINY_VOCAB - 1


def quantize(matrix: mx.array, bits: int = 4, group_size: int = 32) -> QuantizedTensor:
    weight, scales, biases = mx.quantize(matrix, group_size=group_size, bits=bits)
    return QuantizedTensor(weight, scales, biases, bits, group_size, tuple(matrix.shape))


def tiny_config(architecture: str = "qwen2", **overrides: object) -> ModelConfig:
    fields: dict[str, object] = dict(
        architecture=architecture,
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        context_length=512,
    )
    fields.update(overrides)
    return ModelConfig(**fields)  # type: ignore[arg-type]


def tiny_weights(config: ModelConfig, seed: int = 0, scale: float = 0.6) -> dict[str, Weight]:
    """Random weights by GGUF name; matrices 4-bit quantized, norms and biases float32."""
    key = mx.random.key(seed)

    def normal(shape: tuple[int, ...], std: float) -> mx.array:
        nonlocal key
        key, sub = mx.random.split(key)
        return mx.random.normal(shape, key=sub) * std

    hidden, heads, kv, hd = (
        config.hidden_size,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
    )
    weights: dict[str, Weight] = {
        "token_embd.weight": quantize(normal((config.vocab_size, hidden), 1.0)),
        "output_norm.weight": 1.0 + normal((hidden,), 0.1),
    }
    gemma = config.architecture == "gemma3"
    for layer in range(config.num_layers):
        p = f"blk.{layer}."
        weights[p + "attn_norm.weight"] = 1.0 + normal((hidden,), 0.1)
        weights[p + "attn_q.weight"] = quantize(normal((heads * hd, hidden), scale))
        weights[p + "attn_k.weight"] = quantize(normal((kv * hd, hidden), scale))
        weights[p + "attn_v.weight"] = quantize(normal((kv * hd, hidden), scale))
        weights[p + "attn_output.weight"] = quantize(normal((hidden, heads * hd), scale / 2))
        weights[p + "ffn_norm.weight"] = 1.0 + normal((hidden,), 0.1)
        weights[p + "ffn_gate.weight"] = quantize(normal((config.intermediate_size, hidden), scale))
        weights[p + "ffn_up.weight"] = quantize(normal((config.intermediate_size, hidden), scale))
        weights[p + "ffn_down.weight"] = quantize(
            normal((hidden, config.intermediate_size), scale / 2)
        )
        if config.architecture == "qwen2":
            weights[p + "attn_q.bias"] = normal((heads * hd,), 0.1)
            weights[p + "attn_k.bias"] = normal((kv * hd,), 0.1)
            weights[p + "attn_v.bias"] = normal((kv * hd,), 0.1)
        if gemma:
            weights[p + "attn_q_norm.weight"] = 1.0 + normal((hd,), 0.1)
            weights[p + "attn_k_norm.weight"] = 1.0 + normal((hd,), 0.1)
            weights[p + "post_attention_norm.weight"] = 1.0 + normal((hidden,), 0.1)
            weights[p + "post_ffw_norm.weight"] = 1.0 + normal((hidden,), 0.1)
    arrays = [
        w
        for v in weights.values()
        for w in ((v.weight, v.scales, v.biases) if isinstance(v, QuantizedTensor) else (v,))
    ]
    mx.eval(arrays)
    return weights


def tiny_model(architecture: str = "qwen2", seed: int = 0, **overrides: object) -> Transformer:
    config = tiny_config(architecture, **overrides)
    if architecture == "gemma3" and "sliding_window" not in overrides:
        config = tiny_config(architecture, sliding_window=8, global_layers=(1,), **overrides)
    activation = "gelu_tanh" if architecture == "gemma3" else "silu"
    return Transformer(
        config,
        tiny_weights(config, seed),
        traditional_rope=architecture == "llama",
        activation=activation,
        name=f"tiny-{architecture}",
    )


class CharTokenizer:
    """Token ``i < EOS_ID`` is the character ``chr(32 + i)``; ``EOS_ID`` ends text."""

    eos_token_ids = frozenset({EOS_ID})
    vocab_size = TINY_VOCAB

    def encode(self, text: str) -> list[int]:
        return [min(max(ord(ch) - 32, 0), EOS_ID - 1) for ch in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(32 + t) for t in token_ids if t != EOS_ID)


class ScriptedDrafter:
    """Propose tokens from a known continuation, right for a scripted number of positions.

    ``reference`` is the target's own greedy output after the prompt. Each
    round proposes the next tokens of it, replacing every proposal from
    position ``correct + 1`` on with a wrong token: ``correct=None`` is the
    oracle, ``correct=0`` the adversary, others a mixed drafter.
    """

    def __init__(self, reference: list[int], correct: int | None, vocab: int = TINY_VOCAB) -> None:
        self.name = "scripted"
        self.reference = reference
        self.correct = correct
        self.vocab = vocab
        self.position = 0  # index into reference of the next token to propose
        self.committed: list[int] = []

    def start(self, prompt_ids: Sequence[int], prefiller: object = None) -> None:
        # The runner passes the prompt plus the first generated token.
        self.position = 1
        self.committed = [prompt_ids[-1]]

    def propose(self, num_tokens: int, sampling: object, keys: object) -> object:
        from draftwise.runtime.drafters.base import DraftProposal

        tokens = []
        for i in range(num_tokens):
            index = self.position + i
            token = self.reference[index] if index < len(self.reference) else 0
            if self.correct is not None and i >= self.correct:
                token = (token + 1) % self.vocab
            tokens.append(token)
        return DraftProposal(mx.array(tokens, dtype=mx.uint32), None)

    def commit(self, num_accepted: int, committed_ids: Sequence[int]) -> None:
        self.committed += list(committed_ids)
        self.position += len(committed_ids)

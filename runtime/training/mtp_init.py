"""Starting points for MTP training: the candidate vocabulary and weights from the target."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
import numpy as np

from draftwise.runtime.drafters.mtp_config import MTPConfig
from draftwise.runtime.drafters.mtp_model import (
    Params,
    layer_prefix,
    parameter_shapes,
    random_parameters,
)
from draftwise.runtime.weights import QuantizedTensor


def dense(weight: mx.array | QuantizedTensor) -> mx.array:
    """Return a target weight as a float32 matrix."""
    if isinstance(weight, QuantizedTensor):
        return weight.dequantize()
    return weight.astype(mx.float32)


def count_tokens(tokenizer: Any, files: Iterable[Path], max_chars: int = 200_000) -> Counter[int]:
    """Count token ids over the text of ``files`` (each cut at ``max_chars``)."""
    counts: Counter[int] = Counter()
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")[:max_chars]
        except (OSError, UnicodeDecodeError):
            continue
        counts.update(tokenizer.encode(text))
    return counts


def choose_candidates(
    corpus_counts: Counter[int],
    target_choices: Iterable[np.ndarray],
    size: int,
    always: Iterable[int],
) -> np.ndarray:
    """Return ``size`` token ids: ``always`` first, then the most frequent.

    The target's own greedy choices count ten times a corpus token: they are
    what the drafter must propose.
    """
    counts = Counter(corpus_counts)
    for choices in target_choices:
        for token_id, number in zip(*np.unique(choices, return_counts=True), strict=True):
            counts[int(token_id)] += 10 * int(number)
    chosen = list(dict.fromkeys(int(t) for t in always))
    for token_id, _ in counts.most_common():
        if len(chosen) >= size:
            break
        if token_id not in chosen:
            chosen.append(token_id)
    return np.array(sorted(chosen[:size]), dtype=np.int32)


def parameters_from_target(config: MTPConfig, target: Any, seed: int) -> Params:
    """Seed the drafter's layers from the target's last decoder layer where shapes allow.

    With ``hidden_size == backbone_hidden_size`` the query projection, the
    norms and the strongest ``intermediate_size`` MLP units come from the
    target layer ``target_kv_layer``. The attention and MLP output
    projections start at zero, so each layer starts as the identity and
    `fit_projections` alone decides what the untrained drafter predicts.
    The input projection starts as the sum of the embedding and the hidden
    state, and the output projection as the identity. Other shapes start
    random.
    """
    params = random_parameters(config, seed)
    if config.hidden_size != config.backbone_hidden_size:
        return params
    w = target.weights
    size = config.hidden_size
    eye = mx.eye(size, dtype=mx.float32)
    params["pre_projection.weight"] = mx.concatenate([eye, eye], axis=1)
    params["post_projection.weight"] = eye
    params["norm.weight"] = dense(w["output_norm.weight"])
    source = f"blk.{config.target_kv_layer}."
    gate, up, down = (
        dense(w[source + n]) for n in ("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight")
    )
    strength = mx.linalg.norm(up, axis=1) * mx.linalg.norm(down, axis=0)
    units = mx.sort(mx.argsort(-strength)[: config.intermediate_size])
    for layer in range(config.num_hidden_layers):
        p = layer_prefix(layer)
        params[p + "input_layernorm.weight"] = dense(w[source + "attn_norm.weight"])
        params[p + "self_attn.q_proj.weight"] = dense(w[source + "attn_q.weight"])
        if config.attention_bias and source + "attn_q.bias" in w:
            params[p + "self_attn.q_proj.bias"] = dense(w[source + "attn_q.bias"])
        params[p + "self_attn.o_proj.weight"] = mx.zeros((size, size), dtype=mx.float32)
        params[p + "pre_feedforward_layernorm.weight"] = dense(w[source + "ffn_norm.weight"])
        params[p + "mlp.gate_proj.weight"] = gate[units]
        params[p + "mlp.up_proj.weight"] = up[units]
        params[p + "mlp.down_proj.weight"] = mx.zeros((size, config.intermediate_size))
    shapes = parameter_shapes(config)
    for name, value in params.items():
        assert tuple(value.shape) == shapes[name], f"{name}: {value.shape} vs {shapes[name]}"
    mx.eval(list(params.values()))
    return params


def fit_projections(
    config: MTPConfig, params: Params, windows: Sequence[Any], ridge: float = 1.0
) -> Params:
    """Start the drafter as the best linear map from its inputs to the target's next state.

    Solves, by ridge regression over every position ``t`` of ``windows``,
    ``hidden[t + 1] ~ A @ [embedding[t + 1], hidden[t]]``: the target's state
    after a token from the state before it and that token's embedding. ``A``
    becomes the input projection and the output projection the identity.
    The final norm becomes a constant gain, the hidden states' root mean
    square. So a drafter whose layers add nothing proposes what this linear
    map predicts (docs/mtp.md has its held-out acceptance). Shapes other
    than ``hidden_size == backbone_hidden_size`` are returned unchanged.
    """
    if config.hidden_size != config.backbone_hidden_size or not windows:
        return params
    width = 2 * config.backbone_hidden_size
    gram = mx.zeros((width, width), dtype=mx.float32)
    cross = mx.zeros((width, config.backbone_hidden_size), dtype=mx.float32)
    for window in windows:
        inputs = mx.concatenate([window.embeddings[1:], window.hidden[:-1]], axis=1)
        gram = gram + inputs.T @ inputs
        cross = cross + inputs.T @ window.hidden[1:]
        mx.eval(gram, cross)
    solution = mx.linalg.solve(gram + ridge * mx.eye(width), cross, stream=mx.cpu)
    gain = root_mean_square([window.hidden for window in windows])
    fitted = dict(params)
    fitted["pre_projection.weight"] = solution.T
    fitted["post_projection.weight"] = mx.eye(config.hidden_size, dtype=mx.float32)
    fitted["norm.weight"] = mx.full((config.backbone_hidden_size,), gain, dtype=mx.float32)
    mx.eval(list(fitted.values()))
    return fitted


def root_mean_square(arrays: list[mx.array]) -> float:
    total = sum(cast(float, mx.sum(a * a).item()) for a in arrays)
    count = sum(a.size for a in arrays)
    return float((total / max(count, 1)) ** 0.5)

"""Starting points for MTP training: the candidate vocabulary and weights from the target."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
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
        return mx.dequantize(
            weight.weight,
            weight.scales,
            weight.biases,
            group_size=weight.group_size,
            bits=weight.bits,
        ).astype(mx.float32)
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


def parameters_from_target(
    config: MTPConfig,
    target: Any,
    seed: int,
    embedding_gain: float = 1.0,
    logit_scale: float = 1.0,
    branch_scale: float = 1.0,
) -> Params:
    """Seed the drafter from the target's last decoder layer where shapes allow.

    With ``hidden_size == backbone_hidden_size`` the attention's query and
    output projections, the norms and the strongest ``intermediate_size``
    MLP units come from the target layer ``target_kv_layer``. The input
    projection starts as ``embedding_gain`` times the embedding plus the
    hidden state, and the output projection as the identity. The final norm
    is the target's scaled by ``logit_scale``: a value below one starts the
    drafter unsure instead of confidently repeating the hidden state's own
    prediction. The attention and MLP output projections are scaled by
    ``branch_scale``: the target layer's outputs are sized for its own
    residual stream and, at full size, swamp the drafter's input. Other
    shapes start random.
    """
    params = random_parameters(config, seed)
    if config.hidden_size != config.backbone_hidden_size:
        return params
    w = target.weights
    size = config.hidden_size
    eye = mx.eye(size, dtype=mx.float32)
    params["pre_projection.weight"] = mx.concatenate([embedding_gain * eye, eye], axis=1)
    params["post_projection.weight"] = eye
    params["norm.weight"] = logit_scale * dense(w["output_norm.weight"])
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
        params[p + "self_attn.o_proj.weight"] = branch_scale * dense(
            w[source + "attn_output.weight"]
        )
        params[p + "pre_feedforward_layernorm.weight"] = dense(w[source + "ffn_norm.weight"])
        params[p + "mlp.gate_proj.weight"] = gate[units]
        params[p + "mlp.up_proj.weight"] = up[units]
        params[p + "mlp.down_proj.weight"] = branch_scale * down[:, units]
    shapes = parameter_shapes(config)
    for name, value in params.items():
        assert tuple(value.shape) == shapes[name], f"{name}: {value.shape} vs {shapes[name]}"
    mx.eval(list(params.values()))
    return params


def root_mean_square(arrays: list[mx.array]) -> float:
    total = sum(cast(float, mx.sum(a * a).item()) for a in arrays)
    count = sum(a.size for a in arrays)
    return float((total / max(count, 1)) ** 0.5)

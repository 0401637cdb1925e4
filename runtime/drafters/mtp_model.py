"""The MTP drafter's network: one draft step as a pure function of its parameters.

A step takes the previous state (the target's post-final-norm hidden state
at the first step, the drafter's own output after that) and the embedding
of the token that follows it, and returns the next state and logits over
the candidate vocabulary:

    x = pre_projection([embedding, state])
    x = x + o_proj(attention(q_proj(norm(x)), target keys, target values))
    x = x + mlp(norm(x))                     (per decoder layer)
    state' = norm(post_projection(x));  logits = state' @ head_rows.T

Attention has queries only: keys and values are the target's cached ones
of `MTPConfig.target_kv_layer`, so the drafter needs no prefill and keeps
no cache. Training (many origins at once, with a mask) and drafting (one
row) call the same `mtp_step`; matrices are float arrays when training and
may be quantized (`QuantizedTensor`) when drafting.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from draftwise.runtime.drafters.mtp_config import MTPConfig
from draftwise.runtime.models.layers import linear

Params = dict[str, Any]


def layer_prefix(layer: int) -> str:
    return f"layers.{layer}."


def attend_target(
    config: MTPConfig,
    queries: mx.array,
    keys: mx.array,
    values: mx.array,
    mask: mx.array | None,
) -> mx.array:
    """Compute attention of ``queries`` over the target's ``keys`` and ``values``.

    Shapes: ``queries`` ``[heads, n, head_dim]``, ``keys`` and ``values``
    ``[kv_heads, length, head_dim]``.

    ``mask`` ``[n, length]`` (True: visible), or None when every key is visible to every row.
    Returns ``[n, heads * head_dim]``.
    """
    heads, rows, head_dim = queries.shape
    kv_heads = keys.shape[0]
    groups = heads // kv_heads
    q = (queries * config.attention_scale).reshape(kv_heads, groups * rows, head_dim)
    scores = (q @ keys.transpose(0, 2, 1)).reshape(kv_heads, groups, rows, -1)
    if mask is not None:
        scores = mx.where(mask, scores, mx.array(-mx.inf, dtype=scores.dtype))
    probs = mx.softmax(scores.reshape(kv_heads, groups * rows, -1), axis=-1, precise=True)
    out = (probs @ values).reshape(heads, rows, head_dim)
    return out.transpose(1, 0, 2).reshape(rows, heads * head_dim)


def _decoder_layer(
    config: MTPConfig,
    params: Params,
    layer: int,
    x: mx.array,
    keys: mx.array,
    values: mx.array,
    first_position: int,
    mask: mx.array | None,
) -> mx.array:
    p = layer_prefix(layer)
    eps = config.rms_norm_eps
    rows = x.shape[0]
    h = mx.fast.rms_norm(x, params[p + "input_layernorm.weight"], eps)
    bias = params[p + "self_attn.q_proj.bias"] if config.attention_bias else None
    q = linear(h, params[p + "self_attn.q_proj.weight"], bias)
    q = q.reshape(rows, config.num_attention_heads, config.head_dim).transpose(1, 0, 2)
    q = mx.fast.rope(
        q,
        config.head_dim,
        traditional=config.rope_traditional,
        base=config.rope_theta,
        scale=1.0,
        offset=first_position,
    )
    attended = attend_target(config, q, keys, values, mask)
    x = x + linear(attended, params[p + "self_attn.o_proj.weight"])
    h = mx.fast.rms_norm(x, params[p + "pre_feedforward_layernorm.weight"], eps)
    gate = linear(h, params[p + "mlp.gate_proj.weight"])
    up = linear(h, params[p + "mlp.up_proj.weight"])
    return x + linear((gate * mx.sigmoid(gate)) * up, params[p + "mlp.down_proj.weight"])


def mtp_step(
    config: MTPConfig,
    params: Params,
    head_rows: Any,
    embeddings: mx.array,
    state: mx.array,
    keys: mx.array,
    values: mx.array,
    first_position: int,
    mask: mx.array | None = None,
) -> tuple[mx.array, mx.array]:
    """Run one draft step for ``n`` rows; return ``(state [n, backbone], logits [n, candidates])``.

    Row ``i`` drafts for the token at position ``first_position + i + 1``:
    its input token sits at ``first_position + i`` and rotates the queries.
    ``head_rows`` is a ``[candidates, backbone]`` matrix, or a callable for
    a quantized head.
    """
    x = linear(mx.concatenate([embeddings, state], axis=-1), params["pre_projection.weight"])
    for layer in range(config.num_hidden_layers):
        x = _decoder_layer(config, params, layer, x, keys, values, first_position, mask)
    y = linear(x, params["post_projection.weight"])
    new_state = mx.fast.rms_norm(y, params["norm.weight"], config.rms_norm_eps)
    logits = head_rows(new_state) if callable(head_rows) else new_state @ head_rows.T
    return new_state, logits


def parameter_shapes(config: MTPConfig) -> dict[str, tuple[int, ...]]:
    """Return the shape of every trainable tensor, by name."""
    d, b = config.hidden_size, config.backbone_hidden_size
    attn = config.num_attention_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "pre_projection.weight": (d, 2 * b),
        "post_projection.weight": (b, d),
        "norm.weight": (b,),
    }
    for layer in range(config.num_hidden_layers):
        p = layer_prefix(layer)
        shapes[p + "input_layernorm.weight"] = (d,)
        shapes[p + "self_attn.q_proj.weight"] = (attn, d)
        if config.attention_bias:
            shapes[p + "self_attn.q_proj.bias"] = (attn,)
        shapes[p + "self_attn.o_proj.weight"] = (d, attn)
        shapes[p + "pre_feedforward_layernorm.weight"] = (d,)
        shapes[p + "mlp.gate_proj.weight"] = (config.intermediate_size, d)
        shapes[p + "mlp.up_proj.weight"] = (config.intermediate_size, d)
        shapes[p + "mlp.down_proj.weight"] = (d, config.intermediate_size)
    return shapes


def random_parameters(config: MTPConfig, seed: int = 0, scale: float = 0.5) -> Params:
    """Return random parameters for tests: norms near one, matrices scaled by fan-in."""
    key = mx.random.key(seed)
    params: Params = {}
    for name, shape in parameter_shapes(config).items():
        key, sub = mx.random.split(key)
        if name.endswith("norm.weight"):
            params[name] = 1.0 + 0.1 * mx.random.normal(shape, key=sub)
        elif name.endswith(".bias"):
            params[name] = 0.1 * mx.random.normal(shape, key=sub)
        else:
            params[name] = mx.random.normal(shape, key=sub) * (scale / shape[1] ** 0.5)
    mx.eval(list(params.values()))
    return params

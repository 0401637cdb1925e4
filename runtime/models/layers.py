"""Building blocks shared by the architecture modules.

Every block here computes each token row independently of how many rows
are in the call, so a verify pass over k + 1 rows yields, row for row, the
same bits as k + 1 single-row decode steps. The linear layers get this from
the verify kernel (or MLX's own row-by-row quantized matmul), and attention
gets it from `attend`, which computes each query row on its own (in the
kernel extension's `attention_rows` when it is built, with MLX ops for short
calls otherwise).
"""

from __future__ import annotations

from typing import TypeAlias

import mlx.core as mx

from draftwise.runtime.weights import QuantizedTensor, dequantize_float32

# With the kernel extension, every call attends row by row, prefill included.
# A 1,536-token prefill of qwen2.5-coder:1.5b took the same time (30 s) as
# with one masked matmul per layer. A prompt then gives the same bits however
# it is split into prefill chunks, so a session cache extended by a new turn
# equals a cold prefill. Without the extension, calls with at most
# this many rows still go row by row (MLX ops in a Python loop), and longer
# ones use the masked matmul, which rounds differently.
ROW_ATTENTION_MAX_ROWS = 16

Weight: TypeAlias = "mx.array | QuantizedTensor"


def _quantized_matmul(x: mx.array, weight: QuantizedTensor) -> mx.array:
    # Imported here: the kernels package loads the C++ extension on first use.
    from draftwise.runtime.kernels import quantized_matmul

    return quantized_matmul(x, weight)


def linear(x: mx.array, weight: Weight, bias: mx.array | None = None) -> mx.array:
    """Return ``x @ weight.T (+ bias)`` for a float or quantized weight ``[out, in]``."""
    if isinstance(weight, QuantizedTensor):
        y = _quantized_matmul(x, weight)
    else:
        y = x @ weight.T
    if bias is not None:
        y = y + bias
    return y


def embed(token_ids: mx.array, table: Weight) -> mx.array:
    """Gather embedding rows ``[n, hidden]`` for ``token_ids`` ``[n]``."""
    if isinstance(table, QuantizedTensor):
        return dequantize_float32(
            table.weight[token_ids],
            table.scales[token_ids],
            table.biases[token_ids],
            table.group_size,
            table.bits,
        )
    return table[token_ids].astype(mx.float32)


def rms_norm(x: mx.array, weight: mx.array, eps: float) -> mx.array:
    """Normalise each row of ``x`` by its root mean square and scale it by ``weight``.

    One operation in the kernel extension when it is built (on the CPU,
    ``mx.fast.rms_norm`` expands into its reference graph), MLX's otherwise.
    """
    from draftwise.runtime.kernels import rms_norm_rows

    out = rms_norm_rows(x, weight, eps)
    if out is not None:
        return out
    return mx.fast.rms_norm(x, weight, eps)


def silu(x: mx.array) -> mx.array:
    return x * mx.sigmoid(x)


def silu_gated(gate_up: mx.array) -> mx.array:
    """Return ``silu(gate) * up`` for ``gate_up = [gate | up]`` ``[n, 2 * f]``: ``[n, f]``.

    One operation in the kernel extension when it is built (MLX's CPU
    sigmoid runs one element at a time), MLX ops otherwise.
    """
    from draftwise.runtime.kernels import silu_mul

    out = silu_mul(gate_up)
    if out is not None:
        return out
    gate, up = mx.split(gate_up, 2, axis=-1)
    return silu(gate) * up


def gelu_tanh(x: mx.array) -> mx.array:
    """GELU with the tanh approximation, as Gemma uses."""
    return 0.5 * x * (1.0 + mx.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


def rope(x: mx.array, offset: int, theta: float, scale: float, traditional: bool) -> mx.array:
    """Rotate ``x`` ``[heads, n, head_dim]`` for positions ``offset .. offset + n - 1``.

    One operation in the kernel extension when it is built, MLX's otherwise.
    """
    from draftwise.runtime.kernels import rope_rows

    out = rope_rows(x, offset, theta, scale, traditional)
    if out is not None:
        return out
    return mx.fast.rope(
        x, x.shape[-1], traditional=traditional, base=theta, scale=scale, offset=offset
    )


def _softmax_weighted_values(scores: mx.array, values: mx.array) -> mx.array:
    probs = mx.softmax(scores, axis=-1, precise=True)
    return probs @ values


def attend(
    queries: mx.array,
    keys: mx.array,
    values: mx.array,
    *,
    query_start: int,
    key_start: int,
    scale: float,
    window: int = 0,
) -> mx.array:
    """Compute causal attention of new rows over cached keys and values.

    Shapes: ``queries`` ``[heads, n, head_dim]``; ``keys``/``values``
    ``[kv_heads, length, head_dim]`` holding positions ``key_start ..
    key_start + length - 1``, which include the new rows' own positions
    ``query_start .. query_start + n - 1``. Row ``i`` sees positions up to
    ``query_start + i`` and, when ``window`` is set, no further back than
    ``window - 1`` positions. Returns ``[heads, n, head_dim]``.
    """
    num_heads, num_rows, head_dim = queries.shape
    num_kv_heads = keys.shape[0]
    groups = num_heads // num_kv_heads
    from draftwise.runtime.kernels import attention_rows

    out = attention_rows(queries, keys, values, query_start, key_start, scale, window)
    if out is not None:
        return out
    if num_rows <= ROW_ATTENTION_MAX_ROWS:
        return _attend_rows(queries, keys, values, query_start, key_start, scale, window)

    # Block path for prefill: one matmul with an additive causal mask.
    q = (queries * scale).reshape(num_kv_heads, groups * num_rows, head_dim)
    scores = (q @ keys.transpose(0, 2, 1)).reshape(num_kv_heads, groups, num_rows, -1)
    query_pos = mx.arange(query_start, query_start + num_rows)[:, None]
    key_pos = mx.arange(key_start, key_start + keys.shape[1])[None, :]
    visible = key_pos <= query_pos
    if window > 0:
        visible = visible & (key_pos > query_pos - window)
    scores = mx.where(visible, scores, mx.array(-mx.inf, dtype=scores.dtype))
    out = _softmax_weighted_values(
        scores.reshape(num_kv_heads, groups * num_rows, -1), values
    )  # [kv_heads, groups * n, head_dim]
    return out.reshape(num_heads, num_rows, head_dim)


def _attend_rows(
    queries: mx.array,
    keys: mx.array,
    values: mx.array,
    query_start: int,
    key_start: int,
    scale: float,
    window: int,
) -> mx.array:
    num_heads, num_rows, head_dim = queries.shape
    num_kv_heads = keys.shape[0]
    groups = num_heads // num_kv_heads
    outputs = []
    for row in range(num_rows):
        position = query_start + row
        first = max(key_start, position - window + 1) if window > 0 else key_start
        keys_seen = keys[:, first - key_start : position + 1 - key_start]
        values_seen = values[:, first - key_start : position + 1 - key_start]
        q = (queries[:, row] * scale).reshape(num_kv_heads, groups, head_dim)
        scores = q @ keys_seen.transpose(0, 2, 1)  # [kv_heads, groups, seen]
        out = _softmax_weighted_values(scores, values_seen)  # [kv_heads, groups, head_dim]
        outputs.append(out.reshape(num_heads, 1, head_dim))
    return mx.concatenate(outputs, axis=1)

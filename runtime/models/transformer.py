"""A pre-norm decoder-only transformer covering Qwen2, Llama and Gemma 3.

Weights are keyed by GGUF tensor name. The optional tensors of a layer
decide its shape: attention biases (Qwen2), query/key norms and the norms
after attention and MLP (Gemma 3). The architecture modules pass what the
tensors cannot tell: the rope layout and the MLP activation.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import mlx.core as mx

from draftwise.runtime.cache import LayerCache, ModelCache
from draftwise.runtime.errors import ModelFormatError
from draftwise.runtime.models.config import ModelConfig
from draftwise.runtime.models.layers import (
    Weight,
    attend,
    embed,
    gelu_tanh,
    linear,
    rms_norm,
    rope,
    silu,
    silu_gated,
)
from draftwise.runtime.weights import QuantizedTensor

_LAYER_TENSORS_REQUIRED = (
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_norm.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
)


@dataclass(frozen=True)
class ForwardOutput:
    """Logits ``[rows, vocab]`` and, on request, the last hidden states ``[rows, hidden]``."""

    logits: mx.array
    hidden: mx.array | None


class Transformer:
    """Map ``(token_ids, cache) -> logits`` for one sequence."""

    def __init__(
        self,
        config: ModelConfig,
        weights: dict[str, Weight],
        *,
        traditional_rope: bool,
        activation: str,
        name: str = "model",
    ) -> None:
        self.config = config
        self.weights = weights
        self.traditional_rope = traditional_rope
        self.activation = activation
        self.name = name
        # The post-final-norm hidden states of the newest call's output rows,
        # lazy: an MTP drafter reads the row that chose the newest token.
        self.last_hidden: mx.array | None = None
        self._last_cache: weakref.ref[ModelCache] | None = None
        self._check_weights()
        # Per layer, the query/key/value and gate/up projections fused into one
        # matrix each where their formats match (see `_fuse`).
        self._fused: dict[str, tuple[QuantizedTensor, mx.array | None, list[int]]] = {}
        # Names in `weights` that are views of a fused matrix.
        self._views: set[str] = set()
        for layer in range(config.num_layers):
            prefix = f"blk.{layer}."
            self._fuse(prefix + "attn_qkv", [prefix + n for n in ("attn_q", "attn_k", "attn_v")])
            self._fuse(prefix + "ffn_gate_up", [prefix + n for n in ("ffn_gate", "ffn_up")])
        for name, weight in weights.items():
            if name not in self._views:
                weights[name] = self._on_huge_pages(weight)
        self._head: Weight = weights.get("output.weight", weights["token_embd.weight"])

    def _check_weights(self) -> None:
        missing = [] if "token_embd.weight" in self.weights else ["token_embd.weight"]
        missing += [] if "output_norm.weight" in self.weights else ["output_norm.weight"]
        for layer in range(self.config.num_layers):
            for suffix in _LAYER_TENSORS_REQUIRED:
                if f"blk.{layer}.{suffix}" not in self.weights:
                    missing.append(f"blk.{layer}.{suffix}")
        if missing:
            shown = ", ".join(missing[:5])
            raise ModelFormatError(
                f"model '{self.name}' lacks {len(missing)} required tensors ({shown}); "
                f"the file is incomplete or not a {self.config.architecture} model"
            )

    def _fuse(self, key: str, names: list[str]) -> None:
        """Stack the quantized matrices ``names`` (``.weight``) into one, kept under ``key``.

        One kernel call then reads the input rows once and splits its work
        across threads over all output columns, instead of one call per
        matrix. At one row, each call's fixed cost is a large part of its
        time. Every output column is computed exactly as before (the kernel
        reduces each column on its own), so results do not change. The
        original names stay in ``weights`` as views of the fused arrays, so
        the memory is held once. Matrices with different bit widths, group
        sizes or input sizes stay separate.
        """
        parts: list[QuantizedTensor] = []
        for name in names:
            part = self.weights[name + ".weight"]
            if not isinstance(part, QuantizedTensor):
                return
            parts.append(part)
        first = parts[0]
        if any(
            (part.bits, part.group_size, part.shape[1])
            != (first.bits, first.group_size, first.shape[1])
            for part in parts
        ):
            return
        biases = [self._vector(name + ".bias") for name in names]
        present = [b for b in biases if b is not None]
        if present and len(present) != len(biases):
            return
        bias = mx.concatenate(present) if present else None
        rows = [part.shape[0] for part in parts]
        fused = QuantizedTensor(
            mx.concatenate([part.weight for part in parts]),
            mx.concatenate([part.scales for part in parts]),
            mx.concatenate([part.biases for part in parts]),
            first.bits,
            first.group_size,
            (sum(rows), first.shape[1]),
        )
        mx.eval(self.parameters_of(fused), *([] if bias is None else [bias]))
        placed = self._on_huge_pages(fused)
        assert isinstance(placed, QuantizedTensor)
        fused = placed
        start = 0
        views: list[mx.array] = []
        for name, part in zip(names, parts, strict=True):
            end = start + part.shape[0]
            view = QuantizedTensor(
                fused.weight[start:end],
                fused.scales[start:end],
                fused.biases[start:end],
                part.bits,
                part.group_size,
                part.shape,
            )
            self.weights[name + ".weight"] = view
            self._views.add(name + ".weight")
            views += self.parameters_of(view)
            if bias is not None:
                bias_view = bias[start:end]
                self.weights[name + ".bias"] = bias_view
                self._views.add(name + ".bias")
                views.append(bias_view)
            start = end
        mx.eval(views)
        self._fused[key] = (fused, bias, rows)

    @staticmethod
    def _on_huge_pages(weight: Weight) -> Weight:
        """Return ``weight`` with each large array copied onto transparent huge pages.

        One-row decoding streams every weight per token, and on 2 MiB pages it
        takes no TLB miss every 4 KiB (see `draftwise.runtime.kernels.on_huge_pages`).
        The old arrays are freed once nothing else references them. Values
        never change.
        """
        from draftwise.runtime.kernels import on_huge_pages

        if isinstance(weight, QuantizedTensor):
            return QuantizedTensor(
                on_huge_pages(weight.weight),
                on_huge_pages(weight.scales),
                on_huge_pages(weight.biases),
                weight.bits,
                weight.group_size,
                weight.shape,
            )
        return on_huge_pages(weight)

    def limit_head(self, head_rows: int) -> None:
        """Compute logits for token ids below ``head_rows`` only.

        A drafter uses this to skip most of a large output head: it can then
        propose only those tokens, which costs acceptance on rare tokens but
        never changes what the target decides.
        """
        full = self.weights.get("output.weight", self.weights["token_embd.weight"])
        rows = full.shape[0]
        if not 0 < head_rows <= rows:
            raise ValueError(f"head_rows {head_rows} is outside 1..{rows} for model '{self.name}'")
        if isinstance(full, QuantizedTensor):
            self._head = QuantizedTensor(
                full.weight[:head_rows],
                full.scales[:head_rows],
                full.biases[:head_rows],
                full.bits,
                full.group_size,
                (head_rows, full.shape[1]),
            )
        else:
            self._head = full[:head_rows]
        mx.eval(self.parameters_of(self._head))

    @staticmethod
    def parameters_of(weight: Weight) -> list[mx.array]:
        if isinstance(weight, QuantizedTensor):
            return [weight.weight, weight.scales, weight.biases]
        return [weight]

    def make_cache(self, max_rollback: int = 16) -> ModelCache:
        """Create an empty cache; sliding layers keep ``max_rollback`` extra positions."""
        layers = []
        for layer in range(self.config.num_layers):
            window = self.config.sliding_window if self.config.is_sliding_layer(layer) else 0
            layers.append(LayerCache(window=window, max_rollback=max_rollback))
        return ModelCache(layers)

    def __call__(
        self,
        token_ids: mx.array,
        cache: ModelCache,
        *,
        last_row_only: bool = False,
        return_hidden: bool = False,
    ) -> ForwardOutput:
        """Run new tokens ``[n]`` at positions ``cache.kv_offset ..`` and extend the cache.

        Returns logits for every row, or for the last row only when
        ``last_row_only`` is set (prefill), as a lazy graph. The hidden states
        of those rows (after the final norm) stay in ``last_hidden``.
        """
        config = self.config
        hidden = embed(token_ids, self.weights["token_embd.weight"])  # [n, hidden]
        if config.embedding_scale != 1.0:
            hidden = hidden * config.embedding_scale
        for layer, layer_cache in enumerate(cache.layers):
            hidden = self._block(layer, hidden, layer_cache)
        if last_row_only:
            hidden = hidden[-1:]
        hidden = rms_norm(hidden, self._norm("output_norm.weight"), config.rms_norm_eps)
        self.last_hidden = hidden
        self._last_cache = weakref.ref(cache)
        logits = linear(hidden, self._head)  # [n, vocab] or [n, head_rows]
        return ForwardOutput(logits=logits, hidden=hidden if return_hidden else None)

    def forward_many(
        self, token_ids: list[mx.array], caches: list[ModelCache]
    ) -> list[ForwardOutput]:
        """Run several sequences' new tokens as one pass; return one output per sequence.

        The linear layers multiply the rows of every sequence together, so the
        weights are read once for all of them. Attention, rotary positions and
        caches stay per sequence. With quantized weights, every row computes
        the same bits as in a call of its own, because the verify kernel is
        batch invariant.
        NOTE: float (unquantized) weights go through `x @ w.T`, whose rows may
        round differently with the row count.
        ``last_hidden`` and ``last_cache`` are left unset. Call `remember`
        with a sequence's output before a drafter reads them.
        """
        if len(token_ids) != len(caches):
            raise ValueError(f"{len(token_ids)} token arrays but {len(caches)} caches")
        config = self.config
        sizes = [int(ids.shape[0]) for ids in token_ids]
        if any(size == 0 for size in sizes):
            raise ValueError(f"every sequence needs at least one new token, got row counts {sizes}")
        hidden = embed(mx.concatenate(token_ids), self.weights["token_embd.weight"])
        if config.embedding_scale != 1.0:
            hidden = hidden * config.embedding_scale
        for layer in range(config.num_layers):
            layer_caches = [cache.layers[layer] for cache in caches]
            hidden = self._block(layer, hidden, layer_caches, sizes)
        hidden = rms_norm(hidden, self._norm("output_norm.weight"), config.rms_norm_eps)
        logits = linear(hidden, self._head)
        outputs = []
        start = 0
        for size in sizes:
            rows = slice(start, start + size)
            outputs.append(ForwardOutput(logits=logits[rows], hidden=hidden[rows]))
            start += size
        return outputs

    def remember(self, hidden: mx.array, cache: ModelCache) -> None:
        """Record ``hidden`` and ``cache`` as the newest call's, as `__call__` does."""
        self.last_hidden = hidden
        self._last_cache = weakref.ref(cache)

    @property
    def last_cache(self) -> ModelCache | None:
        """Return the newest call's cache while another object still references it, else None."""
        return self._last_cache() if self._last_cache is not None else None

    def _vector(self, name: str) -> mx.array | None:
        """Return a norm weight or bias by name, or None when the model has none."""
        value = self.weights.get(name)
        assert value is None or isinstance(value, mx.array), f"{name} must be a float array"
        return value

    def _norm(self, name: str) -> mx.array:
        value = self._vector(name)
        assert value is not None, f"missing {name}"
        return value

    def _block(
        self,
        layer: int,
        x: mx.array,
        cache: LayerCache | list[LayerCache],
        sizes: list[int] | None = None,
    ) -> mx.array:
        prefix = f"blk.{layer}."
        eps = self.config.rms_norm_eps

        h = rms_norm(x, self._norm(prefix + "attn_norm.weight"), eps)
        h = self._attention(layer, h, cache, sizes)
        post_attention = self._vector(prefix + "post_attention_norm.weight")
        if post_attention is not None:
            h = rms_norm(h, post_attention, eps)
        x = x + h

        h = rms_norm(x, self._norm(prefix + "ffn_norm.weight"), eps)
        h = self._mlp(prefix, h)
        post_ffw = self._vector(prefix + "post_ffw_norm.weight")
        if post_ffw is not None:
            h = rms_norm(h, post_ffw, eps)
        return x + h

    def _attention(
        self,
        layer: int,
        x: mx.array,
        cache: LayerCache | list[LayerCache],
        sizes: list[int] | None = None,
    ) -> mx.array:
        """Compute self-attention over the rows ``x``, which may belong to several sequences.

        With ``sizes``, ``cache`` is a list with each sequence's layer cache,
        and rows ``sum(sizes[:i]) ..`` belong to sequence ``i``.
        """
        config = self.config
        w = self.weights
        prefix = f"blk.{layer}."
        num_rows = x.shape[0]

        fused = self._fused.get(prefix + "attn_qkv")
        if fused is not None:
            weight, bias, sizes_out = fused
            q, k, v = mx.split(
                linear(x, weight, bias), [sizes_out[0], sizes_out[0] + sizes_out[1]], axis=1
            )
        else:
            q = linear(x, w[prefix + "attn_q.weight"], self._vector(prefix + "attn_q.bias"))
            k = linear(x, w[prefix + "attn_k.weight"], self._vector(prefix + "attn_k.bias"))
            v = linear(x, w[prefix + "attn_v.weight"], self._vector(prefix + "attn_v.bias"))
        # [n, heads * head_dim] -> [heads, n, head_dim]
        q = q.reshape(num_rows, config.num_heads, config.head_dim).transpose(1, 0, 2)
        k = k.reshape(num_rows, config.num_kv_heads, config.head_dim).transpose(1, 0, 2)
        v = v.reshape(num_rows, config.num_kv_heads, config.head_dim).transpose(1, 0, 2)

        q_norm = self._vector(prefix + "attn_q_norm.weight")
        k_norm = self._vector(prefix + "attn_k_norm.weight")
        if q_norm is not None and k_norm is not None:
            q = rms_norm(q, q_norm, config.rms_norm_eps)
            k = rms_norm(k, k_norm, config.rms_norm_eps)

        if isinstance(cache, LayerCache):
            out = self._attend_sequence(layer, q, k, v, cache)
        else:
            assert sizes is not None and len(sizes) == len(cache)
            parts = []
            start = 0
            for size, sequence_cache in zip(sizes, cache, strict=True):
                rows = slice(start, start + size)
                parts.append(
                    self._attend_sequence(layer, q[:, rows], k[:, rows], v[:, rows], sequence_cache)
                )
                start += size
            out = mx.concatenate(parts, axis=1)
        out = out.transpose(1, 0, 2).reshape(num_rows, config.num_heads * config.head_dim)
        return linear(out, w[prefix + "attn_output.weight"])

    def _attend_sequence(
        self, layer: int, q: mx.array, k: mx.array, v: mx.array, cache: LayerCache
    ) -> mx.array:
        """Rotate one sequence's rows, extend its cache, attend: ``[heads, n, head_dim]``."""
        config = self.config
        start = cache.offset
        sliding = config.is_sliding_layer(layer)
        theta = config.rope_theta_local if sliding else config.rope_theta
        scale = 1.0 if sliding else config.rope_scale
        q = rope(q, start, theta, scale, self.traditional_rope)
        k = rope(k, start, theta, scale, self.traditional_rope)

        keys, values, key_start = cache.append(k, v)
        return attend(
            q,
            keys,
            values,
            query_start=start,
            key_start=key_start,
            scale=config.attention_scale,
            window=config.sliding_window if sliding else 0,
        )

    def _mlp(self, prefix: str, x: mx.array) -> mx.array:
        w = self.weights
        fused = self._fused.get(prefix + "ffn_gate_up")
        if fused is not None:
            weight, _, rows = fused
            gate_up = linear(x, weight)
            if self.activation != "gelu_tanh" and rows[0] == rows[1]:
                return linear(silu_gated(gate_up), w[prefix + "ffn_down.weight"])
            gate, up = mx.split(gate_up, [rows[0]], axis=1)
        else:
            gate = linear(x, w[prefix + "ffn_gate.weight"])
            up = linear(x, w[prefix + "ffn_up.weight"])
        if self.activation == "gelu_tanh":
            activated = gelu_tanh(gate)
        else:
            activated = silu(gate)
        return linear(activated * up, w[prefix + "ffn_down.weight"])

    @property
    def nbytes(self) -> int:
        total = 0
        for weight in self.weights.values():
            total += weight.nbytes
        return total

    def parameters(self) -> list[mx.array]:
        arrays: list[mx.array] = []
        for weight in self.weights.values():
            if isinstance(weight, QuantizedTensor):
                arrays += [weight.weight, weight.scales, weight.biases]
            else:
                arrays.append(weight)
        return arrays

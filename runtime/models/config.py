"""Architecture hyper-parameters in one neutral form for every model module."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a decoder-only transformer.

    ``sliding_window`` is the attention window of local layers (0: none);
    ``global_layers`` lists the layer indices that attend over the whole
    context when a window is set.
    """

    architecture: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_theta_local: float = 10000.0
    rope_scale: float = 1.0
    context_length: int = 32768
    tied_embeddings: bool = True
    sliding_window: int = 0
    global_layers: tuple[int, ...] = field(default_factory=tuple)
    query_pre_attn_scalar: float = 0.0
    embedding_scale: float = 1.0

    @property
    def attention_scale(self) -> float:
        base = self.query_pre_attn_scalar or float(self.head_dim)
        return float(base**-0.5)

    def is_sliding_layer(self, layer: int) -> bool:
        return self.sliding_window > 0 and layer not in self.global_layers

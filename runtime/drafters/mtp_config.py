"""Configuration of an MTP drafter, named after the Gemma 4 assistant's fields.

A Gemma 4 assistant is a small decoder that drafts from its target's last
hidden state and the embedding of the newest token, attends with queries
only over the target's own KV cache, and shares the target's embedding
table and output head. `MTPConfig` keeps the assistant's field names where
they mean the same thing here:

- ``hidden_size``: the drafter's own width (``pre_projection`` output).
- ``backbone_hidden_size``: the target's hidden size.
- ``num_hidden_layers``, ``num_attention_heads``, ``head_dim``,
  ``intermediate_size``, ``rms_norm_eps``, ``rope_theta``: as in the assistant.

Fields of its own: ``num_key_value_heads`` (the target's, since the drafter
reads the target's keys), ``target_kv_layer`` (the one target layer whose
cache it reads), ``attention_bias`` (Qwen2 query biases),
``candidate_vocab_size`` (rows of the restricted output head) and
``target_name``.

Mapping a Gemma 4 assistant checkpoint onto this still needs: per-layer
query norms and the post-attention and post-feedforward norms, the
``layer_scalar`` per layer, two target layers (the last sliding and the last
global one, chosen by each drafter layer's ``layer_types`` entry) with a
sliding-window mask, ``global_head_dim`` for the global layers, the
embedding scale ``sqrt(backbone_hidden_size)``, GELU instead of SiLU, and
the centroid-masked head in place of a fixed candidate list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class MTPConfig:
    """Shapes and constants of an MTP drafter; see the module docstring for names."""

    hidden_size: int
    backbone_hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    candidate_vocab_size: int
    target_kv_layer: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_traditional: bool = False
    attention_bias: bool = True
    target_name: str = ""

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads {self.num_key_value_heads} (the target's)"
            )

    @property
    def attention_scale(self) -> float:
        return float(self.head_dim**-0.5)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MTPConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"MTP config has unknown fields {unknown}; the file is newer than this code"
            )
        return cls(**data)


def config_for_target(
    target_config: Any,
    *,
    num_hidden_layers: int = 1,
    intermediate_size: int = 2048,
    candidate_vocab_size: int = 4096,
    rope_traditional: bool = False,
    target_name: str = "",
) -> MTPConfig:
    """Return a drafter config whose width equals the target's, so its last layer can seed it."""
    return MTPConfig(
        hidden_size=target_config.hidden_size,
        backbone_hidden_size=target_config.hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=target_config.num_heads,
        num_key_value_heads=target_config.num_kv_heads,
        head_dim=target_config.head_dim,
        intermediate_size=intermediate_size,
        candidate_vocab_size=min(candidate_vocab_size, target_config.vocab_size),
        target_kv_layer=target_config.num_layers - 1,
        rms_norm_eps=target_config.rms_norm_eps,
        rope_theta=target_config.rope_theta,
        rope_traditional=rope_traditional,
        target_name=target_name,
    )

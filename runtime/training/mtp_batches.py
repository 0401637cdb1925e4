"""Feature shards as training windows: inputs and masks for `mtp_step`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from draftwise.runtime.models.layers import embed


@dataclass
class Window:
    """One window's tokens, the target's choices after them, and its features as float32."""

    name: str
    category: str
    token_ids: np.ndarray  # [length]
    target_ids: np.ndarray  # [length]
    embeddings: mx.array  # [length, backbone]
    hidden: mx.array  # [length, backbone]
    keys: mx.array  # [kv_heads, length, head_dim]
    values: mx.array

    @property
    def length(self) -> int:
        return int(self.token_ids.shape[0])


def read_index(features_dir: Path) -> list[dict[str, Any]]:
    path = features_dir / "index.jsonl"
    if not path.exists():
        raise ValueError(
            f"no features in {features_dir}: index.jsonl is missing; run the extraction first"
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def target_choices(features_dir: Path, split: str = "train") -> list[np.ndarray]:
    """Return the target's greedy choices from every shard of ``split``."""
    return [
        np.load(features_dir / entry["shard"])["target_ids"]
        for entry in read_index(features_dir)
        if entry["split"] == split
    ]


def window_from_features(name: str, category: str, features: Any, embedding_table: Any) -> Window:
    """Build an evaluated window from one window's features.

    ``features`` maps token_ids, target_ids, hidden, keys and values to arrays,
    as a feature shard or `mtp_features.extract_window` does.
    """
    token_ids = features["token_ids"]
    window = Window(
        name=name,
        category=category,
        token_ids=token_ids,
        target_ids=features["target_ids"],
        embeddings=embed(mx.array(token_ids.astype(np.uint32)), embedding_table),
        hidden=mx.array(features["hidden"]).astype(mx.float32),
        keys=mx.array(features["keys"]).astype(mx.float32),
        values=mx.array(features["values"]).astype(mx.float32),
    )
    mx.eval(window.embeddings, window.hidden, window.keys, window.values)
    return window


def load_windows(features_dir: Path, split: str, embedding_table: Any) -> list[Window]:
    """Load every shard of ``split`` (``"train"`` or ``"eval"``)."""
    windows = []
    for entry in read_index(features_dir):
        if entry["split"] != split:
            continue
        data = np.load(features_dir / entry["shard"])
        windows.append(
            window_from_features(entry["name"], entry["category"], data, embedding_table)
        )
    return windows


def origin_mask(num_origins: int, length: int) -> mx.array:
    """``[origins, length]``: origin ``t`` sees target keys at positions ``0 .. t``."""
    return mx.arange(length)[None, :] <= mx.arange(num_origins)[:, None]

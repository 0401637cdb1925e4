"""Run the target over training windows and store what the MTP drafter learns from.

One shard per window (``<index>.npz``, float16 features): the window's tokens,
the target's greedy choice after every position, its post-final-norm hidden
states, and the keys and values of the target layer the drafter attends to.
Existing shards are skipped, so an interrupted extraction resumes where it
stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict

import mlx.core as mx
import numpy as np

from draftwise.runtime.training.mtp_data import Document


class WindowFeatures(TypedDict):
    """The arrays of one shard, as `np.savez` stores them under these names."""

    token_ids: np.ndarray  # [length] int32
    target_ids: np.ndarray  # [length] int32
    hidden: np.ndarray  # [length, target hidden size] float16
    keys: np.ndarray  # [kv_heads, length, head_dim] float16
    values: np.ndarray  # [kv_heads, length, head_dim] float16


def extract_window(model: Any, token_ids: list[int], layer: int) -> WindowFeatures:
    """Return the features of one window, computed with a fresh cache."""
    cache = model.make_cache()
    out = model(mx.array(token_ids, dtype=mx.uint32), cache, return_hidden=True)
    choice = mx.argmax(out.logits, axis=-1).astype(mx.int32)
    layer_cache = cache.layers[layer]
    assert layer_cache.keys is not None and layer_cache.values is not None
    length = len(token_ids)
    keys = layer_cache.keys[:, :length].astype(mx.float16)
    values = layer_cache.values[:, :length].astype(mx.float16)
    hidden = out.hidden.astype(mx.float16)
    mx.eval(choice, keys, values, hidden)
    return {
        "token_ids": np.array(token_ids, dtype=np.int32),
        "target_ids": np.array(choice),
        "hidden": np.array(hidden),
        "keys": np.array(keys),
        "values": np.array(values),
    }


def extract_features(
    model: Any,
    documents: Iterable[Document],
    out_dir: Path,
    layer: int,
    max_tokens: int,
    log: Any = print,
) -> int:
    """Write shards until ``max_tokens`` tokens are stored; return the tokens stored."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / "index.jsonl"
    known = _read_index(index_path)
    stored = sum(known.values())
    started = time.perf_counter()
    fresh = 0
    for document in documents:
        if stored >= max_tokens:
            break
        if document.name in known:
            continue
        shard = out_dir / f"{len(known):05d}.npz"
        features = extract_window(model, document.token_ids, layer)
        np.savez(shard, **features)
        entry = {
            "shard": shard.name,
            "name": document.name,
            "split": document.split,
            "category": document.category,
            "tokens": len(document.token_ids),
        }
        with index_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        known[document.name] = len(document.token_ids)
        stored += len(document.token_ids)
        fresh += len(document.token_ids)
        rate = fresh / (time.perf_counter() - started)
        label = f"{document.split} {document.name[:60]}"
        log(f"shard {shard.name} {label} tokens {stored} ({rate:.1f} tokens/s)")
    return stored


def _read_index(index_path: Path) -> dict[str, int]:
    """Return the token count of every stored window, by document name."""
    if not index_path.exists():
        return {}
    known: dict[str, int] = {}
    for number, line in enumerate(index_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        entry = json.loads(line)
        name = entry.get("name") if isinstance(entry, dict) else None
        tokens = entry.get("tokens") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(tokens, int):
            raise ValueError(
                f"{index_path} line {number} is {line[:200]!r}, expected an object with a "
                "string 'name' and an integer 'tokens'; delete the index and its shards "
                "to extract the features again"
            )
        known[name] = tokens
    return known

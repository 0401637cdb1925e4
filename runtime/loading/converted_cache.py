"""A cache of converted weights, keyed by the source file's sha256 and the policy.

An entry is a folder ``<sha256>-<policy>-v<FORMAT_VERSION>`` containing
``weights.safetensors`` (the MLX arrays; a QuantizedTensor is stored as three
arrays named ``<tensor>::weight``, ``::scales`` and ``::biases``),
``tokenizer.json`` and ``model.json`` (metadata, config and per-tensor
layout). An entry is written in a temporary folder and renamed into place,
so a reader sees a complete entry or none.

Source digests are memoized in ``source-sha256.json`` by (resolved path,
size, mtime_ns), so a cached load does not read the whole source file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import structlog

from draftwise.runtime.weights import QuantizedTensor, WeightDict

# Bump when the stored layout or the conversion changes, so old entries are
# ignored instead of misread.
FORMAT_VERSION = 2
DIGEST_MEMO = "source-sha256.json"
HASH_CHUNK_BYTES = 8 << 20
_SEPARATOR = "::"

logger = structlog.get_logger(__name__)


def default_cache_dir() -> Path:
    """Return ``$DRAFTWISE_HOME/converted``, else ``~/.cache/draftwise/converted``."""
    home = os.environ.get("DRAFTWISE_HOME")
    if home:
        return Path(home) / "converted"
    return Path.home() / ".cache" / "draftwise" / "converted"


def file_sha256(path: Path, cache_dir: Path) -> str:
    """Return the hex sha256 of ``path``, memoized by (path, size, mtime_ns).

    A memo that cannot be written is skipped with a warning; an unreadable
    ``path`` raises OSError.
    """
    stat = path.stat()
    key = str(path.resolve())
    memo_path = cache_dir / DIGEST_MEMO
    memo = _read_json(memo_path) or {}
    known = memo.get(key)
    if known and known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns:
        return str(known["sha256"])

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    sha256 = digest.hexdigest()
    # Another process may have added entries meanwhile, so re-read before writing.
    memo = _read_json(memo_path) or {}
    memo[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
    try:
        _write_atomic(memo_path, json.dumps(memo, indent=1).encode())
    except OSError as error:
        logger.warning("source_digest_memo_failed", path=str(memo_path), error=str(error))
    return sha256


@dataclass(frozen=True)
class CachedConversion:
    """What an entry stores besides the source digest and the policy."""

    weights: WeightDict
    document: dict[str, Any]
    tokenizer_json: str | None


def entry_dir(cache_dir: Path, sha256: str, policy: str) -> Path:
    return cache_dir / f"{sha256}-{policy}-v{FORMAT_VERSION}"


def load_entry(cache_dir: Path, sha256: str, policy: str) -> CachedConversion | None:
    """Return the cached conversion, or None when there is no usable entry."""
    folder = entry_dir(cache_dir, sha256, policy)
    document = _read_json(folder / "model.json")
    if document is None or document.get("format_version") != FORMAT_VERSION:
        return None
    try:
        arrays = mx.load(str(folder / "weights.safetensors"))
        assert isinstance(arrays, dict)
        weights = _unflatten(arrays, document["tensors"])
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        logger.warning("converted_cache_entry_unreadable", path=str(folder), error=str(error))
        return None
    tokenizer_path = folder / "tokenizer.json"
    tokenizer_json = tokenizer_path.read_text("utf-8") if tokenizer_path.exists() else None
    return CachedConversion(weights, document, tokenizer_json)


def save_entry(
    cache_dir: Path,
    sha256: str,
    policy: str,
    conversion: CachedConversion,
) -> None:
    """Store a conversion; an existing complete entry for the same key is kept."""
    folder = entry_dir(cache_dir, sha256, policy)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache_dir))
    try:
        arrays, layout = _flatten(conversion.weights)
        mx.save_safetensors(str(staging / "weights.safetensors"), arrays)
        if conversion.tokenizer_json is not None:
            (staging / "tokenizer.json").write_text(conversion.tokenizer_json, "utf-8")
        document = {**conversion.document, "format_version": FORMAT_VERSION, "tensors": layout}
        (staging / "model.json").write_text(json.dumps(document), "utf-8")
        if folder.exists():
            # An entry that load_entry could not use: replace it.
            _remove_quietly(folder)
        os.rename(staging, folder)
    except OSError:
        _remove_quietly(staging)
        if (folder / "model.json").exists():
            return  # another process stored the same entry first
        raise


def _flatten(weights: WeightDict) -> tuple[dict[str, mx.array], dict[str, Any]]:
    arrays: dict[str, mx.array] = {}
    layout: dict[str, Any] = {}
    for name, value in weights.items():
        if isinstance(value, QuantizedTensor):
            arrays[name + _SEPARATOR + "weight"] = value.weight
            arrays[name + _SEPARATOR + "scales"] = value.scales
            arrays[name + _SEPARATOR + "biases"] = value.biases
            layout[name] = {
                "kind": "quantized",
                "bits": value.bits,
                "group_size": value.group_size,
                "shape": list(value.shape),
            }
        else:
            arrays[name] = value
            layout[name] = {"kind": "dense"}
    return arrays, layout


def _unflatten(arrays: dict[str, mx.array], layout: dict[str, Any]) -> WeightDict:
    weights: WeightDict = {}
    for name, spec in layout.items():
        if spec["kind"] == "quantized":
            weights[name] = QuantizedTensor(
                weight=arrays[name + _SEPARATOR + "weight"],
                scales=arrays[name + _SEPARATOR + "scales"],
                biases=arrays[name + _SEPARATOR + "biases"],
                bits=int(spec["bits"]),
                group_size=int(spec["group_size"]),
                shape=(int(spec["shape"][0]), int(spec["shape"][1])),
            )
        else:
            weights[name] = arrays[name]
    return weights


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _remove_quietly(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)

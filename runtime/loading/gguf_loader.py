"""Load a GGUF file into MLX weights, through the converted-weights cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

import structlog

from draftwise.runtime.errors import ModelFormatError, ModelNotFoundError
from draftwise.runtime.loading.converted_cache import (
    CachedConversion,
    default_cache_dir,
    file_sha256,
    load_entry,
    save_entry,
)
from draftwise.runtime.loading.gguf_file import read_gguf, repair_hint
from draftwise.runtime.loading.gguf_tensors import Policy, check_policy, convert_tensor
from draftwise.runtime.loading.gguf_vocab import build_gguf_tokenizer
from draftwise.runtime.loading.loaded_model import LoadedModel, plain_metadata
from draftwise.runtime.loading.model_config import check_architecture, config_from_metadata
from draftwise.runtime.weights import WeightDict

logger = structlog.get_logger(__name__)


def load_gguf(
    path: str | os.PathLike[str],
    *,
    policy: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load the GGUF file at ``path``, converting it once and caching the result.

    ``policy`` is ``"auto"``, ``"exact"``, ``"float32"`` or ``"float32-all"`` (see
    `gguf_tensors`). ``cache_dir`` defaults to `default_cache_dir()`; a cache
    that cannot be written is skipped with a warning.

    Raises `ModelNotFoundError` when the file does not exist,
    `UnsupportedArchitectureError` for an architecture draftwise does not
    implement and `ModelFormatError` for a file that is not GGUF, is
    truncated or corrupt, or contains an unsupported tensor type.
    """
    checked_policy = storage_policy(check_policy(policy))
    source = Path(path)
    if not source.is_file():
        raise ModelNotFoundError(
            f"model file '{source}' does not exist or is not a file; check the path or "
            f"{repair_hint(source)}"
        )
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    started = time.perf_counter()
    sha256 = _source_digest(source, cache)

    cached = load_entry(cache, sha256, checked_policy)
    if cached is not None:
        model = _from_conversion(source, sha256, checked_policy, cached)
        _log_loaded(model, started, from_cache=True)
        return model

    conversion = _convert(source, checked_policy)
    try:
        save_entry(cache, sha256, checked_policy, conversion)
    except OSError as error:
        logger.warning("converted_cache_write_failed", cache_dir=str(cache), error=str(error))
    model = _from_conversion(source, sha256, checked_policy, conversion)
    _log_loaded(model, started, from_cache=False)
    return model


def storage_policy(policy: Policy) -> Policy:
    """Return the policy whose layout is stored for ``policy``.

    ``"auto"`` becomes ``"exact"`` unless the kernel that runs now reads
    float16 group scales itself (see `gguf_tensors`). The converted cache is
    keyed by the returned policy, so each layout has its own entry.
    """
    # NOTE: the choice follows DRAFTWISE_KERNEL_MATH at load time. A process
    # that changes it afterwards keeps the stored layout, and kernels that do
    # not read float16 groups then widen them on every call (same results, slower).
    from draftwise.runtime.kernels import reads_half_groups

    if policy == "auto" and not reads_half_groups():
        return "exact"
    return policy


def _source_digest(source: Path, cache: Path) -> str:
    try:
        return str(file_sha256(source, cache))
    except OSError as error:
        raise ModelFormatError(f"model file '{source}' could not be read: {error}") from error


def _convert(source: Path, policy: Policy) -> CachedConversion:
    header = read_gguf(source)
    architecture = check_architecture(header.metadata.get("general.architecture"), source)
    shapes = {name: info.shape for name, info in header.tensors.items()}
    config = config_from_metadata(header.metadata, shapes, source)
    tokenizer_json = build_gguf_tokenizer(header.metadata, source).to_str()
    weights: WeightDict = {
        name: convert_tensor(header, info, policy) for name, info in header.tensors.items()
    }
    document = {
        "architecture": architecture,
        "metadata": plain_metadata(header.metadata),
        "config": config,
    }
    return CachedConversion(weights, document, tokenizer_json)


def _from_conversion(
    source: Path, sha256: str, policy: str, conversion: CachedConversion
) -> LoadedModel:
    document = conversion.document
    return LoadedModel(
        architecture=str(document["architecture"]),
        metadata=dict(document["metadata"]),
        config=dict(document["config"]),
        weights=conversion.weights,
        source_sha256=sha256,
        path=source,
        policy=policy,
        tokenizer_json=conversion.tokenizer_json,
    )


def _log_loaded(model: LoadedModel, started: float, *, from_cache: bool) -> None:
    logger.info(
        "gguf_weights_loaded",
        path=str(model.path),
        architecture=model.architecture,
        policy=model.policy,
        from_cache=from_cache,
        num_tensors=len(model.weights),
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )

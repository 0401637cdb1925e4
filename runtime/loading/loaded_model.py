"""The loaders' common result: weights, hyper-parameters and tokenizer of one model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from draftwise.runtime.weights import WeightDict

# The vocabulary arrays stay out of LoadedModel.metadata (the tokenizer
# carries them), as does any other array longer than MAX_METADATA_ARRAY.
TOKENIZER_ARRAYS = frozenset(
    {
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.merges",
    }
)
MAX_METADATA_ARRAY = 1024


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to build: every field follows the GGUF conventions.

    ``weights`` is keyed by GGUF tensor name (``token_embd.weight``,
    ``blk.0.attn_q.weight``, ...) with matrices shaped ``[out, in]``. The
    values are stored as llama.cpp's converter writes them, whatever the
    source: Gemma RMSNorm weights already include the ``+1`` (apply them as
    plain multipliers), and Llama query/key rows are permuted so that rotary
    embedding rotates adjacent pairs (``config["rope_traditional"]``).

    ``metadata`` contains the source's metadata as plain Python values under GGUF
    key names (synthesized for safetensors folders), without the vocabulary
    arrays and other arrays longer than MAX_METADATA_ARRAY. ``config`` contains
    the hyper-parameters in neutral names (see `model_config`).
    ``tokenizer_json`` is a serialized `tokenizers.Tokenizer`, or None when
    the source has no tokenizer. ``policy`` is the weight policy of a GGUF
    load ("auto" for folders). ``source_sha256`` identifies the source file
    (for a folder: a digest of its files' digests).
    """

    architecture: str
    metadata: dict[str, Any]
    config: dict[str, Any]
    weights: WeightDict
    source_sha256: str
    path: Path
    policy: str
    tokenizer_json: str | None


def plain_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Return ``metadata`` as JSON-compatible Python values, without long arrays."""
    plain: dict[str, Any] = {}
    for key, value in metadata.items():
        if key in TOKENIZER_ARRAYS:
            continue
        if isinstance(value, np.ndarray | list) and len(value) > MAX_METADATA_ARRAY:
            continue
        plain[key] = _plain(value)
    return plain


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value

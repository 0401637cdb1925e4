"""Build a `tokenizers.Tokenizer` from the vocabulary stored in GGUF metadata.

Two GGUF tokenizer models are supported:

- ``gpt2``: byte-level BPE with the merges list; the pre-tokenizer is the
  split rule that ``tokenizer.ggml.pre`` names (see PRE_TOKENIZER_PATTERNS).
- ``llama``: SentencePiece BPE with per-token scores and byte fallback
  (``<0xNN>`` tokens). The scores order the merges: llama.cpp merges the
  adjacent pair whose concatenation has the highest score, and a
  `tokenizers` BPE model gets the same order when its merge list is sorted
  by that score.

Control tokens (type 3) become special added tokens and user-defined tokens
(type 4) plain added tokens, so both are matched whole wherever they occur in
the text, as llama.cpp does when it parses special tokens. No Unicode
normalization is applied (llama.cpp applies none either), so text with
combining marks round-trips exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers.processors import TemplateProcessing

from draftwise.runtime.errors import ModelFormatError
from draftwise.runtime.loading.gguf_file import repair_hint
from draftwise.runtime.loading.incremental_decoder import SPM_SPACE

# llama.cpp token types (enum llama_token_type).
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4

# Split rules of the byte-level pre-tokenizers, as llama.cpp's llama-vocab.cpp
# defines them for each `tokenizer.ggml.pre` value. The contractions are
# spelled with explicit case classes rather than (?i:...) so that Unicode
# case folding ("'ſ" folding to "'s") cannot add matches.
_CONTRACTIONS = r"'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]"
PRE_TOKENIZER_PATTERNS: dict[str, str] = {
    "qwen2": (
        rf"(?:{_CONTRACTIONS})|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    ),
    "llama-bpe": (
        rf"(?:{_CONTRACTIONS})|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}{{1,3}}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    ),
}
# Pre-tokenizers built from `tokenizers` components instead of one pattern:
# "smollm" splits every digit apart, then applies the GPT-2 rule.
COMPOSED_PRE_TOKENIZERS = ("smollm", "gpt-2", "default")


def build_gguf_tokenizer(metadata: dict[str, Any], path: Path) -> Tokenizer:
    """Return the tokenizer described by the ``tokenizer.*`` keys of a GGUF file.

    Raises `ModelFormatError` when the keys are missing, inconsistent (a merge
    of unknown tokens) or name a tokenizer model or pre-tokenizer that
    draftwise does not implement.
    """
    try:
        return _build(metadata, path)
    except ModelFormatError:
        raise
    except Exception as error:
        # `tokenizers` reports invalid input with a bare Exception.
        raise ModelFormatError(
            f"GGUF file '{path}' has an invalid tokenizer ({error}); {repair_hint(path)}"
        ) from error


def _build(metadata: dict[str, Any], path: Path) -> Tokenizer:
    kind = metadata.get("tokenizer.ggml.model")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if kind is None or tokens is None:
        raise ModelFormatError(
            f"GGUF file '{path}' has no tokenizer (tokenizer.ggml.model/tokens missing); "
            "use a GGUF converted with its tokenizer"
        )
    token_types = np.asarray(
        metadata.get("tokenizer.ggml.token_type", np.full(len(tokens), TOKEN_NORMAL)),
        dtype=np.int64,
    )
    if kind == "gpt2":
        tokenizer = _byte_level_bpe(metadata, tokens, path)
    elif kind == "llama":
        tokenizer = _sentencepiece_bpe(metadata, tokens, token_types)
    else:
        raise ModelFormatError(
            f"GGUF file '{path}' uses tokenizer model '{kind}'; draftwise implements "
            "'gpt2' (byte-level BPE) and 'llama' (SentencePiece BPE)"
        )
    _add_special_tokens(tokenizer, tokens, token_types)
    _set_post_processor(tokenizer, metadata, tokens)
    return tokenizer


def _byte_level_bpe(metadata: dict[str, Any], tokens: Sequence[str], path: Path) -> Tokenizer:
    pre = str(metadata.get("tokenizer.ggml.pre", "default"))
    merges = [tuple(merge.split(" ", 1)) for merge in metadata.get("tokenizer.ggml.merges", [])]
    vocab = {token: index for index, token in enumerate(tokens)}
    model = models.BPE(
        vocab=vocab,
        merges=merges,
        fuse_unk=False,
        byte_fallback=False,
        # Llama 3 style vocabularies keep a word whole when it is a token.
        ignore_merges=pre == "llama-bpe",
    )
    tokenizer = Tokenizer(model)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in PRE_TOKENIZER_PATTERNS:
        split = pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERNS[pre]), behavior="isolated")
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    elif pre == "smollm":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    elif pre in COMPOSED_PRE_TOKENIZERS:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        known = ", ".join(sorted([*PRE_TOKENIZER_PATTERNS, *COMPOSED_PRE_TOKENIZERS]))
        raise ModelFormatError(
            f"GGUF file '{path}' names the pre-tokenizer '{pre}', which draftwise does not "
            f"implement (known: {known})"
        )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece_bpe(
    metadata: dict[str, Any], tokens: Sequence[str], token_types: np.ndarray
) -> Tokenizer:
    scores = np.asarray(metadata.get("tokenizer.ggml.scores", -np.arange(len(tokens))))
    vocab = {token: index for index, token in enumerate(tokens)}
    unknown_id = int(metadata.get("tokenizer.ggml.unknown_token_id", 0))
    model = models.BPE(
        vocab=vocab,
        merges=_merges_by_score(tokens, token_types, scores),
        unk_token=tokens[unknown_id],
        fuse_unk=True,
        byte_fallback=True,
    )
    tokenizer = Tokenizer(model)
    steps: list[normalizers.Normalizer] = []
    if metadata.get("tokenizer.ggml.add_space_prefix", True):
        steps.append(normalizers.Prepend(SPM_SPACE))
    steps.append(normalizers.Replace(" ", SPM_SPACE))
    tokenizer.normalizer = normalizers.Sequence(steps)
    decode_steps: list[decoders.Decoder] = [
        decoders.Replace(SPM_SPACE, " "),
        decoders.ByteFallback(),
        decoders.Fuse(),
    ]
    if metadata.get("tokenizer.ggml.add_space_prefix", True):
        decode_steps.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(decode_steps)
    return tokenizer


def _merges_by_score(
    tokens: Sequence[str], token_types: np.ndarray, scores: np.ndarray
) -> list[tuple[str, str]]:
    """Return every split of a normal token into two normal tokens, best score first.

    Splits of the same token are ordered by the ids of their two halves, so
    the order is deterministic.
    """
    # Gemma 3 has 262,144 tokens and 513,511 such splits, so the loop works on
    # ids and plain floats and sorts number tuples only.
    normal_indices: list[int] = np.flatnonzero(token_types == TOKEN_NORMAL).tolist()
    normal_ids = {tokens[index]: index for index in normal_indices}
    find_id = normal_ids.get
    negated_scores = (-scores.astype(np.float64)).tolist()
    candidates: list[tuple[float, int, int]] = []
    for token, token_id in normal_ids.items():
        for cut in range(1, len(token)):
            left_id = find_id(token[:cut])
            if left_id is None:
                continue
            right_id = find_id(token[cut:])
            if right_id is not None:
                candidates.append((negated_scores[token_id], left_id, right_id))
    candidates.sort()
    return [(tokens[left_id], tokens[right_id]) for _, left_id, right_id in candidates]


def _add_special_tokens(tokenizer: Tokenizer, tokens: Sequence[str], types: np.ndarray) -> None:
    control = [
        AddedToken(tokens[index], special=True, normalized=False)
        for index in np.flatnonzero(types == TOKEN_CONTROL).tolist()
    ]
    user_defined = [
        AddedToken(tokens[index], special=False, normalized=False)
        for index in np.flatnonzero(types == TOKEN_USER_DEFINED).tolist()
    ]
    tokenizer.add_special_tokens(control)
    tokenizer.add_tokens(user_defined)


def _set_post_processor(
    tokenizer: Tokenizer, metadata: dict[str, Any], tokens: Sequence[str]
) -> None:
    """Add BOS/EOS on `encode(add_special_tokens=True)` as the GGUF flags request."""
    bos_id = metadata.get("tokenizer.ggml.bos_token_id")
    eos_id = metadata.get("tokenizer.ggml.eos_token_id")
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False)) and bos_id is not None
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False)) and eos_id is not None
    if not (add_bos or add_eos):
        return
    pieces, special = ["$A"], []
    if add_bos:
        pieces.insert(0, tokens[int(bos_id)])  # type: ignore[arg-type]
        special.append((tokens[int(bos_id)], int(bos_id)))  # type: ignore[arg-type]
    if add_eos:
        pieces.append(tokens[int(eos_id)])  # type: ignore[arg-type]
        special.append((tokens[int(eos_id)], int(eos_id)))  # type: ignore[arg-type]
    single = " ".join(pieces)
    tokenizer.post_processor = TemplateProcessing(
        single=single, pair=f"{single} $B:1", special_tokens=list(dict.fromkeys(special))
    )

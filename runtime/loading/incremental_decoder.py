"""Token-to-bytes tables and incremental, UTF-8-safe decoding of token streams.

A BPE token stands for a fixed byte string; only the concatenation of those
bytes is text. The decoder below keeps the bytes of an unfinished UTF-8
character until the token that completes it arrives, so a streamed emoji
that spans several tokens appears once, whole.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer as BackendTokenizer

from draftwise.runtime.errors import ModelFormatError

SPM_SPACE = "\u2581"  # "▁", SentencePiece's visible space
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def byte_level_alphabet() -> dict[str, int]:
    """Return the map from GPT-2 byte-level characters to the bytes they encode.

    Printable Latin-1 bytes (``!``-``~``, ``¡``-``¬``, ``®``-``ÿ``) stand for
    themselves; the other 68 bytes are shifted to code points 256 and up, in
    byte order.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    alphabet = {chr(byte): byte for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            alphabet[chr(256 + shifted)] = byte
            shifted += 1
    return alphabet


@dataclass(frozen=True)
class TokenBytes:
    """The bytes of every token id, and how the full decode treats the start.

    ``strip_leading_space``: the decoder drops one leading space of the
    whole text (SentencePiece vocabularies that add a space prefix).
    """

    table: tuple[bytes, ...]
    special_ids: frozenset[int]
    strip_leading_space: bool

    def join(self, token_ids: Iterable[int], *, skip_special_tokens: bool = False) -> bytes:
        skipped = self.special_ids if skip_special_tokens else frozenset()
        return b"".join(self.table[token_id] for token_id in token_ids if token_id not in skipped)


def token_bytes_from_backend(backend: BackendTokenizer) -> TokenBytes:
    """Build the table of a `tokenizers.Tokenizer` with a BPE model.

    Raises `ModelFormatError` for a model or decoder whose tokens are not
    fixed byte strings that draftwise knows how to read.
    """
    model_kind = type(backend.model).__name__
    if model_kind != "BPE":
        raise ModelFormatError(
            f"tokenizer model '{model_kind}' is not supported; draftwise decodes BPE "
            "tokenizers (byte-level or SentencePiece with byte fallback)"
        )
    decoder = backend.decoder
    decoder_kinds = _decoder_kinds(json.loads(decoder.__getstate__()) if decoder else None)
    convert: Callable[[str], bytes]
    if "ByteLevel" in decoder_kinds:
        convert = functools.partial(_byte_level_bytes, alphabet=byte_level_alphabet())
    elif "ByteFallback" in decoder_kinds:
        convert = _sentencepiece_bytes
    else:
        raise ModelFormatError(
            f"tokenizer decoder {sorted(decoder_kinds)} is not supported; draftwise decodes "
            "byte-level BPE and SentencePiece BPE with byte fallback"
        )
    table = [b""] * backend.get_vocab_size(with_added_tokens=True)
    for token, token_id in backend.get_vocab(with_added_tokens=False).items():
        table[token_id] = convert(token)
    added = backend.get_added_tokens_decoder()
    for token_id, added_token in added.items():
        table[token_id] = added_token.content.encode("utf-8")
    special = frozenset(token_id for token_id, added_token in added.items() if added_token.special)
    return TokenBytes(tuple(table), special, "Strip" in decoder_kinds)


def _decoder_kinds(decoder: Any) -> set[str]:
    if not isinstance(decoder, dict):
        return set()
    kinds = {str(decoder.get("type"))}
    for child in decoder.get("decoders", []) or []:
        kinds |= _decoder_kinds(child)
    return kinds


def _byte_level_bytes(token: str, alphabet: dict[str, int]) -> bytes:
    try:
        return bytes(alphabet[character] for character in token)
    except KeyError:
        # Not a byte-level string (a vocabulary padding entry): keep its text.
        return token.encode("utf-8")


def _sentencepiece_bytes(token: str) -> bytes:
    match = _BYTE_TOKEN.fullmatch(token)
    if match:
        return bytes([int(match.group(1), 16)])
    return token.replace(SPM_SPACE, " ").encode("utf-8")


class IncrementalDecoder:
    """Turn token ids into text as they arrive, never splitting a UTF-8 character.

    `feed` returns the text completed by the new tokens; bytes of an
    unfinished character are held back. `flush` returns what is still held,
    with U+FFFD for an incomplete character. The concatenated output equals
    `Tokenizer.decode` of all the ids fed.
    """

    def __init__(self, token_bytes: TokenBytes, *, skip_special_tokens: bool = False) -> None:
        self._token_bytes = token_bytes
        self._skip_special_tokens = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._strip_pending = token_bytes.strip_leading_space

    def feed(self, token_ids: int | Sequence[int]) -> str:
        """Add one token id or several and return the text they complete."""
        ids = [token_ids] if isinstance(token_ids, int) else token_ids
        data = self._token_bytes.join(ids, skip_special_tokens=self._skip_special_tokens)
        return self._strip(self._utf8.decode(data))

    def flush(self) -> str:
        """Return the held-back text; the decoder can be fed again afterwards."""
        return self._strip(self._utf8.decode(b"", final=True))

    def _strip(self, text: str) -> str:
        if self._strip_pending and text:
            self._strip_pending = False
            if text.startswith(" "):
                return text[1:]
        return text

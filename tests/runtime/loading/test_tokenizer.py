"""Tokenizers built from GGUF metadata: round trips, special tokens, streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from loading_builders import TinyVocab

from draftwise.runtime.errors import ModelFormatError
from draftwise.runtime.loading import Tokenizer, load_gguf, load_tokenizer
from draftwise.runtime.loading.gguf_vocab import build_gguf_tokenizer
from draftwise.runtime.loading.incremental_decoder import byte_level_alphabet

ROUND_TRIP_TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n\tprint(i)  \r\n",
    "trailing spaces   \n\n\n  and tabs\t\t\n",
    "CJK 你好，世界 and kana カタカナ",
    "emoji 😀🎉👩‍💻 and flags 🇩🇪",
    "combining e\u0301 a\u0308 n\u0303 (not normalized)",
    "x = 'it''s' # I'll we've THEY'RE",
    "",
    " ",
    "\u00a0non-breaking\u2003em-space",
]


@pytest.fixture
def qwen_tokenizer(qwen_gguf: Path, cache_dir: Path) -> Tokenizer:
    return load_tokenizer(load_gguf(qwen_gguf, cache_dir=cache_dir))


@pytest.fixture
def gemma_tokenizer(gemma_gguf: Path, cache_dir: Path) -> Tokenizer:
    return load_tokenizer(load_gguf(gemma_gguf, cache_dir=cache_dir))


def stream(tokenizer: Tokenizer, token_ids: list[int], **options: bool) -> list[str]:
    decoder = tokenizer.incremental_decoder(**options)
    pieces = [decoder.feed(token_id) for token_id in token_ids]
    pieces.append(decoder.flush())
    return pieces


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_byte_level_round_trip(qwen_tokenizer: Tokenizer, text: str) -> None:
    token_ids = qwen_tokenizer.encode(text)
    assert qwen_tokenizer.decode(token_ids) == text
    assert "".join(stream(qwen_tokenizer, token_ids)) == text


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_sentencepiece_round_trip(gemma_tokenizer: Tokenizer, text: str) -> None:
    token_ids = gemma_tokenizer.encode(text)
    assert gemma_tokenizer.decode(token_ids) == text
    assert "".join(stream(gemma_tokenizer, token_ids)) == text


def test_byte_level_special_tokens_in_text(
    qwen_tokenizer: Tokenizer, byte_vocab: TinyVocab
) -> None:
    start = byte_vocab.tokens.index("<|im_start|>")
    end = byte_vocab.tokens.index("<|im_end|>")
    token_ids = qwen_tokenizer.encode("<|im_start|>user\nhi<|im_end|>")

    assert token_ids[0] == start
    assert token_ids[-1] == end
    assert start not in token_ids[1:-1]
    assert qwen_tokenizer.decode(token_ids) == "<|im_start|>user\nhi<|im_end|>"
    assert qwen_tokenizer.decode(token_ids, skip_special_tokens=True) == "user\nhi"


def test_byte_level_ids_and_sizes(qwen_tokenizer: Tokenizer, byte_vocab: TinyVocab) -> None:
    assert qwen_tokenizer.vocab_size == len(byte_vocab.tokens)
    assert qwen_tokenizer.bos_token_id == 0
    assert qwen_tokenizer.eos_token_id == 2
    assert qwen_tokenizer.eos_token_ids == {0, 2}
    assert qwen_tokenizer.special_token_ids == {0, 1, 2}
    assert qwen_tokenizer.encode("hi", add_special_tokens=True) == qwen_tokenizer.encode("hi")


def test_byte_level_follows_merges(qwen_tokenizer: Tokenizer, byte_vocab: TinyVocab) -> None:
    # "Ġreturn" is a frequent word of the training corpus, so BPE merged it.
    assert " return" in {
        qwen_tokenizer.decode([token_id]) for token_id in qwen_tokenizer.encode(" return")
    }
    assert len(qwen_tokenizer.encode(" return")) == 1


def test_sentencepiece_merges_by_score(gemma_tokenizer: Tokenizer) -> None:
    token_ids = gemma_tokenizer.encode("hello world text")
    pieces = [gemma_tokenizer.id_to_token(token_id) for token_id in token_ids]
    assert pieces == ["hello", "▁world", "▁text"]


def test_sentencepiece_byte_fallback(gemma_tokenizer: Tokenizer) -> None:
    token_ids = gemma_tokenizer.encode("é")
    pieces = [gemma_tokenizer.id_to_token(token_id) for token_id in token_ids]
    assert pieces == ["<0xC3>", "<0xA9>"]


def test_sentencepiece_bos_and_user_defined_tokens(gemma_tokenizer: Tokenizer) -> None:
    token_ids = gemma_tokenizer.encode("hello\n\nworld", add_special_tokens=True)
    pieces = [gemma_tokenizer.id_to_token(token_id) for token_id in token_ids]
    assert pieces[0] == "<bos>"
    assert "\n\n" in pieces
    assert gemma_tokenizer.eos_token_ids == {
        gemma_tokenizer.token_to_id("<eos>"),
        gemma_tokenizer.token_to_id("<end_of_turn>"),
    }


def test_incremental_decoder_holds_partial_emoji(qwen_tokenizer: Tokenizer) -> None:
    # The training corpus has no rocket, so its UTF-8 bytes take several tokens.
    text = "ok 🚀 done"
    token_ids = qwen_tokenizer.encode(text)
    assert len(qwen_tokenizer.encode("🚀")) > 1

    pieces = stream(qwen_tokenizer, token_ids)
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)
    assert any(piece == "" for piece in pieces[:-1])


def test_incremental_decoder_several_ids_per_feed(qwen_tokenizer: Tokenizer) -> None:
    text = "emoji 😀🎉👩‍💻 and 你好"
    token_ids = qwen_tokenizer.encode(text)
    decoder = qwen_tokenizer.incremental_decoder()
    pieces = [decoder.feed(token_ids[start : start + 3]) for start in range(0, len(token_ids), 3)]
    assert "".join(pieces) + decoder.flush() == text


def test_incremental_decoder_flush_incomplete(qwen_tokenizer: Tokenizer) -> None:
    token_ids = qwen_tokenizer.encode("🎉")
    decoder = qwen_tokenizer.incremental_decoder()
    assert decoder.feed(token_ids[:-1]) == ""
    assert decoder.flush() == "\ufffd"
    assert qwen_tokenizer.decode(token_ids[:-1]) == "\ufffd"


def test_incremental_decoder_feed_after_flush(qwen_tokenizer: Tokenizer) -> None:
    decoder = qwen_tokenizer.incremental_decoder()
    first = qwen_tokenizer.encode("🚀 one")
    second = qwen_tokenizer.encode("two 😀")
    assert decoder.feed(first) + decoder.flush() == "🚀 one"
    assert decoder.feed(second) + decoder.flush() == "two 😀"


def test_incremental_decoder_skips_special_tokens(qwen_tokenizer: Tokenizer) -> None:
    token_ids = qwen_tokenizer.encode("<|im_start|>assistant\nhi 😀<|im_end|>")
    pieces = stream(qwen_tokenizer, token_ids, skip_special_tokens=True)
    assert "".join(pieces) == qwen_tokenizer.decode(token_ids, skip_special_tokens=True)
    assert "".join(pieces) == "assistant\nhi 😀"


def test_byte_level_alphabet_covers_every_byte() -> None:
    alphabet = byte_level_alphabet()
    assert sorted(alphabet.values()) == list(range(256))
    assert alphabet["Ġ"] == ord(" ")
    assert alphabet["Ċ"] == ord("\n")
    assert alphabet["a"] == ord("a")


def test_build_tokenizer_unknown_model(byte_vocab: TinyVocab) -> None:
    metadata = {"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": byte_vocab.tokens}
    with pytest.raises(ModelFormatError, match="'bert'"):
        build_gguf_tokenizer(metadata, Path("model.gguf"))


def test_build_tokenizer_unknown_pre_tokenizer(byte_vocab: TinyVocab) -> None:
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "tekken",
        "tokenizer.ggml.tokens": byte_vocab.tokens,
        "tokenizer.ggml.merges": byte_vocab.merges,
    }
    with pytest.raises(ModelFormatError, match="'tekken'"):
        build_gguf_tokenizer(metadata, Path("model.gguf"))


def test_build_tokenizer_merge_of_unknown_tokens(byte_vocab: TinyVocab) -> None:
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.tokens": byte_vocab.tokens,
        "tokenizer.ggml.token_type": np.ones(len(byte_vocab.tokens)),
        "tokenizer.ggml.merges": ["zz qq"],
    }
    with pytest.raises(ModelFormatError, match="invalid tokenizer"):
        build_gguf_tokenizer(metadata, Path("model.gguf"))


def test_build_tokenizer_missing_vocabulary() -> None:
    with pytest.raises(ModelFormatError, match="has no tokenizer"):
        build_gguf_tokenizer({"general.architecture": "qwen2"}, Path("model.gguf"))


@pytest.mark.parametrize(
    ("pre", "text", "expected_words"),
    [
        ("qwen2", "abc 123", ["abc", "Ġ", "1", "2", "3"]),
        ("llama-bpe", "abc 12345", ["abc", "Ġ", "123", "45"]),
        ("smollm", "abc 123", ["abc", "Ġ", "1", "2", "3"]),
        ("gpt-2", "abc 123", ["abc", "Ġ123"]),
    ],
)
def test_byte_level_pre_tokenizers_split_digits(
    byte_vocab: TinyVocab, pre: str, text: str, expected_words: list[str]
) -> None:
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": byte_vocab.tokens,
        "tokenizer.ggml.merges": byte_vocab.merges,
    }
    tokenizer = build_gguf_tokenizer(metadata, Path("model.gguf"))
    assert tokenizer.pre_tokenizer is not None
    words = [word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text)]
    assert words == expected_words

"""Stop rules and incremental detokenization."""

from __future__ import annotations

import pytest

from draftwise.runtime.errors import GenerationError
from draftwise.runtime.termination import IncrementalDetokenizer, StopConditions


# A byte-level toy tokenizer: token i is byte i.
def decode_bytes(token_ids):
    return bytes(token_ids).decode("utf-8", errors="replace")


def tokens_of(text):
    return list(text.encode("utf-8"))


def test_detokenizer_never_splits_utf8():
    text = "naïve 🐍 代码\ttab  "
    detokenizer = IncrementalDetokenizer(decode_bytes)
    pieces = [detokenizer.add(t) for t in tokens_of(text)]
    pieces.append(detokenizer.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_detokenizer_flush_releases_incomplete_tail():
    detokenizer = IncrementalDetokenizer(decode_bytes)
    assert detokenizer.add(0xF0) == ""
    assert detokenizer.flush() == "\ufffd"


def test_stop_conditions_max_tokens_cuts_run():
    stops = StopConditions(decode_bytes, frozenset(), max_tokens=3)
    result = stops.feed(tokens_of("abcdef"))
    assert result.num_kept == 3
    assert result.text == "abc"
    assert result.finish_reason == "length"


def test_stop_conditions_eos_mid_run():
    eos = 0
    stops = StopConditions(decode_bytes, frozenset({eos}), max_tokens=10)
    result = stops.feed([*tokens_of("ab"), eos, *tokens_of("cd")])
    assert result.num_kept == 3
    assert result.text == "ab"
    assert result.finish_reason == "eos"


def test_stop_string_spanning_feeds_is_held_back():
    stops = StopConditions(decode_bytes, frozenset(), stop=["END"], max_tokens=20)
    first = stops.feed(tokens_of("xyE"))
    assert first.text == "xy"
    second = stops.feed(tokens_of("N"))
    assert second.text == ""
    third = stops.feed(tokens_of("Dzz"))
    assert third.num_kept == 1
    assert third.text == ""
    assert third.finish_reason == "stop"


def test_stop_string_false_start_released():
    stops = StopConditions(decode_bytes, frozenset(), stop=["END"], max_tokens=20)
    assert stops.feed(tokens_of("aEN")).text == "a"
    assert stops.feed(tokens_of("x")).text == "ENx"


def test_stop_string_earliest_of_several():
    stops = StopConditions(decode_bytes, frozenset(), stop=["cd", "b"], max_tokens=20)
    result = stops.feed(tokens_of("abcd"))
    assert result.num_kept == 2
    assert result.text == "a"


def test_feed_after_finish_rejected():
    stops = StopConditions(decode_bytes, frozenset(), max_tokens=1)
    stops.feed([65])
    with pytest.raises(GenerationError, match="already finished"):
        stops.feed([66])


@pytest.mark.parametrize("max_tokens", [0, -3])
def test_invalid_max_tokens_rejected(max_tokens):
    with pytest.raises(GenerationError, match=f"max_tokens {max_tokens}"):
        StopConditions(decode_bytes, frozenset(), max_tokens=max_tokens)


def test_empty_stop_string_rejected():
    with pytest.raises(GenerationError, match="empty"):
        StopConditions(decode_bytes, frozenset(), stop=[""], max_tokens=4)

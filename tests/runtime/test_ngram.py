"""The n-gram index proposes what followed the newest earlier match of the suffix."""

from __future__ import annotations

import pytest

from draftwise.runtime.drafters.ngram import NgramDrafter, NgramIndex


def test_ngram_lookup_copies_continuation():
    index = NgramIndex(min_n=2, max_n=4)
    index.extend([1, 2, 3, 4, 5, 9, 1, 2, 3])
    assert index.lookup(3) == [4, 5, 9]


def test_ngram_prefers_longest_match():
    index = NgramIndex(min_n=1, max_n=3)
    # "7 8" followed by 1 at the start; "6 7 8" followed by 2 later.
    index.extend([7, 8, 1, 6, 7, 8, 2, 5, 6, 7, 8])
    assert index.lookup(1) == [2]


def test_ngram_prefers_newest_occurrence():
    index = NgramIndex(min_n=2, max_n=2)
    index.extend([1, 2, 3, 1, 2, 4, 1, 2])
    assert index.lookup(1) == [4]


def test_ngram_match_reports_suffix_length():
    index = NgramIndex(min_n=2, max_n=4)
    index.extend([1, 2, 3, 4, 5, 9, 1, 2, 3])
    assert index.match(2) == ([4, 5], 3)


def test_ngram_no_match_proposes_nothing():
    index = NgramIndex(min_n=2, max_n=3)
    index.extend([1, 2, 3, 4])
    assert index.lookup(4) == []
    assert index.match(4) == ([], 0)


def test_ngram_incremental_equals_batch():
    tokens = [i % 7 for i in range(200)] + [3, 3, 1]
    batch = NgramIndex()
    batch.extend(tokens)
    incremental = NgramIndex()
    for token in tokens:
        incremental.extend([token])
    assert incremental.lookup(6) == batch.lookup(6)
    assert incremental._next_position == batch._next_position


def test_ngram_drafter_follows_commits():
    drafter = NgramDrafter(min_n=2, max_n=3)
    drafter.start([5, 6, 7, 8, 5, 6])
    assert drafter.peek(2) == [7, 8]
    drafter.commit(2, [7, 8, 1])
    assert drafter.peek(3) == []
    drafter.commit(0, [5, 6])
    assert drafter.peek(2) == [7, 8]


def test_ngram_invalid_lengths_rejected():
    with pytest.raises(ValueError, match=r"n-gram lengths 3\.\.2"):
        NgramIndex(min_n=3, max_n=2)

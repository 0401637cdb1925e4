"""Draft from the context: copy what followed the newest earlier match of the last tokens.

Coding agents re-emit what they just read (whole-file edits, search/replace
blocks, repeated names), so a suffix match over the prompt and the output
so far proposes long runs that the target accepts, at almost no cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx

from draftwise.runtime.drafters.base import DraftProposal
from draftwise.runtime.sampling import SamplingParams


class NgramIndex:
    """Positions that follow each n-gram of a growing token sequence, for n in a range.

    Appending a token registers the n-grams that end just before it, so the
    index grows by ``max_n - min_n + 1`` entries per token and never
    rescans the sequence.
    """

    def __init__(self, min_n: int = 2, max_n: int = 5) -> None:
        if not 1 <= min_n <= max_n:
            raise ValueError(
                f"n-gram lengths {min_n}..{max_n} are invalid; need 1 <= min_n <= max_n"
            )
        self.min_n = min_n
        self.max_n = max_n
        self.tokens: list[int] = []
        # n-gram -> start of the newest continuation after it
        self._next_position: dict[tuple[int, ...], int] = {}

    def extend(self, token_ids: Sequence[int]) -> None:
        for token_id in token_ids:
            position = len(self.tokens)
            for n in range(self.min_n, min(self.max_n, position) + 1):
                self._next_position[tuple(self.tokens[position - n : position])] = position
            self.tokens.append(token_id)

    def match(self, max_tokens: int) -> tuple[list[int], int]:
        """Return up to ``max_tokens`` tokens that followed the longest matching suffix.

        Also returns that suffix's length n (0, with no tokens, when nothing matches).
        """
        length = len(self.tokens)
        for n in range(min(self.max_n, length), self.min_n - 1, -1):
            start = self._next_position.get(tuple(self.tokens[length - n :]))
            if start is None or start >= length:
                continue
            return self.tokens[start : start + max_tokens], n
        return [], 0

    def lookup(self, max_tokens: int) -> list[int]:
        """Return up to ``max_tokens`` tokens that followed the longest matching suffix."""
        return self.match(max_tokens)[0]


class NgramDrafter:
    """A `Drafter` over the committed tokens: deterministic proposals, q one-hot."""

    def __init__(self, min_n: int = 2, max_n: int = 8) -> None:
        self.name = "ngram"
        self.index = NgramIndex(min_n, max_n)

    def start(self, prompt_ids: Sequence[int], prefiller: Any = None) -> None:
        self.index = NgramIndex(self.index.min_n, self.index.max_n)
        self.index.extend(prompt_ids)

    def peek(self, num_tokens: int) -> list[int]:
        """Return the proposal `propose` would make, without building a graph."""
        return self.index.lookup(num_tokens)

    def match_length(self) -> int:
        """Return the length of the suffix the next proposal would follow (0: none)."""
        return self.index.match(1)[1]

    def propose(
        self, num_tokens: int, sampling: SamplingParams, keys: list[mx.array] | None
    ) -> DraftProposal:
        tokens = self.index.lookup(num_tokens) if num_tokens > 0 else []
        return DraftProposal(mx.array(tokens, dtype=mx.uint32), None)

    def commit(self, num_accepted: int, committed_ids: Sequence[int]) -> None:
        self.index.extend(committed_ids)

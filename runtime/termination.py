"""End-of-generation rules applied token by token: EOS, stop strings, max_tokens.

`StopConditions.feed` takes a run of tokens: one from plain decoding, or a
whole accepted speculative run. It decides how many of them to keep and
which text may be streamed. A run that crosses a stop point is therefore
cut exactly where plain decoding would have stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from draftwise.runtime.errors import GenerationError


class IncrementalDetokenizer:
    """Turn token ids into text as they arrive, never splitting a UTF-8 character.

    ``decode`` maps token ids to text and renders an incomplete UTF-8
    sequence as U+FFFD, as byte-level tokenizers do. Text ending in U+FFFD
    is held back until the next token completes it or `flush` is called.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._token_ids: list[int] = []
        # Old and new text are both decoded from prefix_start on. A tokenizer
        # that renders a token differently at the start of a sequence (a
        # leading space) then gets the same context for both.
        self._prefix_start = 0
        self._read_end = 0

    def add(self, token_id: int) -> str:
        """Append one token and return the text that is now complete."""
        self._token_ids.append(token_id)
        return self._advance(hold_incomplete=True)

    def flush(self) -> str:
        """Return whatever text is still held back, replacement characters included."""
        return self._advance(hold_incomplete=False)

    def _advance(self, *, hold_incomplete: bool) -> str:
        if self._read_end == len(self._token_ids):
            return ""
        prefix_text = self._decode(self._token_ids[self._prefix_start : self._read_end])
        text = self._decode(self._token_ids[self._prefix_start :])
        if hold_incomplete and text.endswith("\ufffd"):
            return ""
        self._prefix_start = self._read_end
        self._read_end = len(self._token_ids)
        return text[len(prefix_text) :]


@dataclass(frozen=True)
class FeedResult:
    """How much of a fed run to keep, the text it releases, and why generation ended."""

    num_kept: int
    text: str
    finish_reason: str | None  # "eos", "stop", "length" or None while generating


class StopConditions:
    """Track one request's output and apply its stop rules.

    Kept tokens include an EOS token or the token that completes a stop
    string. Released text never includes the EOS token's text or the stop
    string itself, and text that may still turn out to begin a stop string
    is held back until it cannot.
    """

    def __init__(
        self,
        decode: Callable[[Sequence[int]], str],
        eos_token_ids: frozenset[int],
        stop: Sequence[str] = (),
        max_tokens: int = 256,
    ) -> None:
        if max_tokens < 1:
            raise GenerationError(f"max_tokens {max_tokens} must be at least 1")
        if any(not s for s in stop):
            raise GenerationError("stop strings must not be empty; remove the empty string")
        self._detokenizer = IncrementalDetokenizer(decode)
        self._eos_token_ids = eos_token_ids
        self._stop = tuple(stop)
        self._max_tokens = max_tokens
        self._text = ""  # all text decoded so far
        self._released = 0  # characters of _text already returned
        self.num_generated = 0
        self.finish_reason: str | None = None

    @property
    def remaining(self) -> int:
        """Tokens still allowed before max_tokens."""
        return self._max_tokens - self.num_generated

    def feed(self, token_ids: Sequence[int]) -> FeedResult:
        """Apply the rules to ``token_ids`` in order, stopping at the first that ends generation."""
        if self.finish_reason is not None:
            raise GenerationError("generation already finished; start a new request")
        kept = 0
        released: list[str] = []
        for token_id in token_ids:
            kept += 1
            self.num_generated += 1
            if token_id in self._eos_token_ids:
                self.finish_reason = "eos"
                released.append(self._release_all())
                break
            self._text += self._detokenizer.add(token_id)
            stop_at = self._find_stop()
            if stop_at is not None:
                self.finish_reason = "stop"
                released.append(self._release_until(stop_at))
                break
            if self.num_generated >= self._max_tokens:
                self.finish_reason = "length"
                released.append(self._release_all())
                break
            released.append(self._release_safe())
        return FeedResult(num_kept=kept, text="".join(released), finish_reason=self.finish_reason)

    def _find_stop(self) -> int | None:
        if not self._stop:
            return None
        longest = max(len(s) for s in self._stop)
        search_from = max(0, self._released - longest)
        hits = [i for s in self._stop if (i := self._text.find(s, search_from)) >= 0]
        return min(hits) if hits else None

    def _release_until(self, end: int) -> str:
        out = self._text[self._released : end]
        self._released = max(self._released, end)
        return out

    def _release_all(self) -> str:
        self._text += self._detokenizer.flush()
        stop_at = self._find_stop()
        if stop_at is not None:
            return self._release_until(stop_at)
        return self._release_until(len(self._text))

    def _release_safe(self) -> str:
        """Release text up to the longest suffix that could begin a stop string."""
        end = len(self._text)
        for stop in self._stop:
            for length in range(min(len(stop) - 1, end - self._released), 0, -1):
                if self._text.endswith(stop[:length]):
                    end = min(end, len(self._text) - length)
                    break
        return self._release_until(end)

"""The tuner actor: speculation and latency statistics across all sessions.

Each session's draft length is chosen per round by the `DraftLengthTuner`
(or `AdaptiveTuner`) that the session keeps between its requests, on the
device thread, inside the round. This actor collects what those rounds
and the finished requests report, for `Runtime.stats()`: acceptance,
draft lengths per model, time to first token, prefill and decode speed.
"""

from __future__ import annotations

import collections
from typing import Any

import structlog
import trio

from draftwise.actors.messages import RequestFinished, RoundRecorded

log = structlog.get_logger("draftwise.actors")

# Recent samples kept per statistic.
SAMPLES = 256


class TunerActor:
    """Aggregate `RoundRecorded` and `RequestFinished` events; `run` until the inbox closes."""

    def __init__(self, inbox_size: int) -> None:
        self.inbox, self._receive = trio.open_memory_channel[Any](inbox_size)
        self.finished_requests = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.completion_tokens = 0
        self.num_drafted = 0
        self.num_accepted = 0
        self.rounds = 0
        self.draft_lengths: dict[str, collections.deque[int]] = {}
        self.ttft_s: collections.deque[float] = collections.deque(maxlen=SAMPLES)
        self._prefill_rates: collections.deque[float] = collections.deque(maxlen=SAMPLES)
        self._decode_rates: collections.deque[float] = collections.deque(maxlen=SAMPLES)

    async def run(self) -> None:
        log.info("actor_started", actor="tuner")
        async with self._receive:
            async for message in self._receive:
                match message:
                    case RoundRecorded():
                        self._on_round_recorded(message)
                    case RequestFinished():
                        self._on_request_finished(message)
                    case _:
                        raise AssertionError(f"tuner actor got an unknown message: {message!r}")
        log.info("actor_stopped", actor="tuner", rounds=self.rounds)

    def _on_round_recorded(self, message: RoundRecorded) -> None:
        self.rounds += 1
        lengths = self.draft_lengths.setdefault(message.model, collections.deque(maxlen=SAMPLES))
        lengths.append(message.draft_length)

    def _on_request_finished(self, message: RequestFinished) -> None:
        self.finished_requests += 1
        self.prompt_tokens += message.prompt_tokens
        self.cached_tokens += message.cached_tokens
        self.completion_tokens += message.completion_tokens
        self.num_drafted += message.num_drafted
        self.num_accepted += message.num_accepted
        if message.ttft_s is not None:
            self.ttft_s.append(message.ttft_s)
        if message.prefill_s > 0 and message.prefill_tokens > 0:
            self._prefill_rates.append(message.prefill_tokens / message.prefill_s)
        decoded = message.completion_tokens - 1
        if message.decode_s > 0 and decoded > 0:
            self._decode_rates.append(decoded / message.decode_s)

    def summary(self) -> dict[str, Any]:
        """Return the counters that `Runtime.stats()` reports."""
        rate = self.num_accepted / self.num_drafted if self.num_drafted else 0.0
        return {
            "finished_requests": self.finished_requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "num_drafted": self.num_drafted,
            "num_accepted": self.num_accepted,
            "acceptance_rate": rate,
            "prefill_tokens_per_s": _mean(self._prefill_rates),
            "decode_tokens_per_s": _mean(self._decode_rates),
            "draft_length": {
                model: _mean(lengths) for model, lengths in self.draft_lengths.items()
            },
            "ttft_s": list(self.ttft_s),
        }


def _mean(values: Any) -> float:
    return float(sum(values) / len(values)) if values else 0.0

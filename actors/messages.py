"""Messages between the runtime's actors: one msgspec Struct per intent.

These stay in-process: fields may hold callables, caches and trio
channels, so they are never encoded. Requests are nouns or `...Requested`,
events are past tense, and replies end in `Reply`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

Phase = Literal["prefill", "decode"]


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every in-process actor message."""


# Scheduler


class StepRequested(Message, frozen=True):
    """Run ``work`` on the device when this session's turn comes.

    ``work`` is a `PrefillSlice`, a decode round (`RoundStep`, run by the
    `VerifierActor`, possibly with other sessions' rounds), or any other
    callable, which runs as it is on the device thread.
    """

    session_id: str
    request_id: str
    phase: Phase
    work: Callable[[], Any] | PrefillSlice
    reply: Any  # trio.MemorySendChannel[StepReply]


class PrefillSlice(Message, frozen=True):
    """Work of a prefill step: run ``token_ids`` into ``cache`` with the model ``role`` names.

    The owner of that model runs it: the `VerifierActor` for "target", the
    `DraftActor` for "draft". The step returns (logits after the last
    token, seconds).
    """

    role: Literal["target", "draft"]
    cache: Any  # ModelCache
    token_ids: tuple[int, ...]


class StepReply(Message, frozen=True):
    """The value ``work()`` returned, or the exception it raised."""

    value: Any = None
    error: BaseException | None = None


# CacheActor


class SessionLeaseRequested(Message, frozen=True):
    """Reserve a session for one request: a named one, the best-matching idle one, or a new one."""

    request_id: str
    session_id: str | None
    prompt_ids: tuple[int, ...]
    reuse_prefix: bool
    reply: Any  # trio.MemorySendChannel[SessionLeaseReply]


class SessionLeaseReply(Message, frozen=True):
    """The leased session state, or the error code and message that refused it."""

    state: Any = None  # SessionState
    fork_from: Any = None  # SessionState whose caches to copy first; it stays leased till then
    error_code: str | None = None
    error_message: str | None = None


class SessionReleased(Message, frozen=True):
    """A request finished with its session; ``token_ids`` is everything the caches may hold."""

    session_id: str
    request_id: str
    token_ids: tuple[int, ...]
    caches_valid: bool


class SessionFinishing(Message, frozen=True):
    """A request sent its Done and now runs its last token into the caches.

    The session stays leased for that one step. A lease or close that names
    it, or a prefix request that matches it best, waits for the release
    instead of being refused or starting cold.
    """

    session_id: str
    request_id: str
    token_ids: tuple[int, ...]  # everything the caches hold once the step ran


class CacheGrew(Message, frozen=True):
    """A step appended to a session's caches: recount bytes and enforce the budget."""

    session_id: str


class SessionCloseRequested(Message, frozen=True):
    """Free a session's caches and forget it; the reply carries the freed bytes or -1."""

    session_id: str
    reply: Any  # trio.MemorySendChannel[int]


# TunerActor


class RoundRecorded(Message, frozen=True):
    """One decode step of a request: what was drafted, accepted, and how long it took."""

    model: str
    session_id: str
    draft_length: int
    num_drafted: int
    num_accepted: int
    round_s: float


class RequestFinished(Message, frozen=True):
    """A request's totals, for the runtime-wide counters."""

    model: str
    session_id: str
    request_id: str
    finish_reason: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    num_drafted: int
    num_accepted: int
    ttft_s: float | None
    prefill_tokens: int
    prefill_s: float
    decode_s: float


# Verifier and draft actors


class RoundsRequested(Message, frozen=True):
    """Run one round of each session in ``rounds`` (RoundStep objects) in shared target passes.

    The reply is a list with one ``outcome.Outcome`` per round.
    """

    rounds: list[Any]
    reply: Any


class PrefillRequested(Message, frozen=True):
    """Run a `PrefillSlice` with the receiving actor's model; the reply is a `StepReply`."""

    work: PrefillSlice
    reply: Any


class DrafterRequested(Message, frozen=True):
    """Build a session's drafter and tuner; the reply is ``(drafter, tuner)`` or an exception."""

    drafter: str
    speculation: str | int
    reply: Any

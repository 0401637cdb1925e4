"""The cache actor: every session's KV caches, their bytes and the memory budget.

A session outlives its requests: after one finishes, its caches hold the
prompt and output, and the next request on it prefills only the tokens
past the longest common prefix. The actor leases a session to one
request at a time. When the caches of all sessions exceed the budget, it
evicts the caches of the least recently used idle sessions. An evicted
session keeps its id, and its next request prefills from scratch.
Sessions in use are never evicted. A session whose request has sent its
Done but still runs its last token into the caches is "finishing": a lease
or close that would pick it waits until it is released.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from draftwise.actors.messages import (
    CacheGrew,
    SessionCloseRequested,
    SessionFinishing,
    SessionLeaseReply,
    SessionLeaseRequested,
    SessionReleased,
)
from draftwise.protocol import ErrorCode
from draftwise.runtime.cache import ModelCache

log = structlog.get_logger("draftwise.actors")

# A prefix request forks a session only when continuing it would discard at
# least this many of its cached tokens.
FORK_MIN_TAIL = 8


def common_prefix_length(a: Any, b: Any) -> int:
    """Return how many leading tokens ``a`` and ``b`` share."""
    length = min(len(a), len(b))
    for index in range(length):
        if a[index] != b[index]:
            return index
    return length


@dataclass(eq=False)
class SessionState:
    """One conversation's caches; ``token_ids[:cache.kv_offset]`` are what each cache holds."""

    session_id: str
    token_ids: list[int] = field(default_factory=list)
    target_cache: ModelCache | None = None
    draft_cache: ModelCache | None = None
    # Drafters and their tuners by speculation mode, so a session keeps what it learned.
    drafters: dict[Any, Any] = field(default_factory=dict)
    request_id: str | None = None  # the request holding the lease
    last_used: int = 0
    finishing: bool = False  # the lease holder sent its Done and runs its last token
    # Lease and close messages that wait for a finishing session's release.
    waiting: list[Any] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        caches = (self.target_cache, self.draft_cache)
        return sum(cache.nbytes for cache in caches if cache is not None)

    def cached_token_ids(self) -> list[int]:
        """Tokens whose keys and values the target cache holds."""
        if self.target_cache is None:
            return []
        return self.token_ids[: self.target_cache.kv_offset]

    def drop_caches(self) -> int:
        """Free both caches and the drafters that point into them; return the bytes freed."""
        freed = self.nbytes
        self.target_cache = None
        self.draft_cache = None
        self.drafters.clear()
        return freed


class CacheActor:
    """Own the sessions: `run` handles lease, release, growth and close messages."""

    def __init__(self, budget_bytes: int, max_sessions: int, inbox_size: int) -> None:
        self.budget_bytes = budget_bytes
        self.max_sessions = max_sessions
        self.inbox, self._receive = trio.open_memory_channel[Any](inbox_size)
        self.sessions: dict[str, SessionState] = {}
        self.cache_bytes = 0
        self.evictions = 0
        self._clock = 0
        self._warned_over_budget = False

    async def run(self) -> None:
        log.info("actor_started", actor="cache", cache_budget_bytes=self.budget_bytes)
        async with self._receive:
            async for message in self._receive:
                match message:
                    case SessionLeaseRequested():
                        self._on_lease_requested(message)
                    case SessionReleased():
                        self._on_session_released(message)
                    case SessionFinishing():
                        self._on_session_finishing(message)
                    case CacheGrew():
                        self._enforce_budget()
                    case SessionCloseRequested():
                        self._on_session_close_requested(message)
                    case _:
                        raise AssertionError(f"cache actor got an unknown message: {message!r}")
        log.info("actor_stopped", actor="cache", sessions=len(self.sessions))

    @property
    def active_requests(self) -> int:
        return sum(1 for state in self.sessions.values() if state.request_id is not None)

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _on_session_finishing(self, message: SessionFinishing) -> None:
        state = self.sessions.get(message.session_id)
        if state is not None and state.request_id == message.request_id:
            state.finishing = True
            state.token_ids = list(message.token_ids)

    def _wait_for_release(self, state: SessionState, message: Any) -> bool:
        """Queue ``message`` on ``state`` if it is finishing, and return whether it was queued."""
        if not state.finishing:
            return False
        state.waiting.append(message)
        return True

    def _on_lease_requested(self, message: SessionLeaseRequested) -> None:
        if message.session_id is not None:
            state = self.sessions.get(message.session_id)
            if state is None:
                return self._refuse(
                    message,
                    ErrorCode.UNKNOWN_SESSION,
                    f"session '{message.session_id}' does not exist (closed, or never created "
                    "here); omit session_id to start a new session",
                )
            if self._wait_for_release(state, message):
                return None
        elif message.reuse_prefix:
            match = self._best_idle_match(message.prompt_ids)
            if match is not None and self._wait_for_release(match, message):
                return None
            if match is not None and self._should_fork(match, message.prompt_ids):
                return self._lease_fork(message, match)
            state = match or self._new_session()
        else:
            state = self._new_session()
        if state is None:
            return self._refuse(
                message,
                ErrorCode.OVERLOADED,
                f"all {self.max_sessions} sessions are busy; retry later or raise max_sessions",
            )
        if state.request_id is not None:
            return self._refuse(
                message,
                ErrorCode.INVALID_REQUEST,
                f"session '{state.session_id}' is busy with request '{state.request_id}'; "
                "wait for its Done or cancel it first",
            )
        state.request_id = message.request_id
        state.last_used = self._tick()
        message.reply.send_nowait(SessionLeaseReply(state=state))

    def _refuse(self, message: SessionLeaseRequested, code: str, text: str) -> None:
        message.reply.send_nowait(SessionLeaseReply(error_code=code, error_message=text))

    def _best_idle_match(self, prompt_ids: tuple[int, ...]) -> SessionState | None:
        """Return the idle or finishing session sharing the longest prefix with ``prompt_ids``."""
        best, best_length = None, 0
        for state in self.sessions.values():
            if state.request_id is not None and not state.finishing:
                continue
            length = common_prefix_length(prompt_ids, state.cached_token_ids())
            newer = best is not None and state.last_used > best.last_used
            if length > best_length or (length == best_length > 0 and newer):
                best, best_length = state, length
        return best

    def _should_fork(self, match: SessionState, prompt_ids: tuple[int, ...]) -> bool:
        """Return whether ``prompt_ids`` leaves the cached tokens of ``match`` part way.

        Continuing ``match`` would then discard its own conversation's tail
        (two conversations with one system prompt, say), so the request gets
        a copy of the cache instead, unless no session slot is free for it.
        """
        cached = match.cached_token_ids()
        shared = common_prefix_length(prompt_ids, cached)
        # A short tail is usually the re-tokenized edge of the last turn (text
        # decoded, then encoded again with what follows it), so it is not kept.
        return shared + FORK_MIN_TAIL <= len(cached) and len(self.sessions) < self.max_sessions

    def _lease_fork(self, message: SessionLeaseRequested, source: SessionState) -> None:
        state = self._new_session()
        assert state is not None  # _should_fork checked that a slot is free
        # The source stays leased until the forking request has copied its caches.
        source.request_id = f"{message.request_id}/fork"
        state.request_id = message.request_id
        state.last_used = self._tick()
        message.reply.send_nowait(SessionLeaseReply(state=state, fork_from=source))

    def _new_session(self) -> SessionState | None:
        if len(self.sessions) >= self.max_sessions:
            idle = [s for s in self.sessions.values() if s.request_id is None]
            if not idle:
                return None
            oldest = min(idle, key=lambda s: s.last_used)
            self._forget(oldest, reason="max_sessions")
        state = SessionState(session_id=f"s-{secrets.token_hex(6)}")
        self.sessions[state.session_id] = state
        return state

    def _on_session_released(self, message: SessionReleased) -> None:
        state = self.sessions.get(message.session_id)
        if state is None or state.request_id != message.request_id:
            log.warning(
                "session_release_unmatched",
                actor="cache",
                session_id=message.session_id,
                request_id=message.request_id,
            )
            return
        state.token_ids = list(message.token_ids)
        if not message.caches_valid:
            state.drop_caches()
        state.request_id = None
        state.finishing = False
        state.last_used = self._tick()
        self._enforce_budget()
        waiting, state.waiting = state.waiting, []
        for queued in waiting:
            if isinstance(queued, SessionCloseRequested):
                self._on_session_close_requested(queued)
            else:
                self._on_lease_requested(queued)

    def _on_session_close_requested(self, message: SessionCloseRequested) -> None:
        state = self.sessions.get(message.session_id)
        if state is None:
            message.reply.send_nowait(-1)
            return
        if self._wait_for_release(state, message):
            return
        if state.request_id is not None:
            message.reply.send_nowait(-2)
            return
        freed = self._forget(state, reason="closed")
        message.reply.send_nowait(freed)

    def _forget(self, state: SessionState, *, reason: str) -> int:
        freed = state.drop_caches()
        del self.sessions[state.session_id]
        self._recount()
        log.info(
            "session_closed",
            actor="cache",
            session_id=state.session_id,
            reason=reason,
            freed_cache_bytes=freed,
        )
        return freed

    def _recount(self) -> None:
        self.cache_bytes = sum(state.nbytes for state in self.sessions.values())

    def _enforce_budget(self) -> None:
        self._recount()
        while self.cache_bytes > self.budget_bytes:
            idle = [s for s in self.sessions.values() if s.request_id is None and s.nbytes > 0]
            if not idle:
                if not self._warned_over_budget:
                    self._warned_over_budget = True
                    log.warning(
                        "cache_over_budget",
                        actor="cache",
                        cache_bytes=self.cache_bytes,
                        cache_budget_bytes=self.budget_bytes,
                        reason="every session is busy",
                    )
                return
            oldest = min(idle, key=lambda s: s.last_used)
            freed = oldest.drop_caches()
            self.evictions += 1
            self._recount()
            log.info(
                "session_evicted",
                actor="cache",
                session_id=oldest.session_id,
                freed_cache_bytes=freed,
                cache_bytes=self.cache_bytes,
            )


async def ask(inbox: Any, make_message: Any) -> Any:
    """Send ``make_message(reply_channel)`` to ``inbox`` and return the single reply."""
    send, receive = trio.open_memory_channel[Any](1)
    with trio.CancelScope(shield=True):
        await inbox.send(make_message(send))
        async with receive:
            return await receive.receive()

"""The embedded runtime: load models, start the actors, serve generate requests.

    async with Runtime.open(RuntimeConfig(model="qwen2.5-coder:1.5b")) as rt:
        async for reply in rt.generate(GenerateRequest(request_id="1", prompt="def f(")):
            ...

`Runtime.open` starts a device thread for all MLX work and these actors as
trio tasks: the `VerifierActor` (owns the target model: runs decode rounds
and the target's prefill slices), the `DraftActor` (owns the draft model:
builds each session's drafter and runs the draft cache's prefill slices),
the `Scheduler` (decides which sessions' steps run next and batches
concurrent rounds), the `CacheActor` and the `TunerActor`, plus one
`SessionRequest` task per generate request. A session task leases its caches
from the cache actor, sends each prefill slice and each round to the
scheduler as one step, reports rounds and totals to the tuner actor, and
releases the session before its last reply. `SyncRuntime` (in
`runtime_sync`) is the blocking facade. Every refusal is a
`RuntimeRequestError` whose code is a protocol `ErrorCode` value.

A round's drafting runs in the verifier's device call, not as a separate
draft-actor step: a speculative round
(`draftwise.runtime.round.round_steps`) is one lazy MLX graph with a single
evaluation, and drafting in a step of its own would wait for the device
twice per round. The draft actor builds the drafters that the round uses.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import structlog
import trio

from draftwise.actors.cache_actor import CacheActor, ask
from draftwise.actors.device import DeviceThread, settle_weights
from draftwise.actors.draft_actor import DraftActor
from draftwise.actors.messages import SessionCloseRequested
from draftwise.actors.requests import RequestPlanner
from draftwise.actors.runtime_errors import RuntimeRequestError
from draftwise.actors.scheduler import Scheduler
from draftwise.actors.session import RuntimeParts, SessionRequest
from draftwise.actors.tuner_actor import TunerActor
from draftwise.actors.verifier_actor import VerifierActor
from draftwise.protocol import ChatMessage, Chunk, Done, ErrorCode, GenerateRequest, ModelInfo
from draftwise.protocol.codec import new_request_id
from draftwise.runtime.engine import DRAFTERS, Engine
from draftwise.runtime.errors import DraftwiseError
from draftwise.runtime.language_model import LanguageModel, load_language_model
from draftwise.runtime.log import ensure_logging

__all__ = ["Runtime", "RuntimeConfig", "RuntimeRequestError", "SyncRuntime"]

log = structlog.get_logger("draftwise.actors")

# Replies a session may queue before it waits for its consumer.
REPLY_BUFFER = 64


class RuntimeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Runtime settings: the models to load, the cache budget and the scheduling of sessions."""

    model: str
    """Target: catalogue name, GGUF path or folder."""
    draft: str | None = None
    """Draft model name; None: n-gram drafts only."""
    drafter: str = "auto"
    """"auto", "draft_model" or "ngram" ("mtp" is rejected, because no MTP drafter is hosted)."""
    policy: str = "auto"
    """Weight policy of the loader."""
    store_dir: str | None = None
    cache_budget_bytes: int = 4 << 30
    """KV bytes over all sessions; caches of the least recently used idle sessions go first."""
    max_sessions: int = 64
    prefill_chunk: int = 256
    """Tokens per scheduled prefill slice."""
    batch_sessions: int = 8
    """Most sessions whose decode rounds share one target pass; 1 runs every round alone."""

    def validate(self) -> None:
        """Raise `RuntimeRequestError` (invalid_request) naming the first bad field."""
        problems = [
            (self.drafter not in DRAFTERS, f"drafter '{self.drafter}' is not one of {DRAFTERS}"),
            (self.cache_budget_bytes < 0, f"cache_budget_bytes {self.cache_budget_bytes} < 0"),
            (self.max_sessions < 1, f"max_sessions {self.max_sessions} must be at least 1"),
            (self.prefill_chunk < 1, f"prefill_chunk {self.prefill_chunk} must be at least 1"),
            (self.batch_sessions < 1, f"batch_sessions {self.batch_sessions} must be at least 1"),
        ]
        for bad, text in problems:
            if bad:
                raise RuntimeRequestError(ErrorCode.INVALID_REQUEST, f"{text}; fix RuntimeConfig")
        from draftwise.runtime.drafters.mtp_catalogue import is_mtp_drafter

        if self.drafter == "mtp" or (self.draft is not None and is_mtp_drafter(self.draft)):
            # NOTE: the draft actor builds draft-model and n-gram drafters only.
            named = (
                f"draft '{self.draft}' is an MTP drafter"
                if self.draft is not None and is_mtp_drafter(self.draft)
                else f"drafter '{self.drafter}' needs an MTP drafter"
            )
            raise RuntimeRequestError(
                ErrorCode.INVALID_REQUEST,
                f"{named}, which the runtime and server do not host yet; "
                "use it with `draftwise generate --draft` or `draftwise bench --draft`, or "
                "serve a draft model such as qwen2.5-coder:0.5b",
            )


class Runtime:
    """A running runtime; get one from `Runtime.open`, never construct it directly."""

    def __init__(
        self, config: RuntimeConfig, parts: RuntimeParts, device: DeviceThread, nursery: Any
    ) -> None:
        self.config = config
        self._parts = parts
        self._device = device
        self._nursery = nursery
        self._planner = RequestPlanner(config, parts.target, parts.draft)
        self._active: dict[int, Any] = {}  # id(plan) -> plan
        self._started = time.monotonic()
        self._draining = False

    @classmethod
    def open(cls, config: RuntimeConfig, *, models: dict[str, LanguageModel] | None = None) -> Any:
        """Return an async context manager that loads the models and runs the actors.

        ``models`` supplies loaded models by name (tests pass tiny ones);
        others load on the device thread. Leaving the block cancels running
        requests at their next round boundary and stops every actor.
        """
        return cls._open(config, models or {})

    @classmethod
    @asynccontextmanager
    async def _open(
        cls, config: RuntimeConfig, models: dict[str, LanguageModel]
    ) -> AsyncIterator[Runtime]:
        ensure_logging()
        config.validate()
        settle_weights(models.values())
        with DeviceThread() as device:
            target = await _load(device, config, config.model, models)
            draft = (
                None if config.draft is None else await _load(device, config, config.draft, models)
            )
            Engine(target, draft, config.drafter)  # raises on an unusable combination
            inbox_size = config.max_sessions + 16
            verifier = VerifierActor(target, device, inbox_size)
            drafts = DraftActor(draft, device, inbox_size)
            scheduler = Scheduler(device, inbox_size, config.batch_sessions, verifier, drafts)
            cache = CacheActor(config.cache_budget_bytes, config.max_sessions, inbox_size * 4)
            tuner = TunerActor(inbox_size * 4)
            parts = RuntimeParts(
                target,
                draft,
                scheduler,
                cache,
                tuner,
                config.prefill_chunk,
                verifier=verifier,
                drafts=drafts,
            )
            # The body's own exception is re-raised outside the nurseries, so the
            # caller sees it as raised rather than wrapped in ExceptionGroups.
            body_error: BaseException | None = None
            async with trio.open_nursery() as actors:
                for actor in (scheduler, verifier, drafts, cache, tuner):
                    actors.start_soon(actor.run)
                try:
                    async with trio.open_nursery() as sessions:
                        runtime = cls(config, parts, device, sessions)
                        log.info(
                            "runtime_started",
                            actor="runtime",
                            model=target.name,
                            draft=None if draft is None else draft.name,
                        )
                        try:
                            yield runtime
                        except BaseException as error:
                            body_error = error
                        finally:
                            runtime._draining = True
                            for plan in runtime._active.values():
                                plan.cancelled = True
                            sessions.cancel_scope.cancel()
                finally:
                    # The scheduler first: the model actors serve its last step.
                    for actor in (scheduler, verifier, drafts, cache, tuner):
                        actor.inbox.close()
            log.info("runtime_stopped", actor="runtime")
            if body_error is not None:
                raise body_error

    async def generate(
        self, request: GenerateRequest, *, reuse_prefix: bool = False
    ) -> AsyncIterator[Chunk | Done]:
        """Yield `Chunk` replies (one per round, or one in all without streaming), then one `Done`.

        Raises `RuntimeRequestError` for bad input before any model work, and
        for a failure in this request's rounds. Leaving the iterator early
        or cancelling the task stops the request at its next round boundary.
        ``reuse_prefix`` with no session_id continues the idle session whose
        cache shares the longest prefix with the prompt.
        """
        if self._draining:
            raise RuntimeRequestError(
                ErrorCode.OVERLOADED, "the runtime is closing; send the request to a new one"
            )
        plan = self._planner.plan(request, reuse_prefix)
        send, receive = trio.open_memory_channel[Any](REPLY_BUFFER)
        self._active[id(plan)] = plan
        session = SessionRequest(self._parts, plan, send)
        self._nursery.start_soon(session.run)
        finished = False
        try:
            async with receive:
                async for reply in receive:
                    if isinstance(reply, RuntimeRequestError):
                        finished = True
                        raise reply
                    finished = isinstance(reply, Done)
                    yield reply
                    if finished:
                        return
            raise RuntimeRequestError(
                ErrorCode.INTERNAL, f"request '{plan.request_id}' ended without a Done reply"
            )
        finally:
            if not finished:
                plan.cancelled = True
                # The session stops at its next round boundary and is released.
                with trio.CancelScope(shield=True):
                    await session.finished.wait()
            self._active.pop(id(plan), None)

    async def chat(self, messages: list[dict[str, str]], **options: Any) -> str:
        """Return the whole reply text to ``messages``; ``options`` are GenerateRequest fields."""
        chat_messages = [ChatMessage(role=m["role"], content=m["content"]) for m in messages]  # type: ignore[arg-type]
        options.setdefault("request_id", new_request_id())
        request = GenerateRequest(messages=chat_messages, **options)
        parts = []
        async for reply in self.generate(request):
            if isinstance(reply, Chunk):
                parts.append(reply.text)
        return "".join(parts)

    async def cancel(self, request_id: str) -> bool:
        """Stop every running request with ``request_id`` at its next round boundary.

        Returns False when none is running. The request still ends with a
        `Done` whose finish_reason is "cancelled".
        """
        plans = [p for p in self._active.values() if p.request_id == request_id]
        for plan in plans:
            plan.cancelled = True
        return bool(plans)

    async def close_session(self, session_id: str) -> int:
        """Free a session's caches and forget it; return the bytes freed."""
        freed = await ask(
            self._parts.cache.inbox,
            lambda reply: SessionCloseRequested(session_id=session_id, reply=reply),
        )
        if freed == -1:
            raise RuntimeRequestError(
                ErrorCode.UNKNOWN_SESSION,
                f"session '{session_id}' does not exist (closed, or never created here)",
            )
        if freed == -2:
            raise RuntimeRequestError(
                ErrorCode.INVALID_REQUEST,
                f"session '{session_id}' has a request running; cancel it, then close the session",
            )
        return int(freed)

    def session_info(self, session_id: str) -> dict[str, Any]:
        """Return a session's cached_tokens, cache_bytes and whether a request uses it (busy)."""
        state = self._parts.cache.sessions.get(session_id)
        if state is None:
            raise RuntimeRequestError(
                ErrorCode.UNKNOWN_SESSION,
                f"session '{session_id}' does not exist (closed, or never created here)",
            )
        return {
            "session_id": session_id,
            "cached_tokens": len(state.cached_token_ids()),
            "cache_bytes": state.nbytes,
            "busy": state.request_id is not None,
        }

    def stats(self) -> dict[str, Any]:
        """Return the `StatsReply` fields except request_id, plus draft_length, ttft_s and more."""
        cache, scheduler = self._parts.cache, self._parts.scheduler
        out: dict[str, Any] = {
            "uptime_s": time.monotonic() - self._started,
            "active_sessions": len(cache.sessions),
            "active_requests": len(self._active),
        }
        out.update(self._parts.tuner.summary())
        out["cache_bytes"] = sum(state.nbytes for state in cache.sessions.values())
        out["cache_budget_bytes"] = self.config.cache_budget_bytes
        out["evictions"] = cache.evictions
        out["scheduler_steps"] = scheduler.steps_run
        out["waiting_steps"] = scheduler.waiting
        return out

    def models(self) -> list[ModelInfo]:
        """Return the target's `ModelInfo`, then the draft model's if one is loaded."""
        return self._planner.model_infos()

    def health(self) -> tuple[str, str | None]:
        """Return ("ok" | "degraded" | "draining", detail) without waiting for the device."""
        if self._draining:
            return "draining", "the runtime is closing; running requests finish, new ones fail"
        if not self._device.alive:
            return "degraded", "the device thread stopped; restart the runtime"
        return "ok", None

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        model: str | None = None,
    ) -> str:
        """Render ``messages`` (and ``tools``) with the model's chat template, ready to generate."""
        return self._planner.render_chat(messages, tools=tools, model=model)

    def count_tokens(self, text: str, *, model: str | None = None) -> int:
        """Tokens ``text`` encodes to, special tokens recognized, as a prompt would."""
        return len(self._planner.encode(text, model))

    def context_length(self, model: str | None = None) -> int:
        self._planner.check_model(model)
        return int(self._parts.target.model.config.context_length)


async def _load(
    device: DeviceThread, config: RuntimeConfig, name: str, models: dict[str, LanguageModel]
) -> LanguageModel:
    if name in models:
        return models[name]

    def load() -> LanguageModel:
        lm = load_language_model(name, store_dir=config.store_dir, policy=config.policy)
        # Read the weights now, so the first request does not pay for it.
        settle_weights([lm])
        return lm

    try:
        return await device.call(load)
    except DraftwiseError:
        raise
    except Exception as error:  # a loader bug: name the model it failed on
        raise RuntimeRequestError(
            ErrorCode.INTERNAL, f"loading model '{name}' failed: {type(error).__name__}: {error}"
        ) from error


# SyncRuntime imports this module; importing it last completes the public names.
from draftwise.actors.runtime_sync import SyncRuntime  # noqa: E402

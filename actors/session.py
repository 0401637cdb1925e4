"""A session's request: lease the caches, prefill what is new, run rounds, stream replies.

One `SessionRequest` runs as its own trio task per generate request. It
leases its session from the `CacheActor` and rolls the caches back to the
longest common prefix of the new prompt and the tokens they contain. Then
it prefills the rest in slices and steps the runtime's speculative (or
plain) generator one round per scheduler turn. The generator applies stop
strings, max_tokens and UTF-8-safe detokenization, so output equals the
synchronous engine's. Cancellation is checked between steps only, so the
caches are always at a round boundary when the request ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from draftwise.actors.cache_actor import SessionState, ask
from draftwise.actors.drafting import RecordingTuner, drafter_uses_model
from draftwise.actors.messages import (
    CacheGrew,
    DrafterRequested,
    PrefillSlice,
    RequestFinished,
    RoundRecorded,
    SessionFinishing,
    SessionLeaseRequested,
    SessionReleased,
)
from draftwise.actors.runtime_errors import RuntimeRequestError
from draftwise.actors.scheduler import Scheduler, run_step
from draftwise.actors.session_prefill import SessionPrefill
from draftwise.actors.session_steps import (
    RoundStep,
    SessionPrefiller,
    speculation_summary,
)
from draftwise.actors.tuner_actor import TunerActor
from draftwise.protocol import Chunk, Done, ErrorCode, RoundStats, Usage
from draftwise.runtime.generate import (
    GenerationChunk,
    GenerationParams,
    Timings,
    plain_steps,
)
from draftwise.runtime.language_model import LanguageModel
from draftwise.runtime.speculative import SpeculationStats, speculative_steps
from draftwise.runtime.stepping import StepGenerator

log = structlog.get_logger("draftwise.actors")


@dataclass
class RuntimeParts:
    """The models, actors and prefill slice size that every session task uses."""

    target: LanguageModel
    draft: LanguageModel | None
    scheduler: Scheduler
    cache: Any  # CacheActor
    tuner: TunerActor
    prefill_chunk: int
    verifier: Any = None  # VerifierActor: owns the target, runs rounds and its prefill
    drafts: Any = None  # DraftActor: owns the draft model, builds drafters


@dataclass
class RequestPlan:
    """A validated generate request, ready to run."""

    request_id: str
    session_id: str | None
    prompt_ids: list[int]
    params: GenerationParams
    speculation: str | int
    drafter: str
    stream: bool
    reuse_prefix: bool
    started: float = field(default_factory=time.perf_counter)
    cancelled: bool = False


class SessionRequest(SessionPrefill):
    """Run one `RequestPlan`, sending `Chunk`, then `Done` or a `RuntimeRequestError`."""

    def __init__(self, parts: RuntimeParts, plan: RequestPlan, replies: Any) -> None:
        self.parts = parts
        self.plan = plan
        self.replies = replies
        self.output_ids: list[int] = []
        self.cached_tokens = 0
        self.prefill_tokens = 0
        self.prefill_s = 0.0
        self.decode_s = 0.0
        self.ttft_s: float | None = None
        self.log = log.bind(actor="session", request_id=plan.request_id)
        self.finished = trio.Event()

    async def run(self) -> None:
        """Serve the plan.

        The session is released before the last reply goes out, except after
        a finished generation: then Done goes first, and the release follows
        the step that runs the last token into the cache.
        """
        try:
            async with self.replies:
                final = await self._serve()
                if isinstance(final, RuntimeRequestError):
                    await self._send_error(final)
                elif final is not None:
                    await self.replies.send(final)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.log.info("final_reply_dropped", reason="the consumer left")
        finally:
            self.finished.set()

    async def _serve(self) -> Done | RuntimeRequestError | None:
        lease = await ask(self.parts.cache.inbox, self._lease_message)
        if lease.error_code is not None:
            return RuntimeRequestError(lease.error_code, lease.error_message)
        state: SessionState = lease.state
        self.log = self.log.bind(session_id=state.session_id)
        caches_valid = False
        try:
            if lease.fork_from is not None:
                await self._fork(state, lease.fork_from)
            done = await self._generate(state)
            caches_valid = True
            if not self._absorbs_last_token(state, done):
                return done
            # Send Done first, then run the last output token into the target
            # cache, so the next turn that extends this one reuses all of it.
            caches_valid = False
            await self.parts.cache.inbox.send(
                SessionFinishing(
                    session_id=state.session_id,
                    request_id=self.plan.request_id,
                    token_ids=(*self.plan.prompt_ids, *self.output_ids),
                )
            )
            try:
                await self.replies.send(done)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.log.info("final_reply_dropped", reason="the consumer left")
            caches_valid = await self._absorb_last_token(state)
            return None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            caches_valid = True  # the consumer left between rounds
            self.log.info("request_abandoned", generated_tokens=len(self.output_ids))
            return None
        except Exception as error:
            self.log.error("request_failed", exc_info=True)
            return RuntimeRequestError(
                ErrorCode.INTERNAL,
                f"request '{self.plan.request_id}' failed in session "
                f"'{state.session_id}': {type(error).__name__}: {error}",
            )
        finally:
            with trio.CancelScope(shield=True):
                await self.parts.cache.inbox.send(
                    SessionReleased(
                        session_id=state.session_id,
                        request_id=self.plan.request_id,
                        token_ids=(*self.plan.prompt_ids, *self.output_ids),
                        caches_valid=caches_valid,
                    )
                )

    def _absorbs_last_token(self, state: SessionState, done: Done) -> bool:
        """Return whether the last sampled token should run into the target cache.

        The generator samples it from the final round's logits, so the cache
        contains every committed token but that one. A cancelled request, or one
        whose cache is full, or out of step with its tokens, is left as it is.
        """
        cache = state.target_cache
        if cache is None or not self.output_ids:
            return False
        if done.finish_reason not in ("eos", "stop", "length"):
            return False
        committed = len(self.plan.prompt_ids) + len(self.output_ids)
        limit = self.parts.target.model.config.context_length
        return cache.kv_offset == committed - 1 and committed <= limit

    async def _absorb_last_token(self, state: SessionState) -> bool:
        """Run the last output token into the target cache; True when the caches stay valid."""
        assert state.target_cache is not None
        work = PrefillSlice(
            role="target", cache=state.target_cache, token_ids=tuple(self.output_ids[-1:])
        )
        try:
            await self._step(state, "prefill", work)
        except Exception:
            self.log.warning("last_token_absorb_failed", exc_info=True)
            return False
        return True

    def _lease_message(self, reply: Any) -> SessionLeaseRequested:
        return SessionLeaseRequested(
            request_id=self.plan.request_id,
            session_id=self.plan.session_id,
            prompt_ids=tuple(self.plan.prompt_ids),
            reuse_prefix=self.plan.reuse_prefix,
            reply=reply,
        )

    async def _send_error(self, error: RuntimeRequestError) -> None:
        try:
            await self.replies.send(error)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.log.info("error_reply_dropped", code=error.code)

    async def _step(self, state: SessionState, phase: Any, work: Any) -> Any:
        value = await run_step(
            self.parts.scheduler, state.session_id, self.plan.request_id, phase, work
        )
        await self.parts.cache.inbox.send(CacheGrew(session_id=state.session_id))
        return value

    async def _generate(self, state: SessionState) -> Done:
        plan = self.plan
        drafter, tuner = await self._drafter_for(state)
        self.log.info(
            "request_started",
            prompt_tokens=len(plan.prompt_ids),
            speculation=str(plan.speculation),
            drafter=plan.drafter,
        )
        logits = await self._prefill_target(state)
        if drafter is not None and drafter_uses_model(drafter):
            await self._prefill_draft(state)
        else:
            self._trim_idle_draft_cache(state)
        stats = SpeculationStats() if tuner is not None else None
        if plan.cancelled:
            return await self._finish(state, "cancelled", stats)
        prefiller = SessionPrefiller(self.parts.target, state, logits)
        chunks = self._chunks(drafter, tuner, stats, prefiller)
        finish_reason = await self._run_rounds(state, chunks, tuner, stats)
        if stats is not None and stats.reason_off and stats.reason_off.startswith("draft_rollback"):
            state.draft_cache = None
            state.drafters.clear()
        return await self._finish(state, finish_reason, stats)

    async def _drafter_for(self, state: SessionState) -> tuple[Any, RecordingTuner | None]:
        plan = self.plan
        if plan.speculation == "off":
            return None, None
        key = (plan.drafter, plan.speculation)
        if key not in state.drafters:
            reply = await ask(
                self.parts.drafts.inbox,
                lambda channel: DrafterRequested(
                    drafter=plan.drafter, speculation=plan.speculation, reply=channel
                ),
            )
            if isinstance(reply, Exception):
                raise reply
            drafter, tuner = reply
            state.drafters[key] = (drafter, RecordingTuner(tuner, drafter))
        drafter, recording = state.drafters[key]
        return drafter, recording

    def _chunks(self, drafter: Any, tuner: Any, stats: Any, prefiller: Any) -> StepGenerator:
        target = self.parts.target
        timings = Timings()
        if tuner is None:
            return plain_steps(
                target.model,
                target.tokenizer,
                self.plan.prompt_ids,
                self.plan.params,
                timings,
                prefiller,
            )
        return speculative_steps(
            target.model,
            drafter,
            target.tokenizer,
            self.plan.prompt_ids,
            self.plan.params,
            tuner,
            stats,
            timings,
            prefiller,
        )

    async def _run_rounds(
        self, state: SessionState, chunks: StepGenerator, tuner: Any, stats: Any
    ) -> str:
        pending_text: list[str] = []
        while True:
            if self.plan.cancelled:
                return "cancelled"  # the suspended generator owns no resources to close
            before = stats.num_accepted if stats is not None else 0
            rounds_before = stats.rounds if stats is not None else 0
            result = await self._step(
                state, "decode", RoundStep(chunks, tuner, self.parts.target.model)
            )
            if result is None:
                raise AssertionError("the generator ended without a finish reason")
            chunk, draft_length, drafter_name, seconds = result
            self.decode_s += seconds
            self.output_ids.extend(chunk.token_ids)
            round_stats = None
            if stats is not None and stats.rounds > rounds_before:
                round_stats = RoundStats(
                    num_drafted=stats.draft_lengths[-1],
                    num_accepted=stats.num_accepted - before,
                    draft_length=max(draft_length, stats.draft_lengths[-1]),
                    drafter=drafter_name if stats.draft_lengths[-1] else "none",
                )
                await self._record_round(state, round_stats, seconds)
            if self.ttft_s is None:
                self.ttft_s = time.perf_counter() - self.plan.started
            await self._emit(chunk, round_stats, pending_text)
            if chunk.finish_reason is not None:
                return str(chunk.finish_reason)

    async def _record_round(self, state: SessionState, stats: RoundStats, seconds: float) -> None:
        self.log.debug(
            "round_finished",
            num_drafted=stats.num_drafted,
            num_accepted=stats.num_accepted,
            draft_length=stats.draft_length,
            drafter=stats.drafter,
            elapsed_ms=round(seconds * 1000, 2),
        )
        await self.parts.tuner.inbox.send(
            RoundRecorded(
                model=self.parts.target.name,
                session_id=state.session_id,
                draft_length=stats.draft_length,
                num_drafted=stats.num_drafted,
                num_accepted=stats.num_accepted,
                round_s=seconds,
            )
        )

    async def _emit(
        self, chunk: GenerationChunk, stats: RoundStats | None, pending: list[str]
    ) -> None:
        if self.plan.stream:
            await self.replies.send(
                Chunk(
                    request_id=self.plan.request_id,
                    text=chunk.text,
                    token_ids=list(chunk.token_ids),
                    round=stats,
                )
            )
            return
        pending.append(chunk.text)
        if chunk.finish_reason is not None:
            await self.replies.send(
                Chunk(
                    request_id=self.plan.request_id,
                    text="".join(pending),
                    token_ids=list(self.output_ids),
                )
            )

    async def _finish(self, state: SessionState, finish_reason: str, stats: Any) -> Done:
        plan = self.plan
        summary = speculation_summary(stats)
        done = Done(
            request_id=plan.request_id,
            session_id=state.session_id,
            finish_reason=finish_reason,  # type: ignore[arg-type]
            usage=Usage(
                prompt_tokens=len(plan.prompt_ids),
                completion_tokens=len(self.output_ids),
                cached_tokens=self.cached_tokens,
            ),
            speculation=summary,
        )
        total_s = time.perf_counter() - plan.started
        self.log.info(
            "request_finished",
            prompt_tokens=len(plan.prompt_ids),
            cached_tokens=self.cached_tokens,
            generated_tokens=len(self.output_ids),
            num_drafted=summary.num_drafted,
            num_accepted=summary.num_accepted,
            acceptance_rate=round(summary.acceptance_rate, 4),
            ttft_ms=None if self.ttft_s is None else round(self.ttft_s * 1000, 1),
            total_ms=round(total_s * 1000, 1),
            finish_reason=finish_reason,
        )
        await self.parts.tuner.inbox.send(
            RequestFinished(
                model=self.parts.target.name,
                session_id=state.session_id,
                request_id=plan.request_id,
                finish_reason=finish_reason,
                prompt_tokens=len(plan.prompt_ids),
                cached_tokens=self.cached_tokens,
                completion_tokens=len(self.output_ids),
                num_drafted=summary.num_drafted,
                num_accepted=summary.num_accepted,
                ttft_s=self.ttft_s,
                prefill_tokens=self.prefill_tokens,
                prefill_s=self.prefill_s,
                decode_s=self.decode_s,
            )
        )
        return done

"""The scheduler: which session's step runs next on the device thread.

A step is one prefill slice or one decode round. Every session has at
most one step waiting, because it submits the next one only after the
previous one's reply. Waiting steps run first come, first served, one
device call each or several rounds in one call (below). So with N
sessions busy, each one waits for at most N - 1 other device calls between
two of its own (round-robin). A long prompt is prefilled in slices of
`RuntimeConfig.prefill_chunk` tokens, one step each, so it delays other
sessions by one slice per turn instead of the whole prefill.

Decode rounds of different sessions on the same target run together, up to
`RuntimeConfig.batch_sessions` at a time: their target passes become one
pass whose linear layers read the weights once for all of them, and their
graphs are evaluated in one sync. Before such a step the scheduler lets
the other sessions submit their next rounds (a few milliseconds at most),
so sessions that decode at the same time keep meeting in one pass.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import outcome
import structlog
import trio
import trio.testing

from draftwise.actors.cache_actor import ask
from draftwise.actors.device import DeviceThread
from draftwise.actors.messages import (
    Phase,
    PrefillRequested,
    PrefillSlice,
    RoundsRequested,
    StepReply,
    StepRequested,
)
from draftwise.actors.session_steps import RoundStep, run_rounds_together

log = structlog.get_logger("draftwise.actors")

# How many executed steps `Scheduler.history` remembers, for tests and stats.
HISTORY_STEPS = 4096

# How long a decode round waits for other sessions' rounds to join it.
GATHER_S = 0.003


class Scheduler:
    """Serialize device steps fairly across sessions until the inbox closes."""

    def __init__(
        self,
        device: DeviceThread,
        inbox_size: int,
        batch_sessions: int = 1,
        verifier: Any = None,
        drafts: Any = None,
    ) -> None:
        self.device = device
        # The actors that own the models: rounds and target prefill slices go
        # to the verifier, draft prefill slices to the draft actor.
        self.verifier = verifier
        self.drafts = drafts
        self.batch_sessions = batch_sessions
        # How many rounds each shared pass carried, by count (for tests and stats).
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.inbox, self._receive = trio.open_memory_channel[StepRequested](inbox_size)
        self.history: collections.deque[tuple[str, str, Phase]] = collections.deque(
            maxlen=HISTORY_STEPS
        )
        # The request ids of every device call, one tuple per call (a shared
        # pass lists all its rounds).
        self.calls: collections.deque[tuple[str, ...]] = collections.deque(maxlen=HISTORY_STEPS)
        self.steps_run = 0
        self.waiting = 0

    async def run(self) -> None:
        log.info("actor_started", actor="scheduler")
        ready: collections.deque[StepRequested] = collections.deque()
        async with self._receive:
            while True:
                if not ready:
                    try:
                        ready.append(await self._receive.receive())
                    except trio.EndOfChannel:
                        break
                if self.batch_sessions > 1 and isinstance(ready[0].work, RoundStep):
                    await self._gather()
                self._drain_inbox(ready)
                self.waiting = len(ready) - 1
                step = ready.popleft()
                batch = self._batch_with(step, ready)
                if batch:
                    await self._run_batch([step, *batch])
                else:
                    await self._run_step(step)
        log.info("actor_stopped", actor="scheduler", steps_run=self.steps_run)

    def _drain_inbox(self, ready: collections.deque[StepRequested]) -> None:
        while True:
            try:
                ready.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    async def _gather(self) -> None:
        """Let sessions that just got a reply submit their next round, for a bounded time."""
        with trio.move_on_after(GATHER_S):
            await trio.testing.wait_all_tasks_blocked()

    def _batch_with(
        self, step: StepRequested, ready: collections.deque[StepRequested]
    ) -> list[StepRequested]:
        """Take from ``ready`` the rounds that can share ``step``'s pass."""
        if self.batch_sessions < 2 or not isinstance(step.work, RoundStep):
            return []
        model = step.work.model
        batch = [
            other
            for other in ready
            if isinstance(other.work, RoundStep)
            and other.work.model is model
            and other.session_id != step.session_id
        ][: self.batch_sessions - 1]
        for other in batch:
            ready.remove(other)
        return batch

    async def _run_batch(self, steps: list[StepRequested]) -> None:
        for step in steps:
            self.history.append((step.session_id, step.request_id, step.phase))
        self.calls.append(tuple(step.request_id for step in steps))
        self.steps_run += len(steps)
        self.batch_sizes[len(steps)] += 1
        replies = await self._rounds([step.work for step in steps])
        for step, reply in zip(steps, replies, strict=True):
            self._reply(step, reply)

    async def _rounds(self, rounds: list[Any]) -> list[StepReply]:
        """Have the verifier run ``rounds`` together; one reply per round."""
        try:
            if self.verifier is not None:
                results = await ask(
                    self.verifier.inbox, lambda reply: RoundsRequested(rounds=rounds, reply=reply)
                )
            else:
                results = await self.device.call(run_rounds_together, rounds)
        except Exception as error:
            return [StepReply(error=error) for _ in rounds]
        return [
            StepReply(error=result.error)
            if isinstance(result, outcome.Error)
            else StepReply(value=result.unwrap())
            for result in results
        ]

    def _reply(self, step: StepRequested, reply: StepReply) -> None:
        try:
            step.reply.send_nowait(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The session went away (its runtime is closing); the step's effect stays.
            log.debug("step_reply_dropped", actor="scheduler", session_id=step.session_id)

    async def _run_step(self, step: StepRequested) -> None:
        self.history.append((step.session_id, step.request_id, step.phase))
        self.calls.append((step.request_id,))
        self.steps_run += 1
        work = step.work
        if isinstance(work, RoundStep):
            reply = (await self._rounds([work]))[0]
        elif isinstance(work, PrefillSlice):
            reply = await self._prefill(work)
        else:
            try:
                reply = StepReply(value=await self.device.call(work))
            except Exception as error:  # the session turns it into that request's error
                reply = StepReply(error=error)
        self._reply(step, reply)

    async def _prefill(self, work: PrefillSlice) -> StepReply:
        owner = self.verifier if work.role == "target" else self.drafts
        if owner is None:
            return StepReply(
                error=RuntimeError(f"no actor owns the {work.role} model; open the runtime first")
            )
        reply: StepReply = await ask(
            owner.inbox, lambda channel: PrefillRequested(work=work, reply=channel)
        )
        return reply


async def run_step(
    scheduler: Scheduler,
    session_id: str,
    request_id: str,
    phase: Phase,
    work: Callable[[], Any] | PrefillSlice,
) -> Any:
    """Queue ``work`` as one step of ``session_id`` and return its result when it has run.

    Raises what ``work`` raised. The wait is shielded from cancellation, so a
    step once queued always runs and its caller always sees the result:
    a session's caches and its record of their tokens never disagree.
    Cancellation takes effect at the caller's next checkpoint after the step.
    """
    send, receive = trio.open_memory_channel[StepReply](1)
    step = StepRequested(
        session_id=session_id, request_id=request_id, phase=phase, work=work, reply=send
    )
    with trio.CancelScope(shield=True):
        await scheduler.inbox.send(step)
        async with receive:
            reply = await receive.receive()
    if reply.error is not None:
        raise reply.error
    return reply.value

"""The scheduler: which session's step runs next on the device thread.

A step is one prefill slice or one decode round. Every session has at
most one step waiting, because it submits the next one only after the
previous one's reply. Waiting steps run first come, first served. So with
N sessions busy, each one waits for at most N - 1 other steps between two
of its own (round-robin). A long prompt is prefilled in slices of
`RuntimeConfig.prefill_chunk` tokens, one step each, so it delays other
sessions by one slice per turn instead of the whole prefill.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import structlog
import trio

from draftwise.actors.device import DeviceThread
from draftwise.actors.messages import Phase, StepReply, StepRequested

log = structlog.get_logger("draftwise.actors")

# How many executed steps `Scheduler.history` remembers, for tests and stats.
HISTORY_STEPS = 4096


class Scheduler:
    """Serialize device steps fairly across sessions until the inbox closes."""

    def __init__(self, device: DeviceThread, inbox_size: int) -> None:
        self.device = device
        self.inbox, self._receive = trio.open_memory_channel[StepRequested](inbox_size)
        self.history: collections.deque[tuple[str, str, Phase]] = collections.deque(
            maxlen=HISTORY_STEPS
        )
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
                self._drain_inbox(ready)
                self.waiting = len(ready) - 1
                await self._run_step(ready.popleft())
        log.info("actor_stopped", actor="scheduler", steps_run=self.steps_run)

    def _drain_inbox(self, ready: collections.deque[StepRequested]) -> None:
        while True:
            try:
                ready.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    async def _run_step(self, step: StepRequested) -> None:
        self.history.append((step.session_id, step.request_id, step.phase))
        self.steps_run += 1
        try:
            reply = StepReply(value=await self.device.call(step.work))
        except Exception as error:  # the session turns it into that request's error
            reply = StepReply(error=error)
        try:
            step.reply.send_nowait(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The session went away (its runtime is closing); the step's effect stays.
            log.debug("step_reply_dropped", actor="scheduler", session_id=step.session_id)


async def run_step(
    scheduler: Scheduler, session_id: str, request_id: str, phase: Phase, work: Callable[[], Any]
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

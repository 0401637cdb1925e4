"""The verifier actor: owns the target model and runs everything that uses it.

It receives `RoundsRequested` (one decode round of one or more sessions,
run together so their target passes share one read of the weights) and
`PrefillRequested` for the target's prefill slices, runs them on the device
thread and replies. The scheduler decides what runs when and sends one
message at a time, so the device runs one step after another.

A round's drafting runs inside the same device call as its verification:
the round is one lazy MLX graph with one evaluation
(`draftwise.runtime.round.round_steps`), and the drafter objects that build
the draft part come from the `DraftActor`.
"""

from __future__ import annotations

import time
from typing import Any

import outcome
import structlog
import trio

from draftwise.actors.device import DeviceThread
from draftwise.actors.messages import PrefillRequested, RoundsRequested, StepReply
from draftwise.actors.session_steps import run_rounds_together
from draftwise.runtime.generate import prefill
from draftwise.runtime.language_model import LanguageModel

log = structlog.get_logger("draftwise.actors")


def timed_prefill(model: Any, cache: Any, token_ids: tuple[int, ...]) -> tuple[Any, float]:
    """Run ``token_ids`` into ``cache``; return the logits after the last one and the seconds."""
    started = time.perf_counter()
    logits = prefill(model, cache, list(token_ids))
    return logits, time.perf_counter() - started


class VerifierActor:
    """Run rounds and target prefill slices until the inbox closes."""

    def __init__(self, target: LanguageModel, device: DeviceThread, inbox_size: int) -> None:
        self.target = target
        self.device = device
        self.inbox, self._receive = trio.open_memory_channel[Any](inbox_size)
        self.rounds_run = 0
        self.passes_run = 0
        self.prefill_slices = 0

    async def run(self) -> None:
        log.info("actor_started", actor="verifier", model=self.target.name)
        async with self._receive:
            async for message in self._receive:
                match message:
                    case RoundsRequested():
                        await self._rounds(message)
                    case PrefillRequested():
                        await self._prefill(message)
                    case _:
                        raise AssertionError(f"verifier actor got an unknown message: {message!r}")
        log.info("actor_stopped", actor="verifier", rounds=self.rounds_run, passes=self.passes_run)

    async def _rounds(self, message: RoundsRequested) -> None:
        self.rounds_run += len(message.rounds)
        self.passes_run += 1
        try:
            results = await self.device.call(run_rounds_together, message.rounds)
        except Exception as error:  # the device thread itself failed
            results = [outcome.Error(error) for _ in message.rounds]
        _send(message.reply, results)

    async def _prefill(self, message: PrefillRequested) -> None:
        work = message.work
        assert work.role == "target", f"the verifier runs the target, not {work.role!r}"
        self.prefill_slices += 1
        reply = await run_prefill(self.device, self.target.model, work.cache, work.token_ids)
        _send(message.reply, reply)


async def run_prefill(
    device: DeviceThread, model: Any, cache: Any, token_ids: tuple[int, ...]
) -> StepReply:
    """Run one prefill slice on ``device``; the error, if any, goes into the reply."""
    try:
        return StepReply(value=await device.call(timed_prefill, model, cache, token_ids))
    except Exception as error:
        return StepReply(error=error)


def _send(channel: Any, value: Any) -> None:
    try:
        channel.send_nowait(value)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        log.debug("verifier_reply_dropped", actor="verifier")

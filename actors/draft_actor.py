"""The draft actor: owns the draft model, the sessions' drafters and the draft prefill.

It replies to `DrafterRequested` with a new drafter and tuner for a session
(n-gram, draft model, MTP or all of them, see `make_drafter`), and runs
`PrefillRequested` slices of the draft model's caches on the device thread.
The drafters it builds are used inside the verifier's rounds, because a
round's drafting and verification are one lazy graph with one evaluation.
"""

from __future__ import annotations

from typing import Any

import structlog
import trio

from draftwise.actors.device import DeviceThread
from draftwise.actors.drafting import make_drafter
from draftwise.actors.messages import DrafterRequested, PrefillRequested, StepReply
from draftwise.actors.verifier_actor import run_prefill
from draftwise.runtime.language_model import LanguageModel

log = structlog.get_logger("draftwise.actors")


class DraftActor:
    """Build drafters and run draft prefill slices until the inbox closes."""

    def __init__(self, draft: LanguageModel | None, device: DeviceThread, inbox_size: int) -> None:
        self.draft = draft
        self.device = device
        self.inbox, self._receive = trio.open_memory_channel[Any](inbox_size)
        self.drafters_built = 0
        self.prefill_slices = 0

    async def run(self) -> None:
        name = None if self.draft is None else self.draft.name
        log.info("actor_started", actor="draft", model=name)
        async with self._receive:
            async for message in self._receive:
                match message:
                    case DrafterRequested():
                        self._drafter(message)
                    case PrefillRequested():
                        await self._prefill(message)
                    case _:
                        raise AssertionError(f"draft actor got an unknown message: {message!r}")
        log.info("actor_stopped", actor="draft", drafters_built=self.drafters_built)

    def _drafter(self, message: DrafterRequested) -> None:
        try:
            reply: Any = make_drafter(self.draft, message.drafter, message.speculation)
            self.drafters_built += 1
        except Exception as error:
            reply = error
        _send(message.reply, reply)

    async def _prefill(self, message: PrefillRequested) -> None:
        work = message.work
        if work.role != "draft" or self.draft is None:
            error = ValueError(
                f"the draft actor runs the draft model's prefill, got role {work.role!r} "
                f"with draft model {None if self.draft is None else self.draft.name!r}"
            )
            _send(message.reply, StepReply(error=error))
            return
        self.prefill_slices += 1
        reply = await run_prefill(self.device, self.draft.model, work.cache, work.token_ids)
        _send(message.reply, reply)


def _send(channel: Any, value: Any) -> None:
    try:
        channel.send_nowait(value)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        log.debug("draft_reply_dropped", actor="draft")

"""Server-sent events framing and the watch that turns a client hang-up into cancellation.

`EventStreamResponse` sends frames from an async iterator while a second task
waits for the client's disconnect; a disconnect cancels the iterator, which
cancels its generation at the next round. `run_until_disconnect` does the same
for a non-streaming request whose reply is sent at the end.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import structlog
import trio
from starlette.types import Receive, Scope, Send

log = structlog.get_logger("draftwise.http")

ResultT = TypeVar("ResultT")

SEND_TIMEOUT_S = 60.0
"""A client that reads nothing for this long is treated as gone."""


def sse_frame(data: Any, event: str | None = None) -> bytes:
    """Encode one event; ``data`` is a JSON-ready value or a ready string such as ``[DONE]``."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_until_disconnect(
    receive: Receive, work: Callable[[], Awaitable[ResultT]]
) -> ResultT | None:
    """Await ``work()``; return None and cancel it if the client disconnects first.

    Call it only after the request body has been read, because the watch
    consumes the remaining receive messages.
    """
    result: list[ResultT] = []
    failure: list[Exception] = []

    async def run_work(cancel_scope: trio.CancelScope) -> None:
        try:
            result.append(await work())
        except Exception as error:
            # Raised below, outside the nursery, so callers catch it as itself
            # instead of inside an exception group.
            failure.append(error)
        cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_work, nursery.cancel_scope)
        await _wait_for_disconnect(receive)
        nursery.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return result[0] if result else None


class EventStreamResponse:
    """ASGI response that streams ``frames`` as ``text/event-stream``.

    Guarantees: each frame is sent whole (sends are shielded, with a deadline
    of `SEND_TIMEOUT_S`); a client disconnect or a stalled send cancels the
    frame iterator and closes it, so its generation stops; the response body
    is always ended, also when the iterator fails.
    """

    media_type = "text/event-stream"

    def __init__(
        self, frames: AsyncGenerator[bytes, None], *, headers: dict[str, str] | None = None
    ):
        self.frames = frames
        self.headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})}
        self.disconnected = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = [(b"content-type", f"{self.media_type}; charset=utf-8".encode())]
        raw_headers += [(key.encode(), value.encode()) for key, value in self.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, receive, nursery.cancel_scope)
                await self._send_frames(send)
                nursery.cancel_scope.cancel()
        finally:
            if not self.disconnected:
                with trio.CancelScope(shield=True) as scope_guard:
                    scope_guard.deadline = trio.current_time() + SEND_TIMEOUT_S
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch(self, receive: Receive, cancel_scope: trio.CancelScope) -> None:
        await _wait_for_disconnect(receive)
        self.disconnected = True
        log.info("client_disconnected", actor="http")
        cancel_scope.cancel()

    async def _send_frames(self, send: Send) -> None:
        async with aclosing(self.frames) as frames:
            async for frame in frames:
                with trio.CancelScope(shield=True) as guard:
                    guard.deadline = trio.current_time() + SEND_TIMEOUT_S
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                if guard.cancelled_caught:
                    self.disconnected = True
                    log.warning("stream_send_timed_out", actor="http", timeout_s=SEND_TIMEOUT_S)
                    return

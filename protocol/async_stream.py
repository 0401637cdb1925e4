"""Per-request reply channels and the generate stream of the trio client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self

import trio

from .client_support import expect_reply
from .errors import ClientError, ConnectionClosedError, ProtocolError
from .reply_messages import Chunk, Done, Reply


@contextmanager
def timeout_scope(timeout: float | None, waiting_for: str) -> Iterator[None]:
    """Raise TimeoutError naming `waiting_for` when the body runs longer than `timeout` seconds."""
    if timeout is None:
        yield
        return
    with trio.move_on_after(timeout) as scope:
        yield
    if scope.cancelled_caught:
        raise TimeoutError(f"timed out after {timeout} s waiting for {waiting_for}")


class PendingReplies:
    """Reply channel of one request in flight, and the error that ended it early."""

    def __init__(self, capacity: int) -> None:
        self.send_channel, self.receive_channel = trio.open_memory_channel[Reply](capacity)
        self.error: Exception | None = None

    def fail(self, error: Exception) -> None:
        """End the channel; its reader gets the buffered replies, then `error`."""
        if self.error is None:
            self.error = error
        self.send_channel.close()

    async def receive(self) -> Reply:
        """Return the next reply, or raise the error that ended the channel."""
        try:
            return await self.receive_channel.receive()
        except trio.EndOfChannel:
            raise (self.error or ConnectionClosedError("reply channel closed")) from None


class GenerateStream:
    """Replies of one generate request: `Chunk`s, then `Done` as the last item.

    Iterating raises RemoteError when the server replies with an ErrorReply.
    `aclose()`, or leaving `async with stream:`, before `Done` sends a
    CancelRequest and drops the remaining replies.
    """

    def __init__(
        self,
        request_id: str,
        pending: PendingReplies,
        timeout: float | None,
        *,
        forget: Callable[[str], None],
        send_cancel: Callable[[str], Awaitable[None]],
    ) -> None:
        self.request_id = request_id
        self.done: Done | None = None
        """The final reply, once iteration has reached it."""

        self._pending = pending
        self._forget = forget
        self._send_cancel = send_cancel
        self._timeout = timeout
        self._finished = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Chunk | Done:
        if self._finished:
            raise StopAsyncIteration
        waiting_for = f"the next reply to generate request {self.request_id!r}"
        try:
            with timeout_scope(self._timeout, waiting_for):
                reply = await self._pending.receive()
        except (ClientError, ProtocolError):
            self._finish()
            raise

        if isinstance(reply, Chunk):
            return reply
        self._finish()
        self.done = expect_reply(reply, Done, self.request_id)
        return self.done

    async def collect(self) -> tuple[str, Done]:
        """Read the rest of the stream; return the joined chunk text and the `Done` reply."""
        parts = [reply.text async for reply in self if isinstance(reply, Chunk)]
        if self.done is None:
            raise ConnectionClosedError(
                f"generate request {self.request_id!r} was closed before its Done reply"
            )
        return "".join(parts), self.done

    async def aclose(self) -> None:
        """Cancel the request on the server unless it has finished."""
        if self._finished:
            return
        self._finish()
        await self._send_cancel(self.request_id)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _finish(self) -> None:
        self._finished = True
        self._forget(self.request_id)

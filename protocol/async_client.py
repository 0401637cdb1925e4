"""Trio client that multiplexes concurrent requests on one Unix-socket connection.

One reader task decodes every reply and routes it by request_id to that
request's bounded channel. One writer task sends every frame, so a cancelled
caller never leaves half a frame on the socket: a frame is either still
queued or is written whole.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self, TypeVar

import trio

from .async_stream import GenerateStream, PendingReplies, timeout_scope
from .base import PROTOCOL_VERSION
from .client_support import (
    DEFAULT_CLIENT_NAME,
    build_generate_request,
    check_welcome,
    expect_reply,
)
from .codec import decode_reply, encode_request_frame, new_request_id
from .errors import (
    ClientError,
    ConnectionClosedError,
    ProtocolError,
    RemoteError,
    ReplyOverflowError,
)
from .framing import DEFAULT_MAX_FRAME_BYTES, FrameDecoder
from .reply_messages import (
    CancelReply,
    CloseSessionReply,
    ErrorReply,
    HealthReply,
    ModelsReply,
    StatsReply,
    Welcome,
)
from .request_messages import (
    DEFAULT_MAX_TOKENS,
    CancelRequest,
    ChatMessage,
    CloseSessionRequest,
    HealthRequest,
    Hello,
    ModelsRequest,
    SamplingParams,
    Speculation,
    StatsRequest,
)

DEFAULT_MAX_BUFFERED_REPLIES = 1024
"""Maximum unread replies of one generate stream before the client stops that request."""

_RECEIVE_BYTES = 64 * 1024
_OUTGOING_FRAMES = 64
_CANCEL_SEND_TIMEOUT_S = 5.0

_ReplyT = TypeVar("_ReplyT")


class AsyncClient:
    """Connection to a draftwise server that runs requests concurrently.

    Use it as `async with await AsyncClient.connect(path) as client:`, then
    call `hello()` before any other request. Leaving the block closes the
    connection and ends every request in flight with ConnectionClosedError.
    Every method takes `timeout` in seconds (None waits forever) and raises
    TimeoutError when it passes.
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_buffered_replies: int = DEFAULT_MAX_BUFFERED_REPLIES,
    ) -> None:
        if max_buffered_replies < 1:
            raise ValueError(f"max_buffered_replies must be at least 1, got {max_buffered_replies}")
        self.welcome: Welcome | None = None
        """The server's reply to the latest `hello()`."""

        self._stream = stream
        self._max_frame_bytes = max_frame_bytes
        self._max_buffered_replies = max_buffered_replies
        self._decoder = FrameDecoder(max_frame_bytes)
        self._pending: dict[str, PendingReplies] = {}
        self._hello_pending: PendingReplies | None = None
        self._hello_lock = trio.Lock()
        self._outgoing_send, self._outgoing_receive = trio.open_memory_channel[bytes](
            _OUTGOING_FRAMES
        )
        self._tasks: tuple[AsyncExitStack, trio.CancelScope] | None = None
        self._closed_reason: str | None = None
        self._closed_reply: ErrorReply | None = None

    @classmethod
    async def connect(
        cls,
        path: str | os.PathLike[str],
        *,
        timeout: float | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_buffered_replies: int = DEFAULT_MAX_BUFFERED_REPLIES,
    ) -> Self:
        """Open a connection to the server's Unix socket at `path`.

        Raises the OSError of the failed connect (such as FileNotFoundError or
        ConnectionRefusedError) with `path` in its message.
        """
        socket_path = os.fspath(path)
        with timeout_scope(timeout, f"a connection to {socket_path}"):
            try:
                stream = await trio.open_unix_socket(socket_path)
            except OSError as exc:
                raise type(exc)(exc.errno, exc.strerror, socket_path) from exc
        return cls(
            stream, max_frame_bytes=max_frame_bytes, max_buffered_replies=max_buffered_replies
        )

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        nursery = await stack.enter_async_context(trio.open_nursery())
        nursery.start_soon(self._read_loop)
        nursery.start_soon(self._write_loop)
        self._tasks = (stack, nursery.cancel_scope)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._shut_down("the client closed the connection")
        tasks, self._tasks = self._tasks, None
        if tasks is not None:
            stack, cancel_scope = tasks
            cancel_scope.cancel()
            await stack.aclose()

    async def aclose(self) -> None:
        """Close the connection; requests still in flight raise ConnectionClosedError.

        The reader and writer tasks end when the `async with` block exits.
        """
        self._shut_down("the client closed the connection")
        await trio.lowlevel.checkpoint()

    async def hello(
        self, client_name: str = DEFAULT_CLIENT_NAME, *, timeout: float | None = None
    ) -> Welcome:
        """Send `Hello` and return the server's `Welcome`.

        Raises RemoteError when the server rejects the protocol version, and
        ProtocolError(UNSUPPORTED_VERSION) when its Welcome names another version.
        """
        self._raise_if_unusable()
        request = Hello(protocol_version=PROTOCOL_VERSION, client_name=client_name)
        frame = encode_request_frame(request, max_frame_bytes=self._max_frame_bytes)
        with timeout_scope(timeout, "the server's welcome"):
            async with self._hello_lock:
                pending = self._hello_pending = PendingReplies(1)
                try:
                    await self._send_frame(frame)
                    reply = await pending.receive()
                finally:
                    self._hello_pending = None
        self.welcome = check_welcome(expect_reply(reply, Welcome, None))
        return self.welcome

    async def generate(
        self,
        *,
        prompt: str | None = None,
        messages: Sequence[ChatMessage] | None = None,
        session_id: str | None = None,
        model: str | None = None,
        draft: str | None = None,
        sampling: SamplingParams | None = None,
        stop: Sequence[str] = (),
        max_tokens: int = DEFAULT_MAX_TOKENS,
        speculation: Speculation = "auto",
        stream: bool = True,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> GenerateStream:
        """Send a GenerateRequest and return the stream of its replies.

        Give exactly one of `prompt` and `messages`. `timeout` bounds sending
        the request and then each wait for the next reply. Invalid arguments
        raise ProtocolError(INVALID_REQUEST) naming the field before anything
        is sent.
        """
        request = build_generate_request(
            prompt=prompt,
            messages=messages,
            session_id=session_id,
            model=model,
            draft=draft,
            sampling=sampling,
            stop=stop,
            max_tokens=max_tokens,
            speculation=speculation,
            stream=stream,
            request_id=request_id,
        )
        frame = encode_request_frame(request, max_frame_bytes=self._max_frame_bytes)
        pending = self._register(request.request_id, self._max_buffered_replies)
        try:
            with timeout_scope(timeout, f"sending generate request {request.request_id!r}"):
                await self._send_frame(frame)
        except BaseException:
            self._pending.pop(request.request_id, None)
            raise
        return GenerateStream(
            request.request_id,
            pending,
            timeout,
            forget=self._forget,
            send_cancel=self._send_cancel_detached,
        )

    async def cancel(self, request_id: str, *, timeout: float | None = None) -> CancelReply:
        """Ask the server to stop generate request `request_id`; return its CancelReply."""
        request = CancelRequest(request_id=new_request_id(), target_request_id=request_id)
        return await self._call(request, CancelReply, timeout)

    async def close_session(
        self, session_id: str, *, timeout: float | None = None
    ) -> CloseSessionReply:
        """Free session `session_id`; raises RemoteError(unknown_session) for an unknown id."""
        request = CloseSessionRequest(request_id=new_request_id(), session_id=session_id)
        return await self._call(request, CloseSessionReply, timeout)

    async def stats(self, *, timeout: float | None = None) -> StatsReply:
        """Return the server-wide counters."""
        return await self._call(StatsRequest(request_id=new_request_id()), StatsReply, timeout)

    async def models(self, *, timeout: float | None = None) -> ModelsReply:
        """Return the loaded models."""
        return await self._call(ModelsRequest(request_id=new_request_id()), ModelsReply, timeout)

    async def health(self, *, timeout: float | None = None) -> HealthReply:
        """Return the server's health status."""
        return await self._call(HealthRequest(request_id=new_request_id()), HealthReply, timeout)

    async def _call(
        self,
        request: CancelRequest | CloseSessionRequest | StatsRequest | ModelsRequest | HealthRequest,
        reply_type: type[_ReplyT],
        timeout: float | None,
    ) -> _ReplyT:
        """Send a request that gets exactly one reply and return that reply."""
        frame = encode_request_frame(request, max_frame_bytes=self._max_frame_bytes)
        pending = self._register(request.request_id, 1)
        try:
            with timeout_scope(timeout, f"a {reply_type.__name__} to {request.request_id!r}"):
                await self._send_frame(frame)
                reply = await pending.receive()
        finally:
            self._pending.pop(request.request_id, None)
        return expect_reply(reply, reply_type, request.request_id)

    def _register(self, request_id: str, capacity: int) -> PendingReplies:
        self._raise_if_unusable()
        if request_id in self._pending:
            raise ClientError(
                f"request id {request_id!r} is already in flight on this connection; "
                f"use a fresh id or let the client pick one"
            )
        pending = self._pending[request_id] = PendingReplies(capacity)
        return pending

    def _raise_if_unusable(self) -> None:
        if self._closed_reason is not None:
            raise self._failure()
        if self._tasks is None:
            raise ClientError(
                "the client is not running; use `async with await AsyncClient.connect(path) "
                "as client:`"
            )

    def _failure(self) -> ClientError:
        """Return a new exception describing why the connection closed."""
        if self._closed_reply is not None:
            return RemoteError(self._closed_reply)
        return ConnectionClosedError(f"connection closed: {self._closed_reason}")

    async def _send_frame(self, frame: bytes) -> None:
        try:
            await self._outgoing_send.send(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._failure() from None

    def _forget(self, request_id: str) -> None:
        """Stop routing replies to `request_id`; later ones are dropped."""
        self._pending.pop(request_id, None)

    async def _send_cancel_detached(self, target_request_id: str) -> None:
        """Queue a CancelRequest without waiting for its reply, even inside a cancelled scope."""
        if self._closed_reason is not None:
            return
        request = CancelRequest(request_id=new_request_id(), target_request_id=target_request_id)
        frame = encode_request_frame(request, max_frame_bytes=self._max_frame_bytes)
        with trio.CancelScope(shield=True), trio.move_on_after(_CANCEL_SEND_TIMEOUT_S):
            try:
                await self._outgoing_send.send(frame)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                # The connection is gone, and the server cancels a disconnected client's work.
                pass

    def _shut_down(self, reason: str, reply: ErrorReply | None = None) -> None:
        """Record why the connection ended, fail every waiter, and close the socket."""
        if self._closed_reason is None:
            self._closed_reason = reason
            self._closed_reply = reply
        for pending in self._pending.values():
            pending.fail(self._failure())
        self._pending.clear()
        if self._hello_pending is not None:
            self._hello_pending.fail(self._failure())
        self._outgoing_send.close()
        self._stream.socket.close()

    async def _write_loop(self) -> None:
        try:
            async for frame in self._outgoing_receive:
                await self._stream.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._shut_down(f"sending to the server failed: {exc!r}")

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._stream.receive_some(_RECEIVE_BYTES)
                if not data:
                    self._shut_down(self._eof_reason())
                    return
                self._decoder.feed(data)
                for body in self._decoder.frames():
                    self._on_frame(body)
        except ProtocolError as exc:
            self._shut_down(f"the server sent an unreadable frame: {exc.message}")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._shut_down(f"receiving from the server failed: {exc!r}")

    def _eof_reason(self) -> str:
        if self._decoder.buffered_bytes:
            return (
                f"the server closed the connection in the middle of a frame "
                f"({self._decoder.buffered_bytes} bytes of it received)"
            )
        return "the server closed the connection"

    def _on_frame(self, body: bytes) -> None:
        try:
            reply = decode_reply(body)
        except ProtocolError as exc:
            pending = self._pending.get(exc.request_id) if exc.request_id else None
            if pending is None or exc.request_id is None:
                self._shut_down(f"the server sent an invalid reply: {exc.message}")
            else:
                self._abandon(exc.request_id, pending, exc)
            return

        request_id = None if isinstance(reply, Welcome) else reply.request_id
        if request_id is None:
            # The schema allows a missing request_id only on these two types.
            assert isinstance(reply, Welcome | ErrorReply)
            self._on_connection_reply(reply)
            return
        pending = self._pending.get(request_id)
        if pending is None:
            # A late reply to a request whose caller stopped waiting (timeout or cancel).
            return
        try:
            pending.send_channel.send_nowait(reply)
        except trio.WouldBlock:
            self._on_overflow(request_id, pending)

    def _on_connection_reply(self, reply: Welcome | ErrorReply) -> None:
        if self._hello_pending is not None:
            self._hello_pending.send_channel.send_nowait(reply)
            self._hello_pending = None
        elif isinstance(reply, ErrorReply):
            self._shut_down(f"the server reported {reply.code}: {reply.message}", reply)

    def _on_overflow(self, request_id: str, pending: PendingReplies) -> None:
        """Stop a stream whose reader fell behind, so that it cannot stall other requests."""
        error = ReplyOverflowError(
            f"generate request {request_id!r} has {self._max_buffered_replies} unread "
            f"replies, so the client stopped it; read its stream while other requests "
            f"run, or raise max_buffered_replies"
        )
        self._abandon(request_id, pending, error)

    def _abandon(self, request_id: str, pending: PendingReplies, error: Exception) -> None:
        """End request `request_id` with `error` here, and ask the server to cancel it."""
        del self._pending[request_id]
        pending.fail(error)
        request = CancelRequest(request_id=new_request_id(), target_request_id=request_id)
        try:
            self._outgoing_send.send_nowait(
                encode_request_frame(request, max_frame_bytes=self._max_frame_bytes)
            )
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            # NOTE: with the send queue full or closed, the server keeps generating
            # for this request until it finishes, and the client drops those replies.
            pass

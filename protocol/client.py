"""Blocking client on a plain Unix socket, for scripts and command-line tools.

It runs one request at a time. Starting a request while a generate stream is
still open cancels that stream and reads its remaining replies first, so no
unread replies are left on the connection. Use `AsyncClient` to run requests
concurrently.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Self, TypeVar

from .base import PROTOCOL_VERSION
from .client_support import (
    DEFAULT_CLIENT_NAME,
    build_generate_request,
    check_welcome,
    expect_reply,
)
from .codec import decode_reply, encode_request_frame, new_request_id
from .errors import ClientError, ConnectionClosedError, ErrorCode, ProtocolError, RemoteError
from .framing import DEFAULT_MAX_FRAME_BYTES, FrameDecoder
from .reply_messages import (
    CancelReply,
    Chunk,
    CloseSessionReply,
    Done,
    ErrorReply,
    HealthReply,
    ModelsReply,
    Reply,
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

_RECEIVE_BYTES = 64 * 1024

_ReplyT = TypeVar("_ReplyT")


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class Client:
    """Blocking connection to a draftwise server.

    Use it as `with Client.connect(path) as client:`, then call `hello()`
    before any other request. Every method takes `timeout` in seconds (None
    waits forever) and raises TimeoutError when it passes. A timeout while
    sending, or a failure while draining a cancelled stream, closes the
    connection, because its framing can no longer be trusted. A Client is not
    thread-safe; give each thread its own.
    """

    def __init__(
        self, sock: socket.socket, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    ) -> None:
        self.welcome: Welcome | None = None
        """The server's reply to the latest `hello()`."""

        self._socket = sock
        self._max_frame_bytes = max_frame_bytes
        self._decoder = FrameDecoder(max_frame_bytes)
        self._open_stream: tuple[str, float | None] | None = None
        self._closed_reason: str | None = None

    @classmethod
    def connect(
        cls,
        path: str | os.PathLike[str],
        *,
        timeout: float | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> Self:
        """Open a connection to the server's Unix socket at `path`.

        Raises the OSError of the failed connect (such as FileNotFoundError or
        ConnectionRefusedError) with `path` in its message.
        """
        socket_path = os.fspath(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(socket_path)
        except TimeoutError:
            sock.close()
            raise TimeoutError(
                f"timed out after {timeout} s waiting for a connection to {socket_path}"
            ) from None
        except OSError as exc:
            sock.close()
            raise type(exc)(exc.errno, exc.strerror, socket_path) from exc
        return cls(sock, max_frame_bytes=max_frame_bytes)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection without waiting for an open generate stream."""
        self._close("the client closed the connection")

    def hello(
        self, client_name: str = DEFAULT_CLIENT_NAME, *, timeout: float | None = None
    ) -> Welcome:
        """Send `Hello` and return the server's `Welcome`.

        Raises RemoteError when the server rejects the protocol version, and
        ProtocolError(UNSUPPORTED_VERSION) when its Welcome names another version.
        """
        request = Hello(protocol_version=PROTOCOL_VERSION, client_name=client_name)
        deadline = _deadline(timeout)
        self._prepare_for_request()
        self._send(encode_request_frame(request, max_frame_bytes=self._max_frame_bytes), deadline)
        reply = self._receive_for(None, deadline, "the server's welcome")
        self.welcome = check_welcome(expect_reply(reply, Welcome, None))
        return self.welcome

    def generate(
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
    ) -> Generator[Chunk | Done, None, None]:
        """Send a GenerateRequest and return a generator of its `Chunk`s, then `Done`.

        The request is sent before this returns, so invalid arguments raise
        ProtocolError(INVALID_REQUEST) here. `timeout` bounds sending and each
        wait for the next reply. Closing the generator before `Done` cancels
        the request and reads its remaining replies.
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
        self._prepare_for_request()
        self._send(frame, _deadline(timeout))
        self._open_stream = (request.request_id, timeout)
        return self._stream_replies(request.request_id, timeout)

    def cancel(self, request_id: str, *, timeout: float | None = None) -> CancelReply:
        """Ask the server to stop request `request_id`; return its CancelReply.

        A stream of this client is stopped by closing its generator instead,
        because the client runs one request at a time.
        """
        request = CancelRequest(request_id=new_request_id(), target_request_id=request_id)
        return self._call(request, CancelReply, timeout)

    def close_session(self, session_id: str, *, timeout: float | None = None) -> CloseSessionReply:
        """Free session `session_id`; raises RemoteError(unknown_session) for an unknown id."""
        request = CloseSessionRequest(request_id=new_request_id(), session_id=session_id)
        return self._call(request, CloseSessionReply, timeout)

    def stats(self, *, timeout: float | None = None) -> StatsReply:
        """Return the server-wide counters."""
        return self._call(StatsRequest(request_id=new_request_id()), StatsReply, timeout)

    def models(self, *, timeout: float | None = None) -> ModelsReply:
        """Return the loaded models."""
        return self._call(ModelsRequest(request_id=new_request_id()), ModelsReply, timeout)

    def health(self, *, timeout: float | None = None) -> HealthReply:
        """Return the server's health status."""
        return self._call(HealthRequest(request_id=new_request_id()), HealthReply, timeout)

    def _call(
        self,
        request: CancelRequest | CloseSessionRequest | StatsRequest | ModelsRequest | HealthRequest,
        reply_type: type[_ReplyT],
        timeout: float | None,
    ) -> _ReplyT:
        frame = encode_request_frame(request, max_frame_bytes=self._max_frame_bytes)
        deadline = _deadline(timeout)
        self._prepare_for_request()
        self._send(frame, deadline)
        waiting_for = f"a {reply_type.__name__} to {request.request_id!r}"
        reply = self._receive_for(request.request_id, deadline, waiting_for)
        return expect_reply(reply, reply_type, request.request_id)

    def _stream_replies(
        self, request_id: str, timeout: float | None
    ) -> Generator[Chunk | Done, None, None]:
        finished = False
        try:
            while True:
                if self._open_stream is None or self._open_stream[0] != request_id:
                    raise ClientError(
                        f"generate request {request_id!r} was cancelled because a later "
                        f"request started on this connection; finish a stream before the next"
                    )
                waiting_for = f"the next reply to generate request {request_id!r}"
                reply = self._receive_for(request_id, _deadline(timeout), waiting_for)
                if isinstance(reply, Chunk):
                    yield reply
                    continue
                finished = True
                self._open_stream = None
                yield expect_reply(reply, Done, request_id)
                return
        finally:
            if not finished:
                self._cancel_open_stream(request_id)

    def _prepare_for_request(self) -> None:
        if self._closed_reason is not None:
            raise ConnectionClosedError(f"connection closed: {self._closed_reason}")
        if self._open_stream is not None:
            self._cancel_open_stream(self._open_stream[0])
            if self._closed_reason is not None:
                raise ConnectionClosedError(f"connection closed: {self._closed_reason}")

    def _cancel_open_stream(self, request_id: str) -> None:
        """Cancel the open stream `request_id` and read its replies up to the last one.

        Closes the connection if that fails, since unread replies would remain.
        """
        if self._open_stream is None or self._open_stream[0] != request_id:
            return
        timeout = self._open_stream[1]
        self._open_stream = None
        if self._closed_reason is not None:
            return
        request = CancelRequest(request_id=new_request_id(), target_request_id=request_id)
        try:
            frame = encode_request_frame(request, max_frame_bytes=self._max_frame_bytes)
            self._send(frame, _deadline(timeout))
            while True:
                waiting_for = f"the end of cancelled generate request {request_id!r}"
                reply = self._receive_for(request_id, _deadline(timeout), waiting_for)
                if isinstance(reply, Done | ErrorReply):
                    return
        except (TimeoutError, ClientError, ProtocolError, OSError) as exc:
            self._close(f"draining cancelled generate request {request_id!r} failed: {exc}")

    def _send(self, frame: bytes, deadline: float | None) -> None:
        self._set_socket_timeout(deadline, "sending a request")
        try:
            self._socket.sendall(frame)
        except TimeoutError:
            self._close("a send timed out, possibly in the middle of a frame")
            raise TimeoutError(
                "timed out sending a request; the connection is closed because the server "
                "may have received part of the frame"
            ) from None
        except OSError as exc:
            self._close(f"sending to the server failed: {exc}")
            raise ConnectionClosedError(f"connection closed: {self._closed_reason}") from exc

    def _receive_for(
        self, request_id: str | None, deadline: float | None, waiting_for: str
    ) -> Reply:
        """Return the next reply to `request_id`, skipping late replies to abandoned requests.

        With request_id None it returns the next Welcome or connection-level ErrorReply.
        A connection-level ErrorReply while waiting for a request raises RemoteError.
        """
        while True:
            try:
                reply = self._receive_reply(deadline, waiting_for)
            except ProtocolError as exc:
                if exc.code == ErrorCode.INVALID_REPLY and exc.request_id not in (None, request_id):
                    continue
                raise
            reply_request_id = None if isinstance(reply, Welcome) else reply.request_id
            if reply_request_id == request_id:
                return reply
            if reply_request_id is None and isinstance(reply, ErrorReply):
                raise RemoteError(reply)

    def _receive_reply(self, deadline: float | None, waiting_for: str) -> Reply:
        while True:
            try:
                body = self._decoder.next_frame()
            except ProtocolError as exc:
                self._close(f"the server sent an unreadable frame: {exc.message}")
                raise
            if body is not None:
                return decode_reply(body)
            self._receive_bytes(deadline, waiting_for)

    def _receive_bytes(self, deadline: float | None, waiting_for: str) -> None:
        self._set_socket_timeout(deadline, waiting_for)
        try:
            data = self._socket.recv(_RECEIVE_BYTES)
        except TimeoutError:
            raise TimeoutError(f"timed out waiting for {waiting_for}") from None
        except OSError as exc:
            self._close(f"receiving from the server failed: {exc}")
            raise ConnectionClosedError(f"connection closed: {self._closed_reason}") from exc
        if not data:
            reason = "the server closed the connection"
            if self._decoder.buffered_bytes:
                reason += f" in the middle of a frame ({self._decoder.buffered_bytes} bytes of it)"
            self._close(reason)
            raise ConnectionClosedError(f"connection closed: {reason}")
        self._decoder.feed(data)

    def _set_socket_timeout(self, deadline: float | None, waiting_for: str) -> None:
        if self._closed_reason is not None:
            raise ConnectionClosedError(f"connection closed: {self._closed_reason}")
        if deadline is None:
            self._socket.settimeout(None)
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out waiting for {waiting_for}")
        self._socket.settimeout(remaining)

    def _close(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        self._open_stream = None
        self._socket.close()

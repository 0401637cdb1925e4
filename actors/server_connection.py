"""One client connection of the Unix-socket server: read frames, route requests, write replies.

Rules a client can rely on:
- `Hello` comes first; any other request before it gets an `ErrorReply` (hello_required).
- A frame whose length is zero or over the maximum closes the connection after a
  connection-level `ErrorReply`, because the byte stream cannot be resynchronised.
  Every other bad request gets an `ErrorReply` and the connection stays open.
- One writer task sends every frame, so frames never interleave. Replies wait in a
  buffer bounded in bytes; a client that lets it fill is disconnected and never
  slows the runtime or other clients.
- Closing the connection cancels its generate requests at their next round.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import structlog
import trio

from draftwise.actors.runtime_errors import RuntimeRequestError
from draftwise.protocol import (
    PROTOCOL_VERSION,
    CancelReply,
    CancelRequest,
    Chunk,
    CloseSessionReply,
    CloseSessionRequest,
    Done,
    ErrorCode,
    ErrorReply,
    FrameDecoder,
    GenerateRequest,
    HealthReply,
    HealthRequest,
    Hello,
    ModelInfo,
    ModelsReply,
    ModelsRequest,
    ProtocolError,
    Reply,
    Request,
    StatsReply,
    StatsRequest,
    Welcome,
    decode_request,
    encode_frame,
)
from draftwise.runtime.errors import DraftwiseError

if TYPE_CHECKING:
    from draftwise.actors.server import ServerState

_RECEIVE_BYTES = 64 * 1024
_ACLOSE_TIMEOUT_S = 10.0
_STATS_FIELDS = frozenset(field.name for field in msgspec.structs.fields(StatsReply)) - {
    "request_id"
}
_connection_numbers = itertools.count(1)


class ServedRuntime(Protocol):
    """The part of the embedded runtime the server calls."""

    def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk | Done]: ...
    async def cancel(self, request_id: str) -> bool: ...
    async def close_session(self, session_id: str) -> int: ...
    def stats(self) -> dict[str, Any]: ...
    def models(self) -> list[ModelInfo]: ...
    def health(self) -> tuple[str, str | None]: ...


class _SlowReaderError(Exception):
    """The client's unsent replies went over the send buffer."""


@dataclass
class _InFlight:
    """A generate request running for this connection."""

    request_id: str
    runtime_request_id: str
    """Id passed to the runtime: unique across connections, which client ids are not."""

    cancel_requested: bool = False
    cancel_delivered: bool = False
    finished: trio.Event = field(default_factory=trio.Event)


class Connection:
    """Serve one accepted client until it disconnects or the server closes the connection."""

    def __init__(
        self,
        stream: trio.SocketStream,
        runtime: ServedRuntime,
        state: ServerState,
        *,
        peer: str,
    ) -> None:
        self.number = next(_connection_numbers)
        self._stream = stream
        self._runtime = runtime
        self._state = state
        self._limits = state.limits
        self._decoder = FrameDecoder(self._limits.max_frame_bytes)
        self._greeted = False
        self._in_flight: dict[str, _InFlight] = {}
        self._outgoing_send, self._outgoing_receive = trio.open_memory_channel[bytes](math.inf)
        self._queued_bytes = 0
        self._close_reason: str | None = None
        self._final_error: ErrorReply | None = None
        self._cancel_scope = trio.CancelScope()
        self._read_scope = trio.CancelScope()
        self._aborted = False
        self._log = log_for_connection(self.number, peer)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self) -> None:
        """Serve requests until EOF, a corrupt stream, a slow reader, `stop()` or `close()`."""
        self._log.info("connection_opened")
        with self._cancel_scope:
            async with trio.open_nursery() as writer:
                writer.start_soon(self._write_loop)
                async with trio.open_nursery() as requests:
                    with self._read_scope:
                        await self._read_loop(requests)
                    if not self._read_scope.cancel_called:
                        # The client went away or broke the framing: its requests end now.
                        requests.cancel_scope.cancel()
                if self._final_error is not None:
                    self._outgoing_send.send_nowait(encode_frame(self._final_error))
                # The writer sends what is queued, then ends.
                self._outgoing_send.close()
        with trio.CancelScope(shield=True):
            await self._stream.aclose()
        self._log.info("connection_closed", reason=self._close_reason or "server_stopped")

    async def cancel_all(self) -> None:
        """Ask the runtime to stop every generate request of this connection (server drain)."""
        for request in list(self._in_flight.values()):
            await self._cancel_in_runtime(request)

    def stop(self) -> None:
        """Stop reading requests; send the replies of running ones, then close."""
        self._read_scope.cancel()

    def close(self, reason: str) -> None:
        """Drop the connection now; its generate requests are cancelled without a `Done`."""
        self._close_reason = self._close_reason or reason
        self._aborted = True
        self._cancel_scope.cancel()

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                data = await self._stream.receive_some(_RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._close_reason = f"receive failed: {exc!r}"
                return
            if not data:
                self._close_reason = self._eof_reason()
                return
            try:
                self._decoder.feed(data)
                for body in self._decoder.frames():
                    await self._on_body(body, nursery)
            except ProtocolError as exc:
                # Only framing errors get here: the stream cannot be resynchronised.
                self._log.warning("frame_rejected", code=exc.code, detail=exc.message)
                self._close_reason = f"{exc.code}: {exc.message}"
                self._final_error = ErrorReply(request_id=None, code=exc.code, message=exc.message)
                return
            except _SlowReaderError as exc:
                self._close_reason = str(exc)
                return

    def _eof_reason(self) -> str:
        if self._decoder.buffered_bytes:
            buffered = self._decoder.buffered_bytes
            return f"client closed the connection inside a frame ({buffered} bytes of it)"
        return "client closed the connection"

    async def _on_body(self, body: bytes, nursery: trio.Nursery) -> None:
        try:
            request = decode_request(body)
        except ProtocolError as exc:
            self._log.info(
                "request_rejected", code=exc.code, request_id=exc.request_id, detail=exc.message
            )
            self._send(ErrorReply(request_id=exc.request_id, code=exc.code, message=exc.message))
            return

        if isinstance(request, Hello):
            self._on_hello(request)
            return
        if not self._greeted:
            message = (
                f"send hello before {type(request).__name__}; the connection has not been greeted"
            )
            self._send(
                ErrorReply(
                    request_id=request.request_id, code=ErrorCode.HELLO_REQUIRED, message=message
                )
            )
            return
        await self._dispatch(request, nursery)

    async def _dispatch(self, request: Request, nursery: trio.Nursery) -> None:
        match request:
            case GenerateRequest():
                self._on_generate(request, nursery)
            case CancelRequest():
                await self._on_cancel(request)
            case CloseSessionRequest():
                await self._on_close_session(request)
            case StatsRequest():
                self._on_stats(request)
            case ModelsRequest():
                self._send(
                    ModelsReply(request_id=request.request_id, models=self._runtime.models())
                )
            case HealthRequest():
                self._on_health(request)
            case _:
                raise AssertionError(f"no handler for request type {type(request).__name__}")

    def _on_hello(self, request: Hello) -> None:
        if request.protocol_version != PROTOCOL_VERSION:
            message = (
                f"protocol version {request.protocol_version} is not supported; this server "
                f"speaks {PROTOCOL_VERSION}, so install a matching draftwise client"
            )
            self._send(
                ErrorReply(request_id=None, code=ErrorCode.UNSUPPORTED_VERSION, message=message)
            )
            return
        self._greeted = True
        self._log = self._log.bind(client_name=request.client_name)
        welcome = Welcome(
            protocol_version=PROTOCOL_VERSION,
            server_name=self._state.server_name,
            models=[model.name for model in self._runtime.models()],
            max_frame_bytes=self._limits.max_frame_bytes,
        )
        self._send(welcome)

    def _on_generate(self, request: GenerateRequest, nursery: trio.Nursery) -> None:
        request_id = request.request_id
        if request_id in self._in_flight:
            message = (
                f"request id {request_id!r} is already in flight on this connection; use a fresh id"
            )
            self._send(
                ErrorReply(request_id=request_id, code=ErrorCode.DUPLICATE_REQUEST, message=message)
            )
            return
        if self._state.draining:
            message = (
                "the server is shutting down and accepts no new generate requests; "
                "retry after it restarts"
            )
            self._send(
                ErrorReply(request_id=request_id, code=ErrorCode.OVERLOADED, message=message)
            )
            return
        in_flight = _InFlight(request_id, f"c{self.number}.{request_id}")
        self._in_flight[request_id] = in_flight
        self._state.request_started()
        nursery.start_soon(self._run_generate, request, in_flight)

    async def _run_generate(self, request: GenerateRequest, in_flight: _InFlight) -> None:
        runtime_request = msgspec.structs.replace(request, request_id=in_flight.runtime_request_id)
        try:
            replies = self._runtime.generate(runtime_request)
            async with _closing(replies):
                async for reply in replies:
                    self._send(msgspec.structs.replace(reply, request_id=request.request_id))
                    if in_flight.cancel_requested and not in_flight.cancel_delivered:
                        await self._cancel_in_runtime(in_flight)
        except DraftwiseError as exc:
            self._send_quietly(self._error_reply(request.request_id, exc))
        except _SlowReaderError as exc:
            self.close(str(exc))
        except Exception as exc:
            self._log.error("generate_failed", request_id=request.request_id, exc_info=exc)
            message = f"generate request failed inside the server: {type(exc).__name__}: {exc}"
            self._send_quietly(
                ErrorReply(request_id=request.request_id, code=ErrorCode.INTERNAL, message=message)
            )
        finally:
            del self._in_flight[request.request_id]
            in_flight.finished.set()
            self._state.request_finished()

    async def _on_cancel(self, request: CancelRequest) -> None:
        in_flight = self._in_flight.get(request.target_request_id)
        if in_flight is not None:
            await self._cancel_in_runtime(in_flight)
        reply = CancelReply(
            request_id=request.request_id,
            target_request_id=request.target_request_id,
            cancelled=in_flight is not None,
        )
        self._send(reply)

    async def _cancel_in_runtime(self, in_flight: _InFlight) -> None:
        """Request that the runtime end the request with Done("cancelled").

        The runtime may not have registered the id yet, when the request's task
        has not reached it. In that case `_run_generate` retries after the next reply.
        """
        in_flight.cancel_requested = True
        if not in_flight.cancel_delivered:
            in_flight.cancel_delivered = await self._runtime.cancel(in_flight.runtime_request_id)

    async def _on_close_session(self, request: CloseSessionRequest) -> None:
        try:
            freed = await self._runtime.close_session(request.session_id)
        except DraftwiseError as exc:
            self._send(self._error_reply(request.request_id, exc))
            return
        reply = CloseSessionReply(
            request_id=request.request_id, session_id=request.session_id, freed_cache_bytes=freed
        )
        self._send(reply)

    def _on_stats(self, request: StatsRequest) -> None:
        stats = self._runtime.stats()
        fields = {name: value for name, value in stats.items() if name in _STATS_FIELDS}
        self._send(StatsReply(request_id=request.request_id, **fields))

    def _on_health(self, request: HealthRequest) -> None:
        status, detail = self._runtime.health()
        if self._state.draining:
            status, detail = (
                "draining",
                "the server received a stop signal and finishes running requests",
            )
        reply = HealthReply(
            request_id=request.request_id,
            status=status,  # type: ignore[arg-type]
            uptime_s=self._state.uptime_s(),
            active_requests=self._state.active_requests,
            detail=detail,
        )
        self._send(reply)

    def _error_reply(self, request_id: str, exc: DraftwiseError) -> ErrorReply:
        """Forward a RuntimeRequestError's code; any other DraftwiseError is an internal error."""
        if isinstance(exc, RuntimeRequestError):
            self._log.info(
                "request_rejected", request_id=request_id, code=exc.code, detail=exc.message
            )
            return ErrorReply(request_id=request_id, code=exc.code, message=exc.message)
        self._log.error("request_failed", request_id=request_id, exc_info=exc)
        return ErrorReply(request_id=request_id, code=ErrorCode.INTERNAL, message=str(exc))

    def _send(self, reply: Reply) -> None:
        """Queue `reply` for the writer; raise _SlowReaderError when the buffer is full."""
        if self._aborted:
            return
        frame = encode_frame(reply, max_frame_bytes=self._limits.max_frame_bytes)
        if self._queued_bytes + len(frame) > self._limits.send_buffer_bytes:
            reason = (
                f"client left {self._queued_bytes} bytes of replies unread, over the send "
                f"buffer of {self._limits.send_buffer_bytes} bytes"
            )
            self._log.warning("slow_reader_disconnected", queued_bytes=self._queued_bytes)
            self.close(reason)
            raise _SlowReaderError(reason)
        self._queued_bytes += len(frame)
        self._outgoing_send.send_nowait(frame)

    def _send_quietly(self, reply: Reply) -> None:
        with contextlib.suppress(_SlowReaderError):
            self._send(reply)

    async def _write_loop(self) -> None:
        async for frame in self._outgoing_receive:
            if not await self._write_frame(frame):
                return

    async def _write_frame(self, frame: bytes) -> bool:
        """Send one frame; on a stalled or broken socket, close the connection and return False."""
        with trio.move_on_after(self._limits.send_timeout_s) as scope:
            try:
                await self._stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.close(f"send failed: {exc!r}")
                return False
        if scope.cancelled_caught:
            self._log.warning("send_timed_out", send_timeout_s=self._limits.send_timeout_s)
            self.close(f"client read nothing for {self._limits.send_timeout_s} s")
            return False
        self._queued_bytes -= len(frame)
        return True


def log_for_connection(number: int, peer: str) -> Any:
    return structlog.get_logger("draftwise.actors").bind(
        actor="server", connection_id=number, peer=peer
    )


@contextlib.asynccontextmanager
async def _closing(replies: AsyncIterator[Chunk | Done]) -> AsyncIterator[None]:
    """Close the runtime's async generator on every exit, so a cancel reaches the runtime."""
    try:
        yield
    finally:
        aclose = getattr(replies, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(_ACLOSE_TIMEOUT_S):
                await aclose()

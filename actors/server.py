"""The Unix-socket server: accept connections, check peers, and drain on SIGTERM or SIGINT.

`serve()` runs until a stop signal or `UnixSocketServer.shutdown()`. Shutdown
stops accepting and removes the socket file first, then lets running generate
requests finish for up to `drain_timeout_s`, then asks the runtime to cancel
the rest (each still ends with `Done(finish_reason="cancelled")`), and closes
every connection. A second stop signal skips the wait.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
import trio

from draftwise.actors.server_connection import Connection, ServedRuntime
from draftwise.actors.server_socket import (
    BoundSocket,
    PeerCredentials,
    ServerStartError,
    bind_unix_socket,
    peer_credentials,
    remove_socket_file,
)
from draftwise.protocol import DEFAULT_MAX_FRAME_BYTES, ErrorCode, ErrorReply, encode_frame

log = structlog.get_logger("draftwise.actors", actor="server")

DEFAULT_DRAIN_TIMEOUT_S = 30.0
DEFAULT_SEND_BUFFER_BYTES = 4 * 1024 * 1024
DEFAULT_SEND_TIMEOUT_S = 30.0
DEFAULT_MAX_CONNECTIONS = 256
_CANCEL_GRACE_S = 10.0
_REJECT_SEND_TIMEOUT_S = 1.0

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT_S",
    "ServerLimits",
    "ServerStartError",
    "UnixSocketServer",
    "serve",
]


@dataclass(frozen=True)
class ServerLimits:
    """Per-connection limits of the server."""

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    """Largest request body accepted; a longer frame closes the connection."""

    send_buffer_bytes: int = DEFAULT_SEND_BUFFER_BYTES
    """Unsent reply bytes one connection may queue before it is disconnected."""

    send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S
    """Seconds one frame may wait for the client to read before it is disconnected."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS


class ServerState:
    """Counters and flags that connections share with the server."""

    def __init__(self, limits: ServerLimits, server_name: str) -> None:
        self.limits = limits
        self.server_name = server_name
        self.draining = False
        self.active_requests = 0
        self._started = time.monotonic()
        self._idle = trio.Event()
        self._idle.set()

    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    def request_started(self) -> None:
        if self.active_requests == 0:
            self._idle = trio.Event()
        self.active_requests += 1

    def request_finished(self) -> None:
        self.active_requests -= 1
        if self.active_requests == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no generate request is running."""
        while self.active_requests:
            await self._idle.wait()


class UnixSocketServer:
    """A running server; `serve()` hands it to `task_status.started()`."""

    def __init__(
        self,
        runtime: ServedRuntime,
        socket_path: str,
        *,
        allowed_uids: frozenset[int],
        drain_timeout_s: float,
        limits: ServerLimits,
    ) -> None:
        self.socket_path = socket_path
        self.allowed_uids = allowed_uids
        self._runtime = runtime
        self._drain_timeout_s = drain_timeout_s
        self._state = ServerState(limits, server_name=_server_name())
        self._connections: set[Connection] = set()
        self._shutdown_requested = trio.Event()
        self._force_stop = trio.Event()
        self._connections_changed = trio.Event()

    @property
    def active_requests(self) -> int:
        return self._state.active_requests

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def shutdown(self, *, drain: bool = True) -> None:
        """Start a shutdown. A second call, or drain False, cancels running requests at once."""
        if self._shutdown_requested.is_set() or not drain:
            self._force_stop.set()
        self._shutdown_requested.set()

    async def run(
        self, bound: BoundSocket, *, task_status: trio.TaskStatus[UnixSocketServer]
    ) -> None:
        """Serve on `bound` until `shutdown()`, drain, and remove the socket file."""
        try:
            async with trio.open_nursery() as connections:
                accept_scope = trio.CancelScope()
                connections.start_soon(self._accept_loop, bound, connections, accept_scope)
                log.info(
                    "server_started",
                    socket_path=self.socket_path,
                    allowed_uids=sorted(self.allowed_uids),
                    pid=os.getpid(),
                )
                task_status.started(self)
                await self._shutdown_requested.wait()
                accept_scope.cancel()
                await self._stop(bound, connections)
        finally:
            await bound.listener.aclose()
            remove_socket_file(bound)
        log.info("server_stopped", socket_path=self.socket_path)

    async def _stop(self, bound: BoundSocket, connections: trio.Nursery) -> None:
        await bound.listener.aclose()
        remove_socket_file(bound)
        self._state.draining = True
        log.info(
            "server_draining",
            active_requests=self._state.active_requests,
            drain_timeout_s=self._drain_timeout_s,
        )

        with trio.move_on_after(self._drain_timeout_s):
            await _first_of(self._state.wait_idle, self._force_stop.wait)
        if self._state.active_requests:
            log.warning("server_cancelling_requests", active_requests=self._state.active_requests)
            for connection in list(self._connections):
                await connection.cancel_all()
            with trio.move_on_after(_CANCEL_GRACE_S):
                await self._state.wait_idle()

        for connection in list(self._connections):
            connection.stop()
        with trio.move_on_after(self._state.limits.send_timeout_s):
            while self._connections:
                await self._connections_changed.wait()
        connections.cancel_scope.cancel()

    async def _accept_loop(
        self, bound: BoundSocket, connections: trio.Nursery, accept_scope: trio.CancelScope
    ) -> None:
        with accept_scope:
            while True:
                try:
                    stream = await bound.listener.accept()
                except OSError as exc:
                    # EMFILE and friends: log, back off, and keep serving existing clients.
                    log.error("accept_failed", error=str(exc))
                    await trio.sleep(0.1)
                    continue
                connections.start_soon(self._serve_connection, stream)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            credentials = peer_credentials(stream.socket)
        except OSError as exc:
            await _reject(
                stream, f"cannot read peer credentials: {exc}", ErrorCode.PERMISSION_DENIED
            )
            return
        if credentials.uid not in self.allowed_uids:
            log.warning("connection_rejected", peer_uid=credentials.uid, peer_pid=credentials.pid)
            message = (
                f"uid {credentials.uid} may not use this server; the server allows uids "
                f"{sorted(self.allowed_uids)}, set with --allow-uid"
            )
            await _reject(stream, message, ErrorCode.PERMISSION_DENIED)
            return
        if len(self._connections) >= self._state.limits.max_connections:
            message = (
                f"the server already has {len(self._connections)} connections, its maximum; "
                f"close idle connections or retry later"
            )
            await _reject(stream, message, ErrorCode.OVERLOADED)
            return

        connection = Connection(stream, self._runtime, self._state, peer=_describe(credentials))
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)
            self._connections_changed.set()
            self._connections_changed = trio.Event()


async def serve(
    runtime: ServedRuntime,
    socket_path: str | os.PathLike[str],
    *,
    socket_mode: int = 0o600,
    allowed_uids: set[int] | frozenset[int] | None = None,
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    limits: ServerLimits | None = None,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[UnixSocketServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the draftwise protocol for `runtime` on the Unix socket `socket_path`.

    `socket_mode` is the socket file's mode (0o600: owner only; 0o660 adds the
    file's group). `allowed_uids` lists the peer uids accepted after connect
    (default: this process's uid). With `handle_signals`, SIGTERM and SIGINT
    start a shutdown; this needs the main thread. Raises ServerStartError
    when the socket cannot be bound.
    """
    if not 0 <= socket_mode <= 0o777:
        raise ValueError(
            f"socket_mode {socket_mode:#o} is invalid; use permission bits such as 0o600"
        )
    if drain_timeout_s < 0:
        raise ValueError(f"drain_timeout_s must be >= 0 seconds, got {drain_timeout_s}")
    server = UnixSocketServer(
        runtime,
        os.fspath(socket_path),
        allowed_uids=frozenset(allowed_uids)
        if allowed_uids is not None
        else frozenset({os.getuid()}),
        drain_timeout_s=drain_timeout_s,
        limits=limits or ServerLimits(),
    )
    # Bound before any task starts, so a ServerStartError reaches the caller unwrapped.
    bound = await bind_unix_socket(server.socket_path, mode=socket_mode)
    async with trio.open_nursery() as nursery:
        if handle_signals and threading.current_thread() is threading.main_thread():
            nursery.start_soon(_shutdown_on_signals, server)
        await server.run(bound, task_status=task_status)
        nursery.cancel_scope.cancel()


async def _shutdown_on_signals(server: UnixSocketServer) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signal_number in signals:
            log.info("signal_received", signal=signal.Signals(signal_number).name)
            server.shutdown()


async def _first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as one of `waits` returns."""
    async with trio.open_nursery() as nursery:

        async def run_then_cancel(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(run_then_cancel, wait)


async def _reject(stream: trio.SocketStream, message: str, code: str) -> None:
    """Send a connection-level ErrorReply and close the connection."""
    with trio.move_on_after(_REJECT_SEND_TIMEOUT_S):
        try:
            await stream.send_all(
                encode_frame(ErrorReply(request_id=None, code=code, message=message))
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await stream.aclose()


def _describe(credentials: PeerCredentials) -> str:
    return f"uid={credentials.uid} pid={credentials.pid}"


def _server_name() -> str:
    try:
        return f"draftwise {importlib.metadata.version('draftwise')}"
    except importlib.metadata.PackageNotFoundError:
        return "draftwise"

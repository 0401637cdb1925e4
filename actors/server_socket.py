"""The server's Unix socket: binding with a fixed mode, stale-socket checks and peer credentials."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import stat
import struct
import sys
from dataclasses import dataclass

import structlog
import trio

from draftwise.runtime.errors import DraftwiseError

log = structlog.get_logger("draftwise.actors", actor="server")

MAX_SOCKET_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103
"""Longest AF_UNIX path the kernel accepts: sun_path has room for 108 bytes on Linux,
104 on macOS and the BSDs, including the terminating NUL."""

_LIVENESS_PROBE_TIMEOUT_S = 1.0


class ServerStartError(DraftwiseError):
    """A socket path the server cannot bind: in use by a live server, not a socket, or too long."""


@dataclass(frozen=True)
class PeerCredentials:
    """Identity of the process at the other end of a Unix-socket connection."""

    uid: int
    gid: int
    pid: int | None
    """None where the platform does not report it (macOS getpeereid)."""


@dataclass(frozen=True)
class BoundSocket:
    """A listening socket and the inode of its file, so that shutdown removes only our file."""

    listener: trio.SocketListener
    path: str
    inode: int


async def bind_unix_socket(path: str, *, mode: int, backlog: int = 128) -> BoundSocket:
    """Bind and listen on `path` with file mode `mode`.

    A stale socket file (one no server accepts on) is replaced. Raises
    ServerStartError when a live server owns the path, when the path exists
    and is not a socket, or when it is too long for AF_UNIX. The mode is set
    between bind() and listen(), so no client can connect while the file still
    has the umask's permissions.
    """
    if check_socket_available(path):
        _remove_stale_socket(path)

    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        os.chmod(path, mode)
        sock.listen(backlog)
        inode = os.lstat(path).st_ino
    except OSError as exc:
        sock.close()
        raise ServerStartError(
            f"cannot listen on socket {path}: {exc.strerror}; check that its folder exists "
            f"and is writable by this user"
        ) from exc
    log.info("socket_listening", socket_path=path, socket_mode=oct(mode))
    return BoundSocket(trio.SocketListener(sock), path, inode)


def remove_socket_file(bound: BoundSocket) -> None:
    """Delete the socket file, unless another server has replaced it since we bound it."""
    try:
        if os.lstat(bound.path).st_ino != bound.inode:
            log.warning("socket_file_replaced", socket_path=bound.path)
            return
        os.unlink(bound.path)
    except FileNotFoundError:
        return
    log.info("socket_removed", socket_path=bound.path)


def peer_credentials(sock: socket.socket | trio.socket.SocketType) -> PeerCredentials:
    """Return the uid, gid and (on Linux) pid of the connected peer.

    Linux reads SO_PEERCRED, and other systems call getpeereid(3). Raises
    OSError when the platform offers neither.
    """
    if hasattr(socket, "SO_PEERCRED"):
        size = struct.calcsize("3i")
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size)
        pid, uid, gid = struct.unpack("3i", raw)
        return PeerCredentials(uid=uid, gid=gid, pid=pid)
    return _getpeereid(sock.fileno())


def _getpeereid(fd: int) -> PeerCredentials:
    library = ctypes.util.find_library("c")
    libc = ctypes.CDLL(library, use_errno=True)
    uid = ctypes.c_uint32()
    gid = ctypes.c_uint32()
    if libc.getpeereid(fd, ctypes.byref(uid), ctypes.byref(gid)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"getpeereid failed: {os.strerror(code)}")
    return PeerCredentials(uid=uid.value, gid=gid.value, pid=None)


def check_socket_available(path: str) -> bool:
    """Raise ServerStartError unless a server could bind `path`; return True for a stale socket.

    Call it before slow start-up work, such as loading models, to fail early.
    """
    _check_path_length(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(info.st_mode):
        raise ServerStartError(
            f"{path} exists and is not a socket; remove it or pass another --socket path"
        )
    _raise_if_live(path)
    return True


def _check_path_length(path: str) -> None:
    length = len(os.fsencode(path))
    if length > MAX_SOCKET_PATH_BYTES:
        raise ServerStartError(
            f"socket path {path} is {length} bytes, over the AF_UNIX limit of "
            f"{MAX_SOCKET_PATH_BYTES}; choose a shorter path such as /run/draftwise/draftwise.sock"
        )


def _raise_if_live(path: str) -> None:
    """Raise ServerStartError when a server accepts connections on the socket `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_LIVENESS_PROBE_TIMEOUT_S)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return
    except TimeoutError:
        # A full backlog still means a live server.
        raise ServerStartError(
            f"a server is already listening on {path} (it did not accept within "
            f"{_LIVENESS_PROBE_TIMEOUT_S} s); stop it or pass another --socket path"
        ) from None
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return
        raise ServerStartError(
            f"cannot check whether a server owns {path}: {exc.strerror}"
        ) from exc
    finally:
        probe.close()
    raise ServerStartError(
        f"a server is already listening on {path}; stop it or pass another --socket path"
    )


def _remove_stale_socket(path: str) -> None:
    """Delete the socket file `path`, which `check_socket_available` found stale."""
    # NOTE: two servers started at the same instant can both find the file stale, and
    # then the later one unlinks the socket the earlier one has just bound.
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    log.warning("stale_socket_removed", socket_path=path)

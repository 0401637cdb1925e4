"""Fixtures for server tests: a short socket path, a runtime, and a running server."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent))

from server_fakes import FakeRuntime  # noqa: E402

from draftwise.actors.server import UnixSocketServer, serve  # noqa: E402
from draftwise.protocol import AsyncClient  # noqa: E402


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to about 107 bytes, which pytest's tmp_path can exceed.
    directory = Path(tempfile.mkdtemp(prefix="dw-srv-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def socket_path(socket_dir: Path) -> str:
    return str(socket_dir / "server.sock")


@pytest.fixture
def fake_runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
async def fake_server(
    fake_runtime: FakeRuntime, socket_path: str, nursery: trio.Nursery
) -> AsyncIterator[UnixSocketServer]:
    server = await nursery.start(
        lambda task_status: serve(
            fake_runtime, socket_path, handle_signals=False, task_status=task_status
        )
    )
    yield server
    server.shutdown(drain=False)


@pytest.fixture
async def fake_client(fake_server: UnixSocketServer) -> AsyncIterator[AsyncClient]:
    async with await AsyncClient.connect(fake_server.socket_path) as client:
        await client.hello("test")
        yield client


@pytest.fixture
def context_length() -> int:
    from server_fakes import CONTEXT_LENGTH

    return CONTEXT_LENGTH


@pytest.fixture
async def server(fake_server: UnixSocketServer) -> UnixSocketServer:
    return fake_server


@pytest.fixture
async def client(server: UnixSocketServer) -> AsyncIterator[AsyncClient]:
    async with await AsyncClient.connect(server.socket_path) as connected:
        await connected.hello("test")
        yield connected

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

from server_fakes import TINY_CONTEXT_LENGTH, FakeRuntime, tiny_models

from draftwise.actors.runtime import Runtime, RuntimeConfig
from draftwise.actors.server import UnixSocketServer, serve
from draftwise.protocol import AsyncClient


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
    return TINY_CONTEXT_LENGTH


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    async with Runtime.open(RuntimeConfig(model="tiny"), models=tiny_models()) as opened:
        yield opened


@pytest.fixture
async def server(
    runtime: Runtime, socket_path: str, nursery: trio.Nursery
) -> AsyncIterator[UnixSocketServer]:
    started = await nursery.start(
        lambda task_status: serve(
            runtime, socket_path, handle_signals=False, task_status=task_status
        )
    )
    yield started
    started.shutdown(drain=False)


@pytest.fixture
async def client(server: UnixSocketServer) -> AsyncIterator[AsyncClient]:
    async with await AsyncClient.connect(server.socket_path) as connected:
        await connected.hello("test")
        yield connected

"""Fixtures for protocol tests: a short Unix socket path and a running fake server."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest
import trio
from fake_protocol_server import FakeServer


@pytest.fixture
def socket_path() -> Iterator[str]:
    # Unix socket paths are limited to about 107 bytes, which pytest's tmp_path can exceed.
    directory = tempfile.mkdtemp(prefix="dw-proto-", dir="/tmp")
    try:
        yield f"{directory}/server.sock"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def fake_server(socket_path: str, nursery: trio.Nursery) -> AsyncIterator[FakeServer]:
    server = FakeServer(socket_path)
    await nursery.start(server.serve)
    yield server

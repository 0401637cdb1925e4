"""The socket file: its mode, stale and live owners, and peer-credential checks."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import trio

from draftwise.actors.server import serve
from draftwise.actors.server_socket import ServerStartError
from draftwise.protocol import AsyncClient, RemoteError


async def _start(nursery: trio.Nursery, runtime, path: str, **options):
    return await nursery.start(
        lambda task_status: serve(
            runtime, path, handle_signals=False, task_status=task_status, **options
        )
    )


async def test_socket_mode_owner_only_by_default(fake_runtime, socket_path, nursery):
    server = await _start(nursery, fake_runtime, socket_path)
    mode = stat.S_IMODE(os.stat(socket_path).st_mode)
    assert mode == 0o600
    server.shutdown()


async def test_socket_mode_group_configurable(fake_runtime, socket_path, nursery):
    server = await _start(nursery, fake_runtime, socket_path, socket_mode=0o660)
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o660
    server.shutdown()


async def test_socket_live_server_refuses_second(fake_runtime, socket_path, nursery):
    first = await _start(nursery, fake_runtime, socket_path)
    with pytest.raises(ServerStartError, match="already listening"):
        await serve(fake_runtime, socket_path, handle_signals=False)
    async with await AsyncClient.connect(socket_path) as client:
        welcome = await client.hello()
    assert welcome.models
    first.shutdown()


async def test_socket_stale_file_replaced(fake_runtime, socket_path, nursery):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(socket_path)
    stale.close()
    assert stat.S_ISSOCK(os.lstat(socket_path).st_mode)

    server = await _start(nursery, fake_runtime, socket_path)
    async with await AsyncClient.connect(socket_path) as client:
        await client.hello()
        reply = await client.health()
    assert reply.status == "ok"
    server.shutdown()


async def test_socket_regular_file_not_replaced(fake_runtime, socket_path):
    Path(socket_path).write_text("keep me")
    with pytest.raises(ServerStartError, match="not a socket"):
        await serve(fake_runtime, socket_path, handle_signals=False)
    assert Path(socket_path).read_text() == "keep me"


async def test_socket_path_too_long_rejected(fake_runtime, socket_dir):
    path = str(socket_dir / ("s" * 120))
    with pytest.raises(ServerStartError, match="AF_UNIX"):
        await serve(fake_runtime, path, handle_signals=False)


async def test_socket_removed_after_shutdown(fake_runtime, socket_path, nursery):
    server = await _start(nursery, fake_runtime, socket_path)
    assert os.path.exists(socket_path)
    server.shutdown()
    with trio.fail_after(10):
        while os.path.exists(socket_path):
            await trio.sleep(0.01)
    assert not os.path.exists(socket_path)


async def test_peer_uid_not_allowed_rejected(fake_runtime, socket_path, nursery):
    other_uid = os.getuid() + 1
    server = await _start(nursery, fake_runtime, socket_path, allowed_uids={other_uid})
    async with await AsyncClient.connect(socket_path) as client:
        with pytest.raises(RemoteError) as raised:
            await client.hello()
    assert raised.value.code == "permission_denied"
    assert str(os.getuid()) in str(raised.value)
    assert fake_runtime.started == []
    server.shutdown()


async def test_peer_uid_listed_accepted(fake_runtime, socket_path, nursery):
    server = await _start(
        nursery, fake_runtime, socket_path, allowed_uids={os.getuid() + 1, os.getuid()}
    )
    async with await AsyncClient.connect(socket_path) as client:
        await client.hello()
        text, done = await (await client.generate(prompt="a b")).collect()
    assert text == "a b "
    assert done.finish_reason == "eos"
    server.shutdown()

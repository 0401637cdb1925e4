"""Shutdown drains or cancels running requests; a client that never reads is disconnected."""

from __future__ import annotations

import os

import msgspec
import trio
from raw_peer import RawPeer
from server_fakes import FakeRuntime

from draftwise.actors.server import ServerLimits, serve
from draftwise.protocol import AsyncClient, Chunk, Done, GenerateRequest, RemoteError, Welcome


async def _start(nursery, runtime, path, **options):
    return await nursery.start(
        lambda task_status: serve(
            runtime, path, handle_signals=False, task_status=task_status, **options
        )
    )


async def test_shutdown_cancels_held_request_after_drain_timeout(
    fake_runtime: FakeRuntime, socket_path: str, nursery: trio.Nursery
):
    server = await _start(nursery, fake_runtime, socket_path, drain_timeout_s=0.2)
    async with await AsyncClient.connect(socket_path) as client:
        await client.hello()
        stream = await client.generate(prompt="hold")
        assert isinstance(await stream.__anext__(), Chunk)
        server.shutdown()
        with trio.fail_after(10):
            rest = [reply async for reply in stream]
    assert isinstance(rest[-1], Done)
    assert rest[-1].finish_reason == "cancelled"
    with trio.fail_after(10):
        while os.path.exists(socket_path):
            await trio.sleep(0.01)


async def test_shutdown_rejects_new_generate_while_draining(
    fake_runtime: FakeRuntime, socket_path: str, nursery: trio.Nursery
):
    server = await _start(nursery, fake_runtime, socket_path, drain_timeout_s=30)
    async with await AsyncClient.connect(socket_path) as client:
        await client.hello()
        held = await client.generate(prompt="hold")
        assert isinstance(await held.__anext__(), Chunk)
        server.shutdown()
        with trio.fail_after(10):
            while (await client.health()).status != "draining":
                await trio.sleep(0.01)
        late = await client.generate(prompt="too late")
        try:
            await late.collect()
        except RemoteError as error:
            assert error.code == "overloaded"
        else:
            raise AssertionError("a generate request started during shutdown")
        await client.cancel(held.request_id)
        _, done = await held.collect()
    assert done.finish_reason == "cancelled"


async def test_slow_reader_disconnected_others_served(
    fake_runtime: FakeRuntime, socket_path: str, nursery: trio.Nursery
):
    limits = ServerLimits(send_buffer_bytes=16 * 1024, send_timeout_s=30)
    server = await _start(nursery, fake_runtime, socket_path, limits=limits)
    prompt = " ".join(f"word{index}" for index in range(60))

    slow = await RawPeer.connect(socket_path)
    assert isinstance(await slow.hello(), Welcome)
    requests = [
        msgspec.msgpack.encode(GenerateRequest(request_id=f"r{index}", prompt=prompt))
        for index in range(400)
    ]
    await slow.send(b"".join(len(body).to_bytes(4, "big") + body for body in requests))

    with trio.fail_after(30):
        async with await AsyncClient.connect(socket_path) as client:
            await client.hello("healthy")
            text, done = await (await client.generate(prompt="still served")).collect()
            while server.connection_count > 1:
                await trio.sleep(0.01)
    assert text == "still served "
    assert done.finish_reason == "eos"
    assert await slow.closed_by_server()
    assert server.active_requests == 0

"""Server behaviour that needs a scripted runtime: held requests, model failures, drain."""

from __future__ import annotations

import pytest
import trio
from server_fakes import FakeRuntime

from draftwise.actors.server import UnixSocketServer
from draftwise.protocol import AsyncClient, Chunk, Done, RemoteError


async def test_server_streams_words_in_order(fake_client: AsyncClient):
    stream = await fake_client.generate(prompt="one two three")
    text, done = await stream.collect()
    assert text == "one two three "
    assert done.finish_reason == "eos"
    assert done.usage.completion_tokens == 3


async def test_server_cancel_ends_with_cancelled_done(
    fake_client: AsyncClient, fake_runtime: FakeRuntime
):
    stream = await fake_client.generate(prompt="hold")
    first = await stream.__anext__()
    assert isinstance(first, Chunk)
    reply = await fake_client.cancel(stream.request_id)
    assert reply.cancelled
    rest = [item async for item in stream]
    assert isinstance(rest[-1], Done)
    assert rest[-1].finish_reason == "cancelled"


async def test_server_model_failure_is_internal_error(
    fake_client: AsyncClient, fake_runtime: FakeRuntime
):
    stream = await fake_client.generate(prompt="boom")
    with pytest.raises(RemoteError) as raised:
        await stream.collect()
    assert raised.value.code == "internal"
    assert "RuntimeError" in str(raised.value)
    text, done = await (await fake_client.generate(prompt="after the failure")).collect()
    assert text == "after the failure "
    assert done.finish_reason == "eos"


async def test_server_disconnect_aborts_runtime_request(
    fake_server: UnixSocketServer, fake_runtime: FakeRuntime
):
    async with await AsyncClient.connect(fake_server.socket_path) as client:
        await client.hello()
        stream = await client.generate(prompt="hold")
        assert isinstance(await stream.__anext__(), Chunk)
    with trio.fail_after(10):
        while fake_server.active_requests:
            await trio.sleep(0.01)
    assert list(fake_runtime.finished.values()) == ["aborted"]

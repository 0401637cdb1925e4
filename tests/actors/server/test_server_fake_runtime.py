"""Server behaviour that needs a scripted runtime: held requests, model failures, drain."""

from __future__ import annotations

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

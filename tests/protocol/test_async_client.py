"""AsyncClient against the scripted fake server on a temporary Unix socket."""

from __future__ import annotations

import re

import pytest
import trio
from fake_protocol_server import MODEL_NAME, FakeServer

from draftwise.protocol import (
    AsyncClient,
    CancelRequest,
    ChatMessage,
    Chunk,
    ClientError,
    ConnectionClosedError,
    Done,
    ErrorCode,
    GenerateRequest,
    GenerateStream,
    Hello,
    ProtocolError,
    RemoteError,
    ReplyOverflowError,
)

TEST_TIMEOUT_S = 10


async def _read_all(stream: GenerateStream) -> list[Chunk | Done]:
    return [reply async for reply in stream]


async def test_async_client_hello_returns_welcome(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        welcome = await client.hello("tests", timeout=TEST_TIMEOUT_S)
    assert welcome.models == [MODEL_NAME]
    assert client.welcome == welcome
    assert fake_server.received == [Hello(protocol_version=1, client_name="tests")]


async def test_async_client_generate_streams_chunks_then_done(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        stream = await client.generate(prompt="one two three", max_tokens=8)
        replies = await _read_all(stream)

    assert [type(reply) for reply in replies] == [Chunk, Chunk, Chunk, Done]
    assert "".join(reply.text for reply in replies if isinstance(reply, Chunk)) == (
        "one two three "
    )
    done = replies[-1]
    assert isinstance(done, Done)
    assert stream.done == done
    assert done.finish_reason == "eos"
    assert done.session_id in fake_server.sessions
    assert all(reply.request_id == stream.request_id for reply in replies)


async def test_async_client_collect_joins_text(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        stream = await client.generate(
            messages=[ChatMessage(role="user", content="a b c d")], max_tokens=2
        )
        text, done = await stream.collect()
    assert text == "a b "
    assert done.finish_reason == "length"
    assert done.usage.completion_tokens == 2


async def test_async_client_two_generates_multiplexed(fake_server: FakeServer) -> None:
    fake_server.batch_size = 2
    results: dict[str, list[Chunk | Done]] = {}

    async def consume(stream: GenerateStream) -> None:
        results[stream.request_id] = await _read_all(stream)

    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        with trio.fail_after(TEST_TIMEOUT_S):
            first = await client.generate(prompt="a1 a2 a3", request_id="first")
            second = await client.generate(prompt="b1 b2 b3 b4", request_id="second")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume, first)
                nursery.start_soon(consume, second)

    first_text = [reply.text for reply in results["first"] if isinstance(reply, Chunk)]
    second_text = [reply.text for reply in results["second"] if isinstance(reply, Chunk)]
    assert first_text == ["a1 ", "a2 ", "a3 "]
    assert second_text == ["b1 ", "b2 ", "b3 ", "b4 "]
    assert all(reply.request_id == "first" for reply in results["first"])
    assert all(reply.request_id == "second" for reply in results["second"])
    assert isinstance(results["first"][-1], Done)
    assert isinstance(results["second"][-1], Done)
    wire_order = [reply.request_id for reply in fake_server.sent if isinstance(reply, Chunk)]
    assert wire_order[:4] == ["first", "second", "first", "second"]


async def test_async_client_error_reply_raises_remote_error(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        stream = await client.generate(prompt="x", session_id="no-such-session")
        with pytest.raises(RemoteError) as caught:
            await stream.__anext__()
        assert caught.value.code == ErrorCode.UNKNOWN_SESSION
        assert caught.value.request_id == stream.request_id
        assert "no-such-session" in str(caught.value)
        assert [reply async for reply in stream] == []
        health = await client.health(timeout=TEST_TIMEOUT_S)
    assert health.status == "ok"


async def test_async_client_mid_stream_error(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        stream = await client.generate(prompt="fail")
        first = await stream.__anext__()
        assert isinstance(first, Chunk)
        with pytest.raises(RemoteError) as caught:
            await stream.__anext__()
    assert caught.value.code == ErrorCode.INTERNAL


async def test_async_client_cancel_ends_stream_cancelled(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        stream = await client.generate(prompt="hold")
        assert isinstance(await stream.__anext__(), Chunk)
        reply = await client.cancel(stream.request_id, timeout=TEST_TIMEOUT_S)
        done = await stream.__anext__()
        unknown = await client.cancel("never-sent", timeout=TEST_TIMEOUT_S)
    assert reply.cancelled is True
    assert reply.target_request_id == stream.request_id
    assert isinstance(done, Done)
    assert done.finish_reason == "cancelled"
    assert unknown.cancelled is False


async def test_async_client_stream_aclose_sends_cancel(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        async with await client.generate(prompt="hold") as stream:
            assert isinstance(await stream.__anext__(), Chunk)
        # The server reads frames in order, so this reply proves the cancel arrived.
        await client.health(timeout=TEST_TIMEOUT_S)
        assert [reply async for reply in stream] == []
    cancels = [request for request in fake_server.received if isinstance(request, CancelRequest)]
    assert [cancel.target_request_id for cancel in cancels] == [stream.request_id]


async def test_async_client_info_requests(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        _, done = await (await client.generate(prompt="p")).collect()
        stats = await client.stats(timeout=TEST_TIMEOUT_S)
        models = await client.models(timeout=TEST_TIMEOUT_S)
        health = await client.health(timeout=TEST_TIMEOUT_S)
        closed = await client.close_session(done.session_id, timeout=TEST_TIMEOUT_S)
        with pytest.raises(RemoteError) as caught:
            await client.close_session(done.session_id, timeout=TEST_TIMEOUT_S)
    assert stats.active_sessions == 1
    assert [model.name for model in models.models] == [MODEL_NAME]
    assert health.status == "ok"
    assert closed.session_id == done.session_id
    assert caught.value.code == ErrorCode.UNKNOWN_SESSION


async def test_async_client_timeout_keeps_connection(
    fake_server: FakeServer, autojump_clock: trio.testing.MockClock
) -> None:
    fake_server.answer_health = False
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        with pytest.raises(TimeoutError, match="HealthReply"):
            await client.health(timeout=5)
        stats = await client.stats(timeout=5)
    assert stats.request_id != ""


async def test_async_client_stream_timeout(
    fake_server: FakeServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        stream = await client.generate(prompt="hold", timeout=5)
        assert isinstance(await stream.__anext__(), Chunk)
        with pytest.raises(TimeoutError, match=stream.request_id):
            await stream.__anext__()
        await stream.aclose()


async def test_async_client_hello_required(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        with pytest.raises(RemoteError) as caught:
            await client.stats(timeout=TEST_TIMEOUT_S)
    assert caught.value.code == ErrorCode.HELLO_REQUIRED


async def test_async_client_hello_rejected_version(fake_server: FakeServer) -> None:
    fake_server.protocol_version = 99
    async with await AsyncClient.connect(fake_server.path) as client:
        with pytest.raises(RemoteError) as caught:
            await client.hello(timeout=TEST_TIMEOUT_S)
    assert caught.value.code == ErrorCode.UNSUPPORTED_VERSION
    assert caught.value.request_id is None


async def test_async_client_invalid_argument_not_sent(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        with pytest.raises(ProtocolError) as caught:
            await client.generate(prompt="p", sampling=None, max_tokens=0)
        await client.health(timeout=TEST_TIMEOUT_S)
    assert "`$.max_tokens`" in caught.value.message
    assert not any(isinstance(request, GenerateRequest) for request in fake_server.received)


async def test_async_client_invalid_reply_fails_one_request(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        stream = await client.generate(prompt="garble")
        with pytest.raises(ProtocolError) as caught:
            await stream.__anext__()
        health = await client.health(timeout=TEST_TIMEOUT_S)
    assert caught.value.code == ErrorCode.INVALID_REPLY
    assert "`$.token_ids[0]`" in caught.value.message
    assert health.status == "ok"
    cancels = [request for request in fake_server.received if isinstance(request, CancelRequest)]
    assert [cancel.target_request_id for cancel in cancels] == [stream.request_id]


async def test_async_client_bad_frame_closes_connection(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        stream = await client.generate(prompt="kill")
        with pytest.raises(ConnectionClosedError, match="unreadable frame"):
            await stream.__anext__()
        with pytest.raises(ConnectionClosedError):
            await client.health(timeout=TEST_TIMEOUT_S)


async def test_async_client_overflow_stops_slow_stream(fake_server: FakeServer) -> None:
    words = " ".join(f"w{index}" for index in range(10))
    async with await AsyncClient.connect(fake_server.path, max_buffered_replies=2) as client:
        await client.hello()
        stream = await client.generate(prompt=words)
        # The fake server streams a generate request whole before reading the next one.
        await client.health(timeout=TEST_TIMEOUT_S)
        first = await stream.__anext__()
        second = await stream.__anext__()
        with pytest.raises(ReplyOverflowError, match="max_buffered_replies"):
            await stream.__anext__()
        await client.health(timeout=TEST_TIMEOUT_S)
    assert isinstance(first, Chunk)
    assert isinstance(second, Chunk)
    cancels = [request for request in fake_server.received if isinstance(request, CancelRequest)]
    assert [cancel.target_request_id for cancel in cancels] == [stream.request_id]


async def test_async_client_close_fails_open_stream(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        stream = await client.generate(prompt="hold")
        assert isinstance(await stream.__anext__(), Chunk)
    with pytest.raises(ConnectionClosedError, match="client closed"):
        await stream.__anext__()
    with pytest.raises(ConnectionClosedError):
        await client.health()


async def test_async_client_duplicate_request_id(fake_server: FakeServer) -> None:
    async with await AsyncClient.connect(fake_server.path) as client:
        await client.hello()
        stream = await client.generate(prompt="hold", request_id="same")
        with pytest.raises(ClientError, match="already in flight"):
            await client.generate(prompt="x", request_id="same")
        await stream.aclose()


async def test_async_client_requires_async_with(fake_server: FakeServer) -> None:
    client = await AsyncClient.connect(fake_server.path)
    with pytest.raises(ClientError, match="async with"):
        await client.stats()
    await client.aclose()


async def test_async_client_connect_missing_socket(socket_path: str) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(socket_path)):
        await AsyncClient.connect(socket_path)


async def test_async_client_body_exception_propagates_unwrapped(fake_server: FakeServer) -> None:
    with pytest.raises(KeyError, match="from the body"):
        async with await AsyncClient.connect(fake_server.path) as client:
            await client.hello()
            raise KeyError("from the body")

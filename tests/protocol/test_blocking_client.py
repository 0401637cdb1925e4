"""Blocking Client against the fake server; each scenario runs in a worker thread."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import pytest
import trio
from fake_protocol_server import MODEL_NAME, FakeServer

from draftwise.protocol import (
    CancelRequest,
    ChatMessage,
    Chunk,
    Client,
    ClientError,
    ConnectionClosedError,
    Done,
    ErrorCode,
    ProtocolError,
    RemoteError,
)

TEST_TIMEOUT_S = 10

_ResultT = TypeVar("_ResultT")


async def _in_thread(scenario: Callable[[], _ResultT]) -> _ResultT:
    """Run a blocking scenario while the fake server keeps serving on the event loop."""
    with trio.fail_after(TEST_TIMEOUT_S * 3):
        return await trio.to_thread.run_sync(scenario)


def _connect(server: FakeServer) -> Client:
    client = Client.connect(server.path, timeout=TEST_TIMEOUT_S)
    client.hello("blocking-tests", timeout=TEST_TIMEOUT_S)
    return client


async def test_client_generate_yields_chunks_then_done(fake_server: FakeServer) -> None:
    def scenario() -> list[Chunk | Done]:
        with _connect(fake_server) as client:
            assert client.welcome is not None
            assert client.welcome.models == [MODEL_NAME]
            replies = client.generate(
                messages=[ChatMessage(role="user", content="x y z")], timeout=TEST_TIMEOUT_S
            )
            return list(replies)

    replies = await _in_thread(scenario)
    assert [type(reply) for reply in replies] == [Chunk, Chunk, Chunk, Done]
    assert [reply.text for reply in replies if isinstance(reply, Chunk)] == ["x ", "y ", "z "]
    done = replies[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "eos"


async def test_client_stream_false_sends_one_chunk(fake_server: FakeServer) -> None:
    def scenario() -> list[Chunk | Done]:
        with _connect(fake_server) as client:
            return list(client.generate(prompt="x y z", stream=False, timeout=TEST_TIMEOUT_S))

    replies = await _in_thread(scenario)
    assert [type(reply) for reply in replies] == [Chunk, Done]
    first = replies[0]
    assert isinstance(first, Chunk)
    assert first.text == "x y z "
    assert first.token_ids == [0, 1, 2]


async def test_client_info_requests(fake_server: FakeServer) -> None:
    def scenario() -> None:
        with _connect(fake_server) as client:
            done = list(client.generate(prompt="p"))[-1]
            assert isinstance(done, Done)
            assert client.stats(timeout=TEST_TIMEOUT_S).active_sessions == 1
            models = client.models(timeout=TEST_TIMEOUT_S).models
            assert [model.name for model in models] == [MODEL_NAME]
            assert client.health(timeout=TEST_TIMEOUT_S).status == "ok"
            closed = client.close_session(done.session_id, timeout=TEST_TIMEOUT_S)
            assert closed.session_id == done.session_id
            assert client.cancel("never-sent", timeout=TEST_TIMEOUT_S).cancelled is False

    await _in_thread(scenario)


async def test_client_remote_error_keeps_connection(fake_server: FakeServer) -> None:
    def scenario() -> RemoteError:
        with _connect(fake_server) as client:
            with pytest.raises(RemoteError) as caught:
                list(client.generate(prompt="p", session_id="gone"))
            assert client.health(timeout=TEST_TIMEOUT_S).status == "ok"
            return caught.value

    error = await _in_thread(scenario)
    assert error.code == ErrorCode.UNKNOWN_SESSION
    assert "gone" in error.reply.message


async def test_client_mid_stream_error(fake_server: FakeServer) -> None:
    def scenario() -> tuple[list[Chunk | Done], RemoteError]:
        received: list[Chunk | Done] = []
        with _connect(fake_server) as client:
            with pytest.raises(RemoteError) as caught:
                for reply in client.generate(prompt="fail", timeout=TEST_TIMEOUT_S):
                    received.append(reply)
        return received, caught.value

    received, error = await _in_thread(scenario)
    assert [type(reply) for reply in received] == [Chunk]
    assert error.code == ErrorCode.INTERNAL


async def test_client_break_cancels_and_drains(fake_server: FakeServer) -> None:
    def scenario() -> str:
        with _connect(fake_server) as client:
            replies = client.generate(prompt="hold", timeout=TEST_TIMEOUT_S)
            first = next(replies)
            assert isinstance(first, Chunk)
            replies.close()
            assert client.health(timeout=TEST_TIMEOUT_S).status == "ok"
            return first.request_id

    request_id = await _in_thread(scenario)
    cancels = [request for request in fake_server.received if isinstance(request, CancelRequest)]
    assert [cancel.target_request_id for cancel in cancels] == [request_id]
    done = [reply for reply in fake_server.sent if isinstance(reply, Done)]
    assert [reply.finish_reason for reply in done] == ["cancelled"]


async def test_client_next_request_cancels_open_stream(fake_server: FakeServer) -> None:
    def scenario() -> None:
        with _connect(fake_server) as client:
            abandoned = client.generate(prompt="hold", timeout=TEST_TIMEOUT_S)
            assert isinstance(next(abandoned), Chunk)
            never_started = client.generate(prompt="hold", timeout=TEST_TIMEOUT_S)
            assert client.health(timeout=TEST_TIMEOUT_S).status == "ok"
            with pytest.raises(ClientError, match="later request"):
                next(abandoned)
            with pytest.raises(ClientError, match="later request"):
                next(never_started)

    await _in_thread(scenario)
    cancels = [request for request in fake_server.received if isinstance(request, CancelRequest)]
    assert len(cancels) == 2


async def test_client_timeout_keeps_connection(fake_server: FakeServer) -> None:
    fake_server.answer_health = False

    def scenario() -> None:
        with _connect(fake_server) as client:
            with pytest.raises(TimeoutError, match="HealthReply"):
                client.health(timeout=0.05)
            assert client.stats(timeout=TEST_TIMEOUT_S).cache_budget_bytes > 0

    await _in_thread(scenario)


async def test_client_invalid_reply_then_usable(fake_server: FakeServer) -> None:
    def scenario() -> ProtocolError:
        with _connect(fake_server) as client:
            with pytest.raises(ProtocolError) as caught:
                list(client.generate(prompt="garble", timeout=TEST_TIMEOUT_S))
            assert client.health(timeout=TEST_TIMEOUT_S).status == "ok"
            return caught.value

    error = await _in_thread(scenario)
    assert error.code == ErrorCode.INVALID_REPLY
    assert "`$.token_ids[0]`" in error.message
    cancels = [request for request in fake_server.received if isinstance(request, CancelRequest)]
    assert len(cancels) == 1


async def test_client_bad_frame_closes_connection(fake_server: FakeServer) -> None:
    def scenario() -> None:
        with _connect(fake_server) as client:
            with pytest.raises(ProtocolError) as caught:
                list(client.generate(prompt="kill", timeout=TEST_TIMEOUT_S))
            assert caught.value.code == ErrorCode.BAD_FRAME
            with pytest.raises(ConnectionClosedError, match="unreadable frame"):
                client.health(timeout=TEST_TIMEOUT_S)

    await _in_thread(scenario)


async def test_client_hello_rejected_version(fake_server: FakeServer) -> None:
    fake_server.protocol_version = 2

    def scenario() -> RemoteError:
        with Client.connect(fake_server.path) as client:
            with pytest.raises(RemoteError) as caught:
                client.hello(timeout=TEST_TIMEOUT_S)
            return caught.value

    error = await _in_thread(scenario)
    assert error.code == ErrorCode.UNSUPPORTED_VERSION


async def test_client_invalid_argument_raises_before_send(fake_server: FakeServer) -> None:
    def scenario() -> ProtocolError:
        with _connect(fake_server) as client:
            with pytest.raises(ProtocolError) as caught:
                client.generate(prompt="p", stop=["ok", ""])
            return caught.value

    error = await _in_thread(scenario)
    assert "`$.stop[1]`" in error.message


def test_client_connect_missing_socket(socket_path: str) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(socket_path)):
        Client.connect(socket_path)

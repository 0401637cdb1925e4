"""Bad input gets an error reply or a closed connection, and never stops a healthy session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
import pytest
import trio
from raw_peer import RawPeer

from draftwise.actors.server import UnixSocketServer
from draftwise.protocol import (
    AsyncClient,
    Chunk,
    Done,
    ErrorReply,
    GenerateRequest,
    SamplingParams,
    Welcome,
)

HEALTHY_PROMPT = " ".join(f"w{index}" for index in range(30))


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def _generate_body(**fields: object) -> bytes:
    return msgspec.msgpack.encode({"type": "generate_request", "request_id": "bad", **fields})


def _invalid_utf8_body() -> bytes:
    body = _generate_body(prompt="XXXX")
    assert body.count(b"XXXX") == 1
    return body.replace(b"XXXX", b"\xff\xfe\xfd\xfc")


# name -> (bytes sent after hello, expected error code, connection stays open)
FRAME_CASES: dict[str, tuple[bytes, str, bool]] = {
    "garbage_bytes": (b"GET / HTTP/1.1\r\n\r\n", "frame_too_large", False),
    "over_long_length": (b"\xff\xff\xff\xf0" + b"x" * 16, "frame_too_large", False),
    "zero_length": (b"\x00\x00\x00\x00", "bad_frame", False),
    "body_not_msgpack": (_frame(b"\xc1\xc1"), "bad_frame", True),
    "wrong_type_prompt": (_frame(_generate_body(prompt=123)), "invalid_request", True),
    "missing_prompt": (_frame(_generate_body()), "invalid_request", True),
    "missing_request_id": (
        _frame(msgspec.msgpack.encode({"type": "stats_request"})),
        "invalid_request",
        True,
    ),
    "unknown_type": (
        _frame(msgspec.msgpack.encode({"type": "launch_request", "request_id": "bad"})),
        "invalid_request",
        True,
    ),
    "not_a_map": (_frame(msgspec.msgpack.encode([1, 2, 3])), "invalid_request", True),
    "invalid_utf8": (_frame(_invalid_utf8_body()), "bad_frame", True),
    "empty_prompt": (_frame(_generate_body(prompt="")), "invalid_request", True),
    "negative_max_tokens": (
        _frame(_generate_body(prompt="hi", max_tokens=-5)),
        "invalid_request",
        True,
    ),
    "huge_max_tokens": (
        _frame(_generate_body(prompt="hi", max_tokens=10**12)),
        "invalid_request",
        True,
    ),
    "negative_temperature": (
        _frame(_generate_body(prompt="hi", sampling={"temperature": -1.0})),
        "invalid_request",
        True,
    ),
    "nan_temperature": (
        _frame(_generate_body(prompt="hi", sampling={"temperature": float("nan")})),
        "invalid_request",
        True,
    ),
    "top_p_zero": (
        _frame(_generate_body(prompt="hi", sampling={"top_p": 0.0})),
        "invalid_request",
        True,
    ),
    "unknown_field": (
        _frame(_generate_body(prompt="hi", temprature=0.5)),
        "invalid_request",
        True,
    ),
    "unknown_model": (
        _frame(_generate_body(prompt="hi", model="no-such-model")),
        "unknown_model",
        True,
    ),
    "unknown_session": (
        _frame(_generate_body(prompt="hi", session_id="no-such-session")),
        "unknown_session",
        True,
    ),
}


async def _healthy_stream(client: AsyncClient, results: list[tuple[str, Done]]) -> None:
    stream = await client.generate(prompt=HEALTHY_PROMPT, max_tokens=40)
    token_ids: list[int] = []
    parts: list[str] = []
    async for reply in stream:
        if isinstance(reply, Chunk):
            token_ids.extend(reply.token_ids)
            parts.append(reply.text)
    assert stream.done is not None
    assert len(token_ids) == stream.done.usage.completion_tokens
    results.append(("".join(parts), stream.done))


async def _with_healthy_session(
    server: UnixSocketServer, bad_input: Callable[[], Awaitable[None]]
) -> None:
    """Run `bad_input` while a healthy client streams, then check that client end to end."""
    results: list[tuple[str, Done]] = []
    async with await AsyncClient.connect(server.socket_path) as client:
        await client.hello("healthy")
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_healthy_stream, client, results)
                await bad_input()
            await _healthy_stream(client, results)
            stats = await client.stats()
    assert len(results) == 2
    assert stats.active_requests == 0


@pytest.mark.parametrize("case", sorted(FRAME_CASES))
async def test_server_bad_frame_rejected(case: str, server: UnixSocketServer):
    data, code, stays_open = FRAME_CASES[case]

    async def send_bad_input() -> None:
        peer = await RawPeer.connect(server.socket_path)
        assert isinstance(await peer.hello(), Welcome)
        await peer.send(data)
        reply = await peer.receive()
        assert isinstance(reply, ErrorReply)
        assert reply.code == code
        assert reply.message
        if stays_open:
            assert isinstance(await peer.hello(), Welcome)
            await peer.aclose()
        else:
            assert reply.request_id is None
            assert await peer.closed_by_server()

    await _with_healthy_session(server, send_bad_input)


async def test_server_request_before_hello_rejected(server: UnixSocketServer):
    async def send_bad_input() -> None:
        peer = await RawPeer.connect(server.socket_path)
        await peer.send_message(GenerateRequest(request_id="early", prompt="hi"))
        reply = await peer.receive()
        assert isinstance(reply, ErrorReply)
        assert reply.code == "hello_required"
        assert reply.request_id == "early"
        assert isinstance(await peer.hello(), Welcome)
        await peer.aclose()

    await _with_healthy_session(server, send_bad_input)


async def test_server_unsupported_version_rejected(server: UnixSocketServer):
    async def send_bad_input() -> None:
        peer = await RawPeer.connect(server.socket_path)
        await peer.send(_frame(msgspec.msgpack.encode(
            {"type": "hello", "protocol_version": 99, "client_name": "future"}
        )))  # fmt: skip
        reply = await peer.receive()
        assert isinstance(reply, ErrorReply)
        assert reply.code == "unsupported_version"
        assert isinstance(await peer.hello(), Welcome)
        await peer.aclose()

    await _with_healthy_session(server, send_bad_input)


async def test_server_truncated_frame_closed(server: UnixSocketServer):
    async def send_bad_input() -> None:
        peer = await RawPeer.connect(server.socket_path)
        assert isinstance(await peer.hello(), Welcome)
        await peer.send(b"\x00\x00\x01\x00" + b"\x81" * 10)
        await peer.stream.send_eof()
        assert await peer.closed_by_server()

    await _with_healthy_session(server, send_bad_input)


async def test_server_prompt_longer_than_context_rejected(
    server: UnixSocketServer, context_length: int
):
    async def send_bad_input() -> None:
        async with await AsyncClient.connect(server.socket_path) as client:
            await client.hello("long")
            prompt = " ".join(["x"] * (context_length + 8))
            stream = await client.generate(prompt=prompt, max_tokens=4)
            with pytest.raises(Exception) as raised:
                await stream.collect()
            assert getattr(raised.value, "code", None) == "invalid_request"
            assert str(context_length) in str(raised.value)

    await _with_healthy_session(server, send_bad_input)


async def test_server_duplicate_request_id_rejected(server: UnixSocketServer):
    async def send_bad_input() -> None:
        peer = await RawPeer.connect(server.socket_path)
        assert isinstance(await peer.hello(), Welcome)
        request = GenerateRequest(request_id="twice", prompt=HEALTHY_PROMPT, max_tokens=40)
        await peer.send(b"".join([_frame(msgspec.msgpack.encode(request))] * 2))
        codes = []
        while True:
            reply = await peer.receive()
            if isinstance(reply, ErrorReply):
                codes.append(reply.code)
            if isinstance(reply, Done):
                break
        assert codes == ["duplicate_request"]
        await peer.aclose()

    await _with_healthy_session(server, send_bad_input)


async def test_server_disconnect_mid_stream_cancels(server: UnixSocketServer):
    async def send_bad_input() -> None:
        peer = await RawPeer.connect(server.socket_path)
        assert isinstance(await peer.hello(), Welcome)
        request = GenerateRequest(
            request_id="gone", prompt=HEALTHY_PROMPT, max_tokens=200,
            sampling=SamplingParams(temperature=0.0),
        )  # fmt: skip
        await peer.send_message(request)
        await peer.receive()
        await peer.aclose()

    await _with_healthy_session(server, send_bad_input)

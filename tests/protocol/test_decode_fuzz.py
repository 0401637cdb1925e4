"""Fuzzing the receive path: arbitrary input raises nothing but ProtocolError."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from draftwise.protocol import (
    REPLY_TYPES,
    REQUEST_TYPES,
    FrameDecoder,
    ProtocolError,
    Reply,
    Request,
    decode_reply,
    decode_request,
    encode_frame,
)

FUZZ_MAX_FRAME_BYTES = 4096

msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=70)
    | st.binary(max_size=20)
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=20) | st.integers(-5, 20), children, max_size=5)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "request_id", "session_id", "messages", "prompt", "model", "draft", "sampling",
        "stop", "max_tokens", "speculation", "stream", "protocol_version", "client_name",
        "target_request_id", "role", "content", "temperature", "top_k", "top_p", "seed",
        "text", "token_ids", "round", "finish_reason", "usage", "code", "message",
    ]
)  # fmt: skip


def _message_like(types: tuple[str, ...]) -> st.SearchStrategy[dict[Any, Any]]:
    """Maps with a plausible `type` and plausible field names holding arbitrary values."""
    return st.builds(
        lambda message_type, fields: {"type": message_type, **fields},
        st.sampled_from(types) | st.text(max_size=10),
        st.dictionaries(field_names | st.text(max_size=10), msgpack_values, max_size=6),
    )


def _split(data: bytes, cut_points: list[int]) -> list[bytes]:
    cuts = sorted({min(point, len(data)) for point in cut_points})
    bounds = [0, *cuts, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


def _decode_stream(chunks: list[bytes]) -> list[Request]:
    """Run chunks through a FrameDecoder and decode_request the way a server loop does."""
    decoder = FrameDecoder(FUZZ_MAX_FRAME_BYTES)
    decoded: list[Request] = []
    for chunk in chunks:
        decoder.feed(chunk)
        for body in decoder.frames():
            try:
                decoded.append(decode_request(body))
            except ProtocolError:
                continue
    return decoded


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=2048), cut_points=st.lists(st.integers(0, 2048), max_size=6))
def test_frame_decoder_arbitrary_bytes_raise_only_protocol_error(
    data: bytes, cut_points: list[int]
) -> None:
    try:
        _decode_stream(_split(data, cut_points))
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    bodies=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4),
    cut_points=st.lists(st.integers(0, 1500), max_size=6),
)
def test_frame_decoder_well_framed_garbage_keeps_every_frame(
    bodies: list[bytes], cut_points: list[int]
) -> None:
    stream = b"".join(len(body).to_bytes(4, "big") + body for body in bodies)
    decoder = FrameDecoder(FUZZ_MAX_FRAME_BYTES)
    received: list[bytes] = []
    for chunk in _split(stream, cut_points):
        decoder.feed(chunk)
        received += decoder.frames()
    assert received == bodies
    for body in received:
        try:
            decode_request(body)
        except ProtocolError:
            pass


@settings(max_examples=150, deadline=None)
@given(message=_message_like(REQUEST_TYPES))
def test_decode_request_message_like_maps(message: dict[Any, Any]) -> None:
    body = msgspec.msgpack.encode(message)
    try:
        request = decode_request(body)
    except ProtocolError as exc:
        assert exc.code in ("bad_frame", "invalid_request")
        assert exc.request_id is None or 1 <= len(exc.request_id) <= 64
        return
    assert isinstance(request, Request)
    assert msgspec.msgpack.decode(encode_frame(request)[4:], type=Request) == request


@settings(max_examples=100, deadline=None)
@given(message=_message_like(REPLY_TYPES))
def test_decode_reply_message_like_maps(message: dict[Any, Any]) -> None:
    body = msgspec.msgpack.encode(message)
    try:
        reply = decode_reply(body)
    except ProtocolError as exc:
        assert exc.code in ("bad_frame", "invalid_reply")
        return
    assert isinstance(reply, Reply)

"""Framing: round trips, split and coalesced frames, and rejected lengths."""

from __future__ import annotations

import struct

import msgspec
import pytest

from draftwise.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    ChatMessage,
    ErrorCode,
    FrameDecoder,
    GenerateRequest,
    Hello,
    ProtocolError,
    StatsRequest,
    decode_request,
    encode_frame,
)
from draftwise.protocol.framing import check_max_frame_bytes

REQUESTS = [
    Hello(protocol_version=1, client_name="test"),
    GenerateRequest(request_id="r1", prompt="def fib(n):", max_tokens=32, stop=["\n\n"]),
    GenerateRequest(
        request_id="r2",
        messages=[ChatMessage(role="user", content="héllo ✓ " * 50)],
        speculation=4,
    ),
    StatsRequest(request_id="r3"),
]


def _frames_of(decoder: FrameDecoder, data: bytes) -> list[bytes]:
    decoder.feed(data)
    return list(decoder.frames())


def test_encode_frame_header_is_body_length() -> None:
    frame = encode_frame(REQUESTS[1])
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert msgspec.msgpack.decode(frame[4:])["type"] == "generate_request"


def test_frame_decoder_round_trips_each_request() -> None:
    decoder = FrameDecoder()
    for request in REQUESTS:
        bodies = _frames_of(decoder, encode_frame(request))
        assert len(bodies) == 1
        assert decode_request(bodies[0]) == request
    assert decoder.buffered_bytes == 0


def test_frame_decoder_split_at_every_position() -> None:
    stream = b"".join(encode_frame(request) for request in REQUESTS)
    for split in range(len(stream) + 1):
        decoder = FrameDecoder()
        bodies = _frames_of(decoder, stream[:split]) + _frames_of(decoder, stream[split:])
        assert [decode_request(body) for body in bodies] == REQUESTS, f"split at {split}"


def test_frame_decoder_one_byte_at_a_time() -> None:
    stream = b"".join(encode_frame(request) for request in REQUESTS)
    decoder = FrameDecoder()
    bodies: list[bytes] = []
    for index in range(len(stream)):
        bodies += _frames_of(decoder, stream[index : index + 1])
    assert [decode_request(body) for body in bodies] == REQUESTS


def test_frame_decoder_coalesced_frames_in_one_chunk() -> None:
    stream = b"".join(encode_frame(request) for request in REQUESTS * 3)
    bodies = _frames_of(FrameDecoder(), stream)
    assert [decode_request(body) for body in bodies] == REQUESTS * 3


def test_frame_decoder_partial_frame_stays_buffered() -> None:
    frame = encode_frame(REQUESTS[0])
    decoder = FrameDecoder()
    assert _frames_of(decoder, frame[:-1]) == []
    assert decoder.buffered_bytes == len(frame) - 1
    assert decoder.next_frame() is None


def test_frame_decoder_rejects_zero_length() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError) as caught:
        decoder.next_frame()
    assert caught.value.code == ErrorCode.BAD_FRAME
    assert "length is 0" in caught.value.message


def test_frame_decoder_rejects_oversize_before_body() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.feed((101).to_bytes(4, "big"))
    with pytest.raises(ProtocolError) as caught:
        decoder.next_frame()
    assert caught.value.code == ErrorCode.FRAME_TOO_LARGE
    assert "101" in caught.value.message
    assert "100" in caught.value.message


def test_frame_decoder_default_max_is_16_mib() -> None:
    decoder = FrameDecoder()
    assert decoder.max_frame_bytes == DEFAULT_MAX_FRAME_BYTES == 16 * 1024 * 1024
    decoder.feed((DEFAULT_MAX_FRAME_BYTES + 1).to_bytes(4, "big"))
    with pytest.raises(ProtocolError):
        decoder.next_frame()


def test_frame_decoder_accepts_length_equal_to_max() -> None:
    decoder = FrameDecoder(max_frame_bytes=5)
    assert _frames_of(decoder, b"\x00\x00\x00\x05abcde") == [b"abcde"]


def test_frame_decoder_returns_good_frames_before_bad_header() -> None:
    good = encode_frame(REQUESTS[0])
    decoder = FrameDecoder()
    decoder.feed(good + b"\x00\x00\x00\x00")
    assert decoder.next_frame() == good[4:]
    with pytest.raises(ProtocolError):
        decoder.next_frame()


def test_frame_decoder_stays_failed_after_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError):
        decoder.next_frame()
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(encode_frame(REQUESTS[0]))
    assert caught.value.code == ErrorCode.BAD_FRAME
    with pytest.raises(ProtocolError):
        decoder.next_frame()


def test_encode_frame_rejects_oversize_message() -> None:
    request = GenerateRequest(request_id="r1", prompt="x" * 200)
    with pytest.raises(ProtocolError) as caught:
        encode_frame(request, max_frame_bytes=100)
    assert caught.value.code == ErrorCode.FRAME_TOO_LARGE
    assert "GenerateRequest" in caught.value.message


@pytest.mark.parametrize("max_frame_bytes", [0, -1, 2**32])
def test_check_max_frame_bytes_rejects_out_of_range(max_frame_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_frame_bytes"):
        check_max_frame_bytes(max_frame_bytes)
    with pytest.raises(ValueError, match="max_frame_bytes"):
        FrameDecoder(max_frame_bytes)

"""Length-prefixed framing: a 4-byte big-endian unsigned length, then that many body bytes.

The body is one msgpack-encoded message. The length counts the body only, never
the header. A receiver checks the length against its maximum frame size as soon
as the header arrives, before it buffers any of the body.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from .errors import ErrorCode, ProtocolError

FRAME_HEADER_BYTES = 4
"""Size of the big-endian unsigned length prefix."""

DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Default maximum body size (16 MiB) for both directions."""

_LENGTH_FIELD_MAX = 2**32 - 1

_encoder = msgspec.msgpack.Encoder()


def check_max_frame_bytes(max_frame_bytes: int) -> int:
    """Return `max_frame_bytes`, or raise ValueError when a 4-byte length cannot hold it."""
    if not 1 <= max_frame_bytes <= _LENGTH_FIELD_MAX:
        raise ValueError(
            f"max_frame_bytes must be between 1 and {_LENGTH_FIELD_MAX} "
            f"(the 4-byte length field), got {max_frame_bytes}"
        )
    return max_frame_bytes


def encode_frame(message: object, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Encode `message` as msgpack and prefix it with its length.

    Raises ProtocolError(FRAME_TOO_LARGE) when the body is longer than
    `max_frame_bytes`, because the receiver would reject it.
    """
    body = _encoder.encode(message)
    if len(body) > max_frame_bytes:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE,
            f"encoded {type(message).__name__} is {len(body)} bytes, over the maximum frame "
            f"size of {max_frame_bytes} bytes; shorten the prompt or messages, or raise "
            f"max_frame_bytes on both ends",
        )
    return len(body).to_bytes(FRAME_HEADER_BYTES, "big") + body


class FrameDecoder:
    """Incremental splitter of a byte stream into frame bodies.

    Feed it bytes as they arrive, split anywhere, and take complete bodies with
    `next_frame()` or `frames()`. A zero length or a length over
    `max_frame_bytes` raises ProtocolError as soon as its header is buffered.
    The stream cannot be resynchronised after that, so the decoder raises the
    same error on every later call, and the connection should be closed.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = check_max_frame_bytes(max_frame_bytes)
        self._buffer = bytearray()
        self._offset = 0
        self._error: ProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as part of a frame.

        A non-zero value when the peer closes the stream means it sent a truncated frame.
        """
        return len(self._buffer) - self._offset

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes. Raises the stored ProtocolError after a framing error."""
        self._raise_if_failed()
        if self._offset:
            # Drop consumed frames once per feed, so coalesced frames cost linear time.
            del self._buffer[: self._offset]
            self._offset = 0
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """Return the next complete frame body, or None until more bytes arrive.

        Raises ProtocolError(BAD_FRAME) for a zero length and
        ProtocolError(FRAME_TOO_LARGE) for a length over `max_frame_bytes`.
        """
        self._raise_if_failed()
        if self.buffered_bytes < FRAME_HEADER_BYTES:
            return None

        body_start = self._offset + FRAME_HEADER_BYTES
        length = int.from_bytes(self._buffer[self._offset : body_start], "big")
        self._check_length(length)
        if len(self._buffer) - body_start < length:
            return None

        body = bytes(self._buffer[body_start : body_start + length])
        self._offset = body_start + length
        return body

    def frames(self) -> Iterator[bytes]:
        """Yield every complete frame body buffered so far, then stop."""
        while (body := self.next_frame()) is not None:
            yield body

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            # A fresh exception each time, so tracebacks do not pile up on one object.
            raise ProtocolError(self._error.code, self._error.message)

    def _check_length(self, length: int) -> None:
        if length == 0:
            self._error = ProtocolError(
                ErrorCode.BAD_FRAME,
                "frame length is 0; every frame carries a msgpack body of at least 1 byte",
            )
        elif length > self.max_frame_bytes:
            self._error = ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame length {length} bytes is over the maximum frame size of "
                f"{self.max_frame_bytes} bytes; send a shorter message or raise "
                f"max_frame_bytes on both ends",
            )
        self._raise_if_failed()

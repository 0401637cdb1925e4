"""Decoding frame bodies into typed messages, and validating requests before they are sent.

Both decoders raise only ProtocolError: BAD_FRAME for a body that is not
msgpack, and INVALID_REQUEST or INVALID_REPLY for msgpack that does not match
a message type. The framing is intact in every case, so the connection can
continue after an `ErrorReply`.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar, get_args

import msgspec

from .base import MAX_ID_CHARS, snake_case_tag
from .errors import ErrorCode, ProtocolError
from .framing import DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES, encode_frame
from .reply_messages import Reply
from .request_messages import Request

_MessageT = TypeVar("_MessageT")

_request_decoder: msgspec.msgpack.Decoder[Request] = msgspec.msgpack.Decoder(Request)
_reply_decoder: msgspec.msgpack.Decoder[Reply] = msgspec.msgpack.Decoder(Reply)

REQUEST_TYPES = tuple(snake_case_tag(member.__name__) for member in get_args(Request))
"""Every `type` tag a request may carry."""

REPLY_TYPES = tuple(snake_case_tag(member.__name__) for member in get_args(Reply))
"""Every `type` tag a reply may carry."""


class _EnvelopeProbe(msgspec.Struct):
    """Lenient view of a message body, used only to address an error about it."""

    type: Any = None
    request_id: Any = None


_probe_decoder = msgspec.msgpack.Decoder(_EnvelopeProbe)


def decode_request(body: bytes) -> Request:
    """Decode one frame body into a request, or raise ProtocolError.

    The error's request_id is the body's `request_id` when that is a valid id,
    so the server can address its `ErrorReply`.
    """
    return _decode(_request_decoder, body, ErrorCode.INVALID_REQUEST, "request", REQUEST_TYPES)


def decode_reply(body: bytes) -> Reply:
    """Decode one frame body into a reply, or raise ProtocolError."""
    return _decode(_reply_decoder, body, ErrorCode.INVALID_REPLY, "reply", REPLY_TYPES)


def encode_request_frame(
    request: Request, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> bytes:
    """Validate `request` the way a server decodes it, then encode it as a frame.

    Constructing a Struct does not check its `Meta` constraints, so a client
    that calls this learns about an invalid field before sending it. Raises
    ProtocolError(INVALID_REQUEST) with the path to the bad field, or
    ProtocolError(FRAME_TOO_LARGE).
    """
    frame = encode_frame(request, max_frame_bytes=max_frame_bytes)
    decode_request(frame[FRAME_HEADER_BYTES:])
    return frame


def new_request_id() -> str:
    """Return a fresh random request id (32 hex digits)."""
    return uuid.uuid4().hex


def _decode(
    decoder: msgspec.msgpack.Decoder[_MessageT],
    body: bytes,
    invalid_code: str,
    noun: str,
    known_types: tuple[str, ...],
) -> _MessageT:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        # ValidationError subclasses DecodeError, so it is caught first.
        message_type, request_id = _probe_envelope(body)
        subject = message_type if message_type in known_types else noun
        detail = str(exc)
        if "`$.type`" in detail or "field `type`" in detail:
            detail += f"; `type` must be one of {', '.join(known_types)}"
        raise ProtocolError(
            invalid_code, f"invalid {subject}: {detail}", request_id=request_id
        ) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame body is not msgpack: {exc}") from None
    except RecursionError:
        raise ProtocolError(
            ErrorCode.BAD_FRAME, "frame body nests containers too deeply to decode"
        ) from None


def _probe_envelope(body: bytes) -> tuple[str | None, str | None]:
    """Return the body's `type` and `request_id` where they are short strings, else None."""
    try:
        probe = _probe_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None, None
    message_type = probe.type if _is_short_text(probe.type) else None
    request_id = probe.request_id if _is_short_text(probe.request_id) else None
    return message_type, request_id


def _is_short_text(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= MAX_ID_CHARS

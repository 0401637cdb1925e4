"""Exceptions and error codes of the wire protocol.

`ProtocolError` covers bytes that do not form a valid frame or message. The
client exceptions derive from `ClientError`, and `RemoteError` carries the
`ErrorReply` a server sent.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .reply_messages import ErrorReply


class ErrorCode(enum.StrEnum):
    """Values of `ErrorReply.code` and `ProtocolError.code`.

    The wire field is a plain snake_case string, so a newer server may send a
    code that is not listed here. Compare against these members, which are
    `str` instances.
    """

    BAD_FRAME = "bad_frame"
    """A frame whose length header or msgpack body cannot be read."""

    FRAME_TOO_LARGE = "frame_too_large"
    """A frame longer than the receiver's maximum frame size."""

    INVALID_REQUEST = "invalid_request"
    """A readable request with an unknown `type` or a missing or invalid field."""

    INVALID_REPLY = "invalid_reply"
    """A reply a client cannot use. Only clients raise it, and servers never send it."""

    UNSUPPORTED_VERSION = "unsupported_version"
    """A `Hello` whose protocol version the server does not speak."""

    HELLO_REQUIRED = "hello_required"
    """A request sent on a connection before its `Hello`."""

    DUPLICATE_REQUEST = "duplicate_request"
    """A request id that is already in flight on the same connection."""

    UNKNOWN_SESSION = "unknown_session"
    """A session id the server does not hold, for example one already evicted."""

    UNKNOWN_MODEL = "unknown_model"
    """A target or draft model name the server has not loaded."""

    PERMISSION_DENIED = "permission_denied"
    """A peer whose uid the server does not allow; the server closes the connection."""

    OVERLOADED = "overloaded"
    """A server at its limit of connections, requests or cache memory."""

    INTERNAL = "internal"
    """A server-side failure that is not the client's fault."""


class ProtocolError(Exception):
    """Bytes that do not form a valid frame or message.

    `code` is an `ErrorCode` value. `request_id` is the id found in a message
    that failed validation, or None when none could be read, so that a server
    can address its `ErrorReply` to the request that caused it.
    """

    def __init__(self, code: str, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"ProtocolError(code={self.code!r}, message={self.message!r})"


class ClientError(Exception):
    """Base class of the failures a protocol client raises."""


class RemoteError(ClientError):
    """An `ErrorReply` from the server, raised by the client method that received it."""

    def __init__(self, reply: ErrorReply) -> None:
        target = f"request {reply.request_id!r}" if reply.request_id else "connection"
        super().__init__(f"server rejected {target} with {reply.code}: {reply.message}")
        self.reply = reply

    @property
    def code(self) -> str:
        return self.reply.code

    @property
    def request_id(self) -> str | None:
        return self.reply.request_id


class ConnectionClosedError(ClientError):
    """A connection that was closed or broken while a request still needed it."""


class ReplyOverflowError(ClientError):
    """A reply stream whose unread replies exceeded the client's per-request buffer."""

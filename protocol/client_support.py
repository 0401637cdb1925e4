"""Request building and reply checking shared by the async and the blocking client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from .base import PROTOCOL_VERSION
from .codec import new_request_id
from .errors import ErrorCode, ProtocolError, RemoteError
from .reply_messages import ErrorReply, Reply, Welcome
from .request_messages import (
    DEFAULT_MAX_TOKENS,
    ChatMessage,
    GenerateRequest,
    SamplingParams,
    Speculation,
)

DEFAULT_CLIENT_NAME = "draftwise-client"

_ReplyT = TypeVar("_ReplyT")


def build_generate_request(
    *,
    prompt: str | None = None,
    messages: Sequence[ChatMessage] | None = None,
    session_id: str | None = None,
    model: str | None = None,
    draft: str | None = None,
    sampling: SamplingParams | None = None,
    stop: Sequence[str] = (),
    max_tokens: int = DEFAULT_MAX_TOKENS,
    speculation: Speculation = "auto",
    stream: bool = True,
    request_id: str | None = None,
) -> GenerateRequest:
    """Build a GenerateRequest from client arguments; a missing request_id gets a fresh one.

    Raises ProtocolError(INVALID_REQUEST) when both or neither of `prompt` and
    `messages` are given. Field constraints are checked when the request is
    encoded, by `encode_request_frame`.
    """
    if isinstance(stop, str):
        raise TypeError(f"stop takes a list of strings, got the string {stop!r}; wrap it in a list")
    try:
        return GenerateRequest(
            request_id=request_id if request_id is not None else new_request_id(),
            session_id=session_id,
            messages=list(messages) if messages is not None else None,
            prompt=prompt,
            model=model,
            draft=draft,
            sampling=sampling if sampling is not None else SamplingParams(),
            stop=list(stop),
            max_tokens=max_tokens,
            speculation=speculation,
            stream=stream,
        )
    except ValueError as exc:
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"invalid generate_request: {exc}") from None


def expect_reply(reply: Reply, reply_type: type[_ReplyT], request_id: str | None) -> _ReplyT:
    """Return `reply` if it has `reply_type`; raise RemoteError for an ErrorReply.

    Any other reply type raises ProtocolError(INVALID_REPLY).
    """
    if isinstance(reply, reply_type):
        return reply
    if isinstance(reply, ErrorReply):
        raise RemoteError(reply)
    subject = f"request {request_id!r}" if request_id is not None else "hello"
    raise ProtocolError(
        ErrorCode.INVALID_REPLY,
        f"expected {reply_type.__name__} for {subject}, got {type(reply).__name__}",
        request_id=request_id,
    )


def check_welcome(welcome: Welcome) -> Welcome:
    """Return `welcome`, or raise ProtocolError when its protocol version differs from ours."""
    if welcome.protocol_version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"server speaks protocol version {welcome.protocol_version}, this client speaks "
            f"{PROTOCOL_VERSION}; install matching draftwise versions on both ends",
        )
    return welcome

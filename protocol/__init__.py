"""draftwise wire protocol: framing, typed messages and clients.

This package depends on msgspec only, so a client needs no MLX. `AsyncClient`
and `GenerateStream` import trio, so they load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import PROTOCOL_VERSION
from .client import Client
from .codec import (
    REPLY_TYPES,
    REQUEST_TYPES,
    decode_reply,
    decode_request,
    encode_request_frame,
    new_request_id,
)
from .errors import (
    ClientError,
    ConnectionClosedError,
    ErrorCode,
    ProtocolError,
    RemoteError,
    ReplyOverflowError,
)
from .framing import DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES, FrameDecoder, encode_frame
from .reply_messages import (
    CancelReply,
    Chunk,
    CloseSessionReply,
    Done,
    ErrorReply,
    FinishReason,
    HealthReply,
    HealthStatus,
    ModelInfo,
    ModelsReply,
    Reply,
    RoundStats,
    SpeculationSummary,
    StatsReply,
    Usage,
    Welcome,
)
from .request_messages import (
    DEFAULT_MAX_TOKENS,
    MAX_DRAFT_LENGTH,
    MAX_MAX_TOKENS,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    CancelRequest,
    ChatMessage,
    CloseSessionRequest,
    GenerateRequest,
    HealthRequest,
    Hello,
    ModelsRequest,
    Request,
    Role,
    SamplingParams,
    Speculation,
    StatsRequest,
)

if TYPE_CHECKING:
    from .async_client import AsyncClient
    from .async_stream import GenerateStream


def __getattr__(name: str) -> Any:
    # Deferred so that importing the package does not import trio.
    if name == "AsyncClient":
        from .async_client import AsyncClient

        return AsyncClient
    if name == "GenerateStream":
        from .async_stream import GenerateStream

        return GenerateStream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_TOKENS",
    "FRAME_HEADER_BYTES",
    "MAX_DRAFT_LENGTH",
    "MAX_MAX_TOKENS",
    "MAX_STOP_CHARS",
    "MAX_STOP_STRINGS",
    "PROTOCOL_VERSION",
    "REPLY_TYPES",
    "REQUEST_TYPES",
    "AsyncClient",
    "CancelReply",
    "CancelRequest",
    "ChatMessage",
    "Chunk",
    "Client",
    "ClientError",
    "CloseSessionReply",
    "CloseSessionRequest",
    "ConnectionClosedError",
    "Done",
    "ErrorCode",
    "ErrorReply",
    "FinishReason",
    "FrameDecoder",
    "GenerateRequest",
    "GenerateStream",
    "HealthReply",
    "HealthRequest",
    "HealthStatus",
    "Hello",
    "ModelInfo",
    "ModelsReply",
    "ModelsRequest",
    "ProtocolError",
    "RemoteError",
    "Reply",
    "ReplyOverflowError",
    "Request",
    "Role",
    "RoundStats",
    "SamplingParams",
    "Speculation",
    "SpeculationSummary",
    "StatsReply",
    "StatsRequest",
    "Usage",
    "Welcome",
    "decode_reply",
    "decode_request",
    "encode_frame",
    "encode_request_frame",
    "new_request_id",
]

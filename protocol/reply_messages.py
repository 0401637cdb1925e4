"""Messages the server sends to a client.

Every reply except `Welcome` carries the `request_id` of the request it
replies to. An `ErrorReply` whose request_id is None concerns the whole
connection, such as an unreadable frame or an unsupported `Hello`.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

import msgspec
from msgspec import Meta

from .base import Count, Name, Rate, RequestId, Seconds, SessionId, WireMessage, WireStruct

FinishReason: TypeAlias = Literal["stop", "length", "eos", "cancelled"]
"""Why generation ended: a stop string matched, max_tokens was reached, the
model produced an end-of-sequence token, or a `CancelRequest` or a lost
connection stopped it."""

HealthStatus: TypeAlias = Literal["ok", "degraded", "draining"]

ErrorCodeText = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]


class Welcome(WireMessage, frozen=True):
    """Reply to `Hello`: the server's protocol version, name and limits."""

    protocol_version: Annotated[int, Meta(ge=1)]
    server_name: Name
    models: list[Name]
    """Names of the loaded models; `ModelsReply` describes them."""

    max_frame_bytes: Annotated[int, Meta(ge=1)]
    """Largest frame body the server accepts; a longer one closes the connection."""


class RoundStats(WireStruct, frozen=True):
    """Counts of the speculative round that produced a `Chunk`."""

    num_drafted: Count
    """Draft tokens proposed, at most draft_length (a drafter may propose fewer)."""

    num_accepted: Count
    """Draft tokens the target accepted, at most num_drafted."""

    draft_length: Count
    """Draft length the round asked the drafter for."""

    drafter: Name

    def __post_init__(self) -> None:
        if self.num_accepted > self.num_drafted:
            raise ValueError(
                f"num_accepted ({self.num_accepted}) exceeds num_drafted ({self.num_drafted})"
            )
        if self.num_drafted > self.draft_length:
            raise ValueError(
                f"num_drafted ({self.num_drafted}) exceeds draft_length ({self.draft_length})"
            )


class Chunk(WireMessage, frozen=True):
    """Newly committed output of a generate request.

    `text` is the UTF-8-safe text delta, which may be empty while the server
    holds back a possible stop string or an incomplete character.
    `token_ids` lists the tokens committed since the previous chunk.
    """

    request_id: RequestId
    text: str
    token_ids: list[Count]
    round: RoundStats | None = None
    """Counts of the round behind this chunk; None when speculation was off."""


class Usage(WireStruct, frozen=True):
    """Token counts of one generate request."""

    prompt_tokens: Count
    completion_tokens: Count
    cached_tokens: Count
    """Prompt tokens served from the session's KV cache instead of prefill."""

    def __post_init__(self) -> None:
        if self.cached_tokens > self.prompt_tokens:
            raise ValueError(
                f"cached_tokens ({self.cached_tokens}) exceeds prompt_tokens ({self.prompt_tokens})"
            )


class SpeculationSummary(WireStruct, frozen=True):
    """Speculative decoding counts of one generate request."""

    rounds: Count
    num_drafted: Count
    num_accepted: Count
    draft_length_histogram: dict[Count, Count] = msgspec.field(default_factory=dict)
    """Number of rounds that used each draft length."""

    acceptance_rate: Rate = 0.0
    """num_accepted / num_drafted, or 0 when nothing was drafted."""

    reason_off: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    """Reason speculation did not run (for example no draft model); None when it ran."""

    def __post_init__(self) -> None:
        if self.num_accepted > self.num_drafted:
            raise ValueError(
                f"num_accepted ({self.num_accepted}) exceeds num_drafted ({self.num_drafted})"
            )


class Done(WireMessage, frozen=True):
    """Last reply of a generate request that ended without error."""

    request_id: RequestId
    session_id: SessionId
    """Session that contains the conversation's KV cache; pass it to continue or close it."""

    finish_reason: FinishReason
    usage: Usage
    speculation: SpeculationSummary


class ErrorReply(WireMessage, frozen=True):
    """A failed request, or a connection-level failure when request_id is None.

    `code` is one of the `ErrorCode` values; `message` states what failed, on
    which value, and what to do.
    """

    request_id: RequestId | None
    code: ErrorCodeText
    message: str


class CancelReply(WireMessage, frozen=True):
    """Reply to `CancelRequest`."""

    request_id: RequestId
    target_request_id: RequestId
    cancelled: bool
    """False when no request with that id was running on this connection,
    for example because it had already finished."""


class CloseSessionReply(WireMessage, frozen=True):
    """Reply to `CloseSessionRequest`; an unknown session gets an `ErrorReply` instead."""

    request_id: RequestId
    session_id: SessionId
    freed_cache_bytes: Count


class StatsReply(WireMessage, frozen=True):
    """Reply to `StatsRequest`: server-wide counters since start."""

    request_id: RequestId
    uptime_s: Seconds
    active_sessions: Count
    active_requests: Count
    finished_requests: Count
    prompt_tokens: Count
    completion_tokens: Count
    cached_tokens: Count
    num_drafted: Count
    num_accepted: Count
    acceptance_rate: Rate
    cache_bytes: Count
    cache_budget_bytes: Count
    prefill_tokens_per_s: Annotated[float, Meta(ge=0)]
    """Mean prefill throughput over finished requests; 0 before the first one."""

    decode_tokens_per_s: Annotated[float, Meta(ge=0)]
    """Mean decode throughput over finished requests; 0 before the first one."""


class ModelInfo(WireStruct, frozen=True):
    """One loaded model."""

    name: Name
    role: Literal["target", "draft"]
    architecture: Name
    context_length: Count
    vocab_size: Count
    default_draft: Name | None = None
    """Draft used for this target when a request names none; None for drafts."""


class ModelsReply(WireMessage, frozen=True):
    """Reply to `ModelsRequest`."""

    request_id: RequestId
    models: list[ModelInfo]


class HealthReply(WireMessage, frozen=True):
    """Reply to `HealthRequest`."""

    request_id: RequestId
    status: HealthStatus
    """"ok" serves requests, "degraded" serves them with a stated problem,
    "draining" finishes running requests but rejects new ones."""

    uptime_s: Seconds
    active_requests: Count
    detail: str | None = None
    """Reason for a status other than "ok"."""


Reply: TypeAlias = (
    Welcome
    | Chunk
    | Done
    | ErrorReply
    | CancelReply
    | CloseSessionReply
    | StatsReply
    | ModelsReply
    | HealthReply
)

"""Messages a client sends to the server.

Every request except `Hello` carries a `request_id`, and every reply to it
carries the same id, so one connection can hold several requests in flight.
The server sends exactly one reply to each request, except
`GenerateRequest`, which gets zero or more `Chunk` replies and then one
`Done`, or an `ErrorReply` at any point.
"""

from __future__ import annotations

import math
from typing import Annotated, Final, Literal, TypeAlias

import msgspec
from msgspec import Meta

from .base import Count, Name, RequestId, SessionId, WireMessage, WireStruct

MAX_DRAFT_LENGTH: Final = 16
MAX_STOP_STRINGS: Final = 16
MAX_STOP_CHARS: Final = 256
MAX_MAX_TOKENS: Final = 1_000_000
DEFAULT_MAX_TOKENS: Final = 256

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]

StopString = Annotated[str, Meta(min_length=1, max_length=MAX_STOP_CHARS)]

Speculation: TypeAlias = Literal["auto", "off"] | Annotated[int, Meta(ge=0, le=MAX_DRAFT_LENGTH)]
"""Speculative decoding mode: "auto" lets the server pick the draft length per
round, "off" decodes one token per target pass, and an int k fixes the draft
length at k tokens per round (0 drafts nothing, the same as "off")."""


class ChatMessage(WireStruct, frozen=True):
    """One turn of a conversation, rendered by the target model's chat template."""

    role: Role
    content: str


class SamplingParams(WireStruct, frozen=True):
    """Token sampling settings. The defaults select greedy decoding."""

    temperature: Annotated[float, Meta(ge=0)] = 0.0
    """0 picks the most likely token; larger values flatten the distribution."""

    top_k: Count = 0
    """Keep only the k most likely tokens; 0 keeps all."""

    top_p: Annotated[float, Meta(gt=0, le=1)] = 1.0
    """Keep the smallest set of tokens whose probabilities sum to at least top_p."""

    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    """Random seed for reproducible sampling; None lets the server choose one."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")


class Hello(WireMessage, frozen=True):
    """First message on a connection: the client's protocol version and name.

    The server replies with `Welcome`, or with an `ErrorReply` whose code is
    "unsupported_version" and whose request_id is None.
    """

    protocol_version: Annotated[int, Meta(ge=1)]
    client_name: Name


class GenerateRequest(WireMessage, frozen=True):
    """Generate a completion for a chat conversation or a raw prompt.

    Exactly one of `messages` and `prompt` is set. `messages` is rendered with
    the target's chat template, and `prompt` is tokenized as it is. Either one
    contains the whole input, also when `session_id` names an existing session:
    the server reuses the session's KV cache for the longest common token
    prefix and reports those tokens as `Usage.cached_tokens`.
    """

    request_id: RequestId

    session_id: SessionId | None = None
    """Session whose KV cache to reuse; None creates a session and returns its id in `Done`."""

    messages: Annotated[list[ChatMessage], Meta(min_length=1)] | None = None
    prompt: Annotated[str, Meta(min_length=1)] | None = None

    model: Name | None = None
    """Target model name; None selects the server's default target."""

    draft: Name | None = None
    """Draft model or drafter name; None selects the server's default for the target."""

    sampling: SamplingParams = SamplingParams()

    stop: Annotated[list[StopString], Meta(max_length=MAX_STOP_STRINGS)] = msgspec.field(
        default_factory=list
    )
    """Strings that end generation; the matched stop string is not part of the output."""

    max_tokens: Annotated[int, Meta(ge=1, le=MAX_MAX_TOKENS)] = DEFAULT_MAX_TOKENS
    """Maximum number of generated tokens, not counting the prompt."""

    speculation: Speculation = "auto"

    stream: bool = True
    """True sends a `Chunk` per round; False sends a single `Chunk` with the whole output."""

    def __post_init__(self) -> None:
        if self.messages is None and self.prompt is None:
            raise ValueError("set one of `messages` and `prompt`; both are missing")
        if self.messages is not None and self.prompt is not None:
            raise ValueError("set only one of `messages` and `prompt`; both are present")


class CancelRequest(WireMessage, frozen=True):
    """Stop a generate request sent earlier on the same connection.

    The server replies with `CancelReply`. A cancelled generate request still
    ends with `Done` whose finish_reason is "cancelled".
    """

    request_id: RequestId
    target_request_id: RequestId


class CloseSessionRequest(WireMessage, frozen=True):
    """Free a session's KV cache; the server replies with `CloseSessionReply`."""

    request_id: RequestId
    session_id: SessionId


class StatsRequest(WireMessage, frozen=True):
    """Ask for server-wide counters; the server replies with `StatsReply`."""

    request_id: RequestId


class ModelsRequest(WireMessage, frozen=True):
    """Ask for the loaded models; the server replies with `ModelsReply`."""

    request_id: RequestId


class HealthRequest(WireMessage, frozen=True):
    """Ask whether the server accepts work; the server replies with `HealthReply`."""

    request_id: RequestId


Request: TypeAlias = (
    Hello
    | GenerateRequest
    | CancelRequest
    | CloseSessionRequest
    | StatsRequest
    | ModelsRequest
    | HealthRequest
)

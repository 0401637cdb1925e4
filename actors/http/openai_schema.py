"""Request bodies of the OpenAI-compatible endpoints, validated at decode time.

Unknown fields are rejected, so a feature draftwise does not implement is
named in the error instead of being ignored. Fields that OpenAI defines and
draftwise cannot honour are declared here and rejected in
`reject_unsupported_chat` when set to anything but their neutral value.
`user`, `metadata` and `parallel_tool_calls` are accepted: they change no output.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from draftwise.actors.http.errors import ApiError, unsupported
from draftwise.protocol.request_messages import Speculation

Temperature = Annotated[float, Meta(ge=0, le=2)]
TopP = Annotated[float, Meta(gt=0, le=1)]
MaxTokens = Annotated[int, Meta(ge=1)]
Seed = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of the request structs: keyword fields, unknown fields rejected."""


class ContentPart(msgspec.Struct, kw_only=True):
    """One part of a multi-part message; only ``text`` parts are supported."""

    type: str
    text: str | None = None


class FunctionCall(Body):
    name: str
    arguments: str
    """JSON object encoded as a string, as OpenAI sends it."""


class ToolCallIn(Body):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ChatMessageIn(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class FunctionDefinition(Body):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Body):
    name: str


class NamedToolChoice(Body):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(Body):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class SamplingFields(Body):
    """Fields shared by chat and text completions."""

    model: Annotated[str, Meta(min_length=1)]
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    max_tokens: MaxTokens | None = None
    stop: Annotated[str, Meta(min_length=1)] | list[Annotated[str, Meta(min_length=1)]] | None = (
        None
    )
    seed: Seed | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Meta(ge=1)] = 1
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    speculation: Speculation | None = None
    """draftwise extension: "auto", "off" or a fixed draft length; None takes the server's."""

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: Annotated[list[ChatMessageIn], Meta(min_length=1)]
    max_completion_tokens: MaxTokens | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0)] | None = None
    response_format: dict[str, Any] | None = None
    store: bool | None = None
    reasoning_effort: str | None = None
    modalities: list[str] | None = None


class CompletionRequest(SamplingFields, kw_only=True):
    prompt: Annotated[str, Meta(min_length=1)] | Annotated[list[str], Meta(min_length=1)]
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None


def _reject_shared(body: SamplingFields) -> None:
    if body.n != 1:
        raise unsupported("n", body.n, "send n=1 and repeat the request for more choices")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(body, name)
        if value not in (None, 0, 0.0):
            raise unsupported(name, value, f"omit {name} or set it to 0")
    if body.logit_bias:
        raise unsupported("logit_bias", body.logit_bias, "omit logit_bias")
    if body.stream_options is not None and not body.stream:
        raise ApiError(
            400,
            "'stream_options' is only allowed with 'stream': true; drop it or enable streaming",
            param="stream_options",
        )


def reject_unsupported_chat(body: ChatCompletionRequest) -> None:
    """Raise `ApiError` for each chat feature draftwise cannot honour."""
    _reject_shared(body)
    if body.logprobs or body.top_logprobs:
        raise unsupported("logprobs", True, "omit logprobs and top_logprobs")
    if body.response_format is not None and body.response_format.get("type") != "text":
        raise unsupported(
            "response_format",
            body.response_format.get("type"),
            "omit response_format; structured output is not implemented",
        )
    if body.store:
        raise unsupported("store", True, "omit store; draftwise keeps no completions")
    if body.reasoning_effort is not None:
        raise unsupported("reasoning_effort", body.reasoning_effort, "omit reasoning_effort")
    if body.modalities not in (None, ["text"]):
        raise unsupported("modalities", body.modalities, "omit modalities; only text is produced")
    if body.tool_choice == "required" or isinstance(body.tool_choice, NamedToolChoice):
        choice = body.tool_choice if isinstance(body.tool_choice, str) else "function"
        raise unsupported(
            "tool_choice", choice, "use 'auto' or 'none'; forced tool calls are not implemented"
        )
    if body.tool_choice is not None and not body.tools and body.tool_choice != "none":
        raise ApiError(400, "'tool_choice' is set but 'tools' is empty", param="tool_choice")


def reject_unsupported_completion(body: CompletionRequest) -> None:
    """Raise `ApiError` for each text-completion feature draftwise cannot honour."""
    _reject_shared(body)
    if isinstance(body.prompt, list) and len(body.prompt) != 1:
        raise unsupported(
            "prompt", f"a list of {len(body.prompt)} prompts", "send one prompt per request"
        )
    if body.echo:
        raise unsupported("echo", True, "omit echo")
    if body.suffix:
        raise unsupported("suffix", body.suffix, "omit suffix; fill-in-the-middle is not served")
    if body.logprobs is not None:
        raise unsupported("logprobs", body.logprobs, "omit logprobs")
    if body.best_of not in (None, 1):
        raise unsupported("best_of", body.best_of, "omit best_of")

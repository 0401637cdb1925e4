"""Translate OpenAI chat and text completion requests and build their responses.

Requests become a `GenerationSpec` and template messages in the Hugging Face
chat-template form, with tool-call arguments as objects and tool results as
``tool`` turns. Outputs become ``chat.completion`` or ``text_completion``
bodies and stream chunks. Nothing here touches the network.
"""

from __future__ import annotations

import json
import time
from typing import Any

from draftwise.actors.http.errors import ApiError, unsupported
from draftwise.actors.http.generation import Generation, GenerationSpec
from draftwise.actors.http.openai_schema import (
    ChatCompletionRequest,
    ChatMessageIn,
    CompletionRequest,
    ContentPart,
)
from draftwise.actors.http.tool_calls import ToolCall

DEFAULT_TEMPERATURE = 0.0
"""Greedy decoding when a request sets no temperature, as `draftwise generate` does;
OpenAI's own default is 1.0, but a local coding backend is expected to be repeatable."""

DEFAULT_COMPLETION_MAX_TOKENS = 16
"""OpenAI's documented default max_tokens of the legacy completions endpoint."""


def _content_text(content: str | list[ContentPart] | None, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise unsupported(
                f"{where}[{index}].type",
                part.type,
                "send text parts only; images, audio and files are not supported",
            )
        texts.append(part.text)
    return "\n".join(texts)


def _tool_call_for_template(call: Any, where: str) -> dict[str, Any]:
    try:
        arguments = json.loads(call.function.arguments or "{}")
    except json.JSONDecodeError as error:
        raise ApiError(
            400,
            f"{where}.function.arguments is not valid JSON ({error}); send the arguments "
            "object encoded as a JSON string",
            param=f"{where}.function.arguments",
        ) from error
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.function.name, "arguments": arguments},
    }


def template_messages(messages: list[ChatMessageIn]) -> list[dict[str, Any]]:
    """Convert OpenAI messages to the dicts chat templates read."""
    converted: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = "system" if message.role == "developer" else message.role
        entry: dict[str, Any] = {
            "role": role,
            "content": _content_text(message.content, f"{where}.content"),
        }
        if message.tool_calls:
            if role != "assistant":
                raise ApiError(
                    400,
                    f"{where} has tool_calls but role '{role}'; only assistant messages "
                    "carry tool calls",
                    param=f"{where}.tool_calls",
                )
            entry["tool_calls"] = [
                _tool_call_for_template(call, f"{where}.tool_calls[{number}]")
                for number, call in enumerate(message.tool_calls)
            ]
        if role == "tool":
            if message.tool_call_id is None:
                raise ApiError(
                    400,
                    f"{where} has role 'tool' but no tool_call_id; set the id of the call "
                    "it answers",
                    param=f"{where}.tool_call_id",
                )
            entry["tool_call_id"] = message.tool_call_id
        if message.name is not None:
            entry["name"] = message.name
        converted.append(entry)
    return converted


def chat_tools(body: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """Tool definitions for the template, or None when tools are off for this request."""
    if not body.tools or body.tool_choice == "none":
        return None
    return [{"type": "function", "function": _without_none(tool.function)} for tool in body.tools]


def _without_none(struct: Any) -> dict[str, Any]:
    return {key: value for key, value in _builtins(struct).items() if value is not None}


def _builtins(struct: Any) -> dict[str, Any]:
    import msgspec

    value = msgspec.to_builtins(struct)
    assert isinstance(value, dict)
    return value


def chat_spec(body: ChatCompletionRequest, prompt: str, model: str) -> GenerationSpec:
    return GenerationSpec(
        prompt=prompt,
        model=model,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        seed=body.seed,
        stop=body.stop_list(),
        speculation=body.speculation,
    )


def completion_spec(body: CompletionRequest, model: str) -> GenerationSpec:
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    return GenerationSpec(
        prompt=prompt,
        model=model,
        max_tokens=body.max_tokens or DEFAULT_COMPLETION_MAX_TOKENS,
        temperature=DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        seed=body.seed,
        stop=body.stop_list(),
        speculation=body.speculation,
    )


def usage_body(generation: Generation) -> dict[str, Any]:
    prompt, completion, cached = generation.usage_counts()
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def finish_reason(generation: Generation, has_tool_calls: bool) -> str:
    if has_tool_calls:
        return "tool_calls"
    if generation.done is not None and generation.done.finish_reason == "length":
        return "length"
    return "stop"


def tool_call_body(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
    if index is not None:
        body = {"index": index, **body}
    return body


class ResponseHeader:
    """The id, creation time and model every body and chunk of one response repeats."""

    def __init__(self, response_id: str, model: str, object_name: str) -> None:
        self.response_id = response_id
        self.model = model
        self.object_name = object_name
        self.created = int(time.time())

    def body(self, **fields: Any) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": self.object_name,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            **fields,
        }


def chat_completion_body(
    header: ResponseHeader, generation: Generation, text: str, calls: list[ToolCall]
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text.strip() or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [tool_call_body(call) for call in calls]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(generation, bool(calls)),
    }
    return header.body(choices=[choice], usage=usage_body(generation), draftwise=generation.stats())


def chat_chunk(
    header: ResponseHeader, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return header.body(choices=[choice])


def text_completion_body(
    header: ResponseHeader, generation: Generation, text: str
) -> dict[str, Any]:
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish_reason(generation, False),
    }
    return header.body(choices=[choice], usage=usage_body(generation), draftwise=generation.stats())


def text_chunk(header: ResponseHeader, text: str, finish: str | None = None) -> dict[str, Any]:
    return header.body(
        choices=[{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
    )


def usage_chunk(header: ResponseHeader, generation: Generation) -> dict[str, Any]:
    return header.body(choices=[], usage=usage_body(generation), draftwise=generation.stats())

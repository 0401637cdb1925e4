"""OpenAI-compatible endpoints: chat completions, text completions and the model list."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from draftwise.actors.http.errors import ApiError, decode_body, error_body
from draftwise.actors.http.generation import (
    Generation,
    new_request_id,
    prepare_generation,
    resolve_model,
)
from draftwise.actors.http.handlers import (
    AnyResponse,
    Gateway,
    api_route,
    client_closed,
    collect_text,
    render_prompt,
)
from draftwise.actors.http.openai_api import (
    ResponseHeader,
    chat_chunk,
    chat_completion_body,
    chat_spec,
    chat_tools,
    completion_spec,
    finish_reason,
    template_messages,
    text_chunk,
    text_completion_body,
    tool_call_body,
    usage_body,
    usage_chunk,
)
from draftwise.actors.http.openai_schema import (
    ChatCompletionRequest,
    CompletionRequest,
    reject_unsupported_chat,
    reject_unsupported_completion,
)
from draftwise.actors.http.sse import EventStreamResponse, sse_frame
from draftwise.actors.http.tool_calls import (
    TextPiece,
    ToolCall,
    ToolCallParser,
    split_tool_calls,
    tool_names,
)

CHAT_ENDPOINT = "/v1/chat/completions"
COMPLETIONS_ENDPOINT = "/v1/completions"


@api_route("openai", CHAT_ENDPOINT)
async def chat_completions(request: Request, gateway: Gateway) -> AnyResponse:
    body = decode_body(await request.body(), ChatCompletionRequest)
    reject_unsupported_chat(body)
    model = resolve_model(gateway.runtime, body.model)
    tools = chat_tools(body)
    prompt = render_prompt(gateway.runtime, template_messages(body.messages), tools, model)
    request_id = new_request_id("chatcmpl-")
    generation = prepare_generation(
        gateway.runtime, chat_spec(body, prompt, model), request_id, gateway.speculation
    )
    header = ResponseHeader(request_id, model, "chat.completion")

    if body.stream:
        header.object_name = "chat.completion.chunk"
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        frames = _chat_frames(gateway, generation, header, tool_names(tools), include_usage)
        return EventStreamResponse(frames)

    text = await collect_text(request, generation, gateway.metrics, CHAT_ENDPOINT)
    if text is None:
        return client_closed()
    calls: list[ToolCall] = []
    if tools is not None:
        text, calls = split_tool_calls(text, tool_names=tool_names(tools))
    return JSONResponse(chat_completion_body(header, generation, text, calls))


async def _chat_frames(
    gateway: Gateway,
    generation: Generation,
    header: ResponseHeader,
    names: frozenset[str] | None,
    include_usage: bool,
) -> AsyncGenerator[bytes, None]:
    """Role first, then content or tool-call deltas, one finish_reason, usage last, [DONE]."""
    yield sse_frame(chat_chunk(header, {"role": "assistant", "content": ""}))
    parser = ToolCallParser(tool_names=names) if names else None
    calls_sent = 0
    try:
        async for delta in generation.text_deltas(gateway.metrics, CHAT_ENDPOINT):
            for piece in parser.feed(delta) if parser else [TextPiece(delta)]:
                yield sse_frame(chat_chunk(header, _delta_of(piece, calls_sent)))
                calls_sent += isinstance(piece, ToolCall)
        for piece in parser.finish() if parser else []:
            yield sse_frame(chat_chunk(header, _delta_of(piece, calls_sent)))
            calls_sent += isinstance(piece, ToolCall)

        has_calls = calls_sent > 0
        last = chat_chunk(header, {}, finish_reason(generation, has_calls))
        if include_usage:
            yield sse_frame(last)
            yield sse_frame(usage_chunk(header, generation))
        else:
            # Without include_usage OpenAI sends no usage; draftwise puts it on the last chunk.
            yield sse_frame(
                {**last, "usage": usage_body(generation), "draftwise": generation.stats()}
            )
    except ApiError as error:
        yield sse_frame(error_body(error, "openai"))
    yield sse_frame("[DONE]")


def _delta_of(piece: TextPiece | ToolCall, call_index: int) -> dict[str, Any]:
    if isinstance(piece, TextPiece):
        return {"content": piece.text}
    return {"tool_calls": [tool_call_body(piece, call_index)]}


@api_route("openai", COMPLETIONS_ENDPOINT)
async def completions(request: Request, gateway: Gateway) -> AnyResponse:
    body = decode_body(await request.body(), CompletionRequest)
    reject_unsupported_completion(body)
    model = resolve_model(gateway.runtime, body.model)
    request_id = new_request_id("cmpl-")
    generation = prepare_generation(
        gateway.runtime, completion_spec(body, model), request_id, gateway.speculation
    )
    header = ResponseHeader(request_id, model, "text_completion")

    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return EventStreamResponse(_completion_frames(gateway, generation, header, include_usage))

    text = await collect_text(request, generation, gateway.metrics, COMPLETIONS_ENDPOINT)
    if text is None:
        return client_closed()
    return JSONResponse(text_completion_body(header, generation, text))


async def _completion_frames(
    gateway: Gateway, generation: Generation, header: ResponseHeader, include_usage: bool
) -> AsyncGenerator[bytes, None]:
    try:
        async for delta in generation.text_deltas(gateway.metrics, COMPLETIONS_ENDPOINT):
            yield sse_frame(text_chunk(header, delta))
        last = text_chunk(header, "", finish_reason(generation, False))
        if include_usage:
            yield sse_frame(last)
            yield sse_frame(usage_chunk(header, generation))
        else:
            yield sse_frame(
                {**last, "usage": usage_body(generation), "draftwise": generation.stats()}
            )
    except ApiError as error:
        yield sse_frame(error_body(error, "openai"))
    yield sse_frame("[DONE]")


def _model_body(info: Any) -> dict[str, Any]:
    return {
        "id": info.name,
        "object": "model",
        "created": 0,
        "owned_by": "draftwise",
        "draftwise": {
            "role": info.role,
            "architecture": info.architecture,
            "context_length": info.context_length,
            "default_draft": info.default_draft,
        },
    }


@api_route("openai", "/v1/models")
async def list_models(request: Request, gateway: Gateway) -> AnyResponse:
    targets = [info for info in gateway.runtime.models() if info.role == "target"]
    return JSONResponse({"object": "list", "data": [_model_body(info) for info in targets]})


@api_route("openai", "/v1/models/{model}")
async def get_model(request: Request, gateway: Gateway) -> AnyResponse:
    name = request.path_params["model"]
    for info in gateway.runtime.models():
        if info.name == name and info.role == "target":
            return JSONResponse(_model_body(info))
    raise ApiError(
        404,
        f"model '{name}' not found; GET /v1/models lists the served models",
        param="model",
        code="model_not_found",
    )

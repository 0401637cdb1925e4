"""Anthropic-compatible endpoint: ``POST /v1/messages``, streamed or not."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.requests import Request
from starlette.responses import JSONResponse

from draftwise.actors.http.anthropic_api import (
    TOOL_ID_PREFIX,
    StreamEvents,
    message_body,
    message_tools,
    messages_spec,
    template_messages,
)
from draftwise.actors.http.anthropic_schema import MessagesRequest, reject_unsupported_messages
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
from draftwise.actors.http.sse import EventStreamResponse, sse_frame
from draftwise.actors.http.tool_calls import (
    TextPiece,
    ToolCall,
    ToolCallParser,
    split_tool_calls,
    tool_names,
)

MESSAGES_ENDPOINT = "/v1/messages"


@api_route("anthropic", MESSAGES_ENDPOINT)
async def messages(request: Request, gateway: Gateway) -> AnyResponse:
    body = decode_body(await request.body(), MessagesRequest)
    reject_unsupported_messages(body)
    model = resolve_model(gateway.runtime, body.model)
    tools = message_tools(body)
    prompt = render_prompt(gateway.runtime, template_messages(body), tools, model)
    message_id = new_request_id("msg_")
    generation = prepare_generation(
        gateway.runtime, messages_spec(body, prompt, model), message_id, gateway.speculation
    )
    stop_sequences = list(body.stop_sequences or [])

    if body.stream:
        events = StreamEvents(message_id, generation)
        frames = _message_frames(gateway, generation, events, tool_names(tools), stop_sequences)
        return EventStreamResponse(frames)

    text = await collect_text(request, generation, gateway.metrics, MESSAGES_ENDPOINT)
    if text is None:
        return client_closed()
    calls: list[ToolCall] = []
    if tools is not None:
        text, calls = split_tool_calls(text, TOOL_ID_PREFIX, tool_names(tools))
    return JSONResponse(message_body(message_id, generation, text, calls, stop_sequences))


async def _message_frames(
    gateway: Gateway,
    generation: Generation,
    events: StreamEvents,
    names: frozenset[str] | None,
    stop_sequences: list[str],
) -> AsyncGenerator[bytes, None]:
    """Stream the message; an error after message_start becomes an ``error`` event."""
    for name, data in events.start():
        yield sse_frame(data, name)
    parser = ToolCallParser(TOOL_ID_PREFIX, names) if names else None
    try:
        async for delta in generation.text_deltas(gateway.metrics, MESSAGES_ENDPOINT):
            for piece in parser.feed(delta) if parser else [TextPiece(delta)]:
                for name, data in events.piece(piece):
                    yield sse_frame(data, name)
        for piece in parser.finish() if parser else []:
            for name, data in events.piece(piece):
                yield sse_frame(data, name)
        for name, data in events.finish(stop_sequences):
            yield sse_frame(data, name)
    except ApiError as error:
        yield sse_frame(error_body(error, "anthropic"), "error")

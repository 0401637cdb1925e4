"""Shared parts of the API routes: the gateway state, error rendering and prompt rendering."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from draftwise.actors.http.errors import ApiError, ApiFlavor, error_body, from_runtime_error
from draftwise.actors.http.generation import Generation
from draftwise.actors.http.metrics import GatewayMetrics
from draftwise.actors.http.sse import EventStreamResponse, run_until_disconnect
from draftwise.protocol.request_messages import Speculation
from draftwise.runtime.errors import ChatTemplateError, DraftwiseError

log = structlog.get_logger("draftwise.http")

CLIENT_CLOSED_STATUS = 499
"""Status recorded (never sent) for a request whose client disconnected first."""


@dataclass
class Gateway:
    """State shared by the routes: the runtime they drive and the metrics they feed."""

    runtime: Any
    metrics: GatewayMetrics
    speculation: Speculation = "auto"
    """Speculation mode of requests that do not set the `speculation` extension field."""


AnyResponse = Response | EventStreamResponse
Handler = Callable[[Request, Gateway], Awaitable[AnyResponse]]


def api_route(flavor: ApiFlavor, endpoint: str) -> Callable[[Handler], Callable[..., Any]]:
    """Wrap a handler: errors become ``flavor``-shaped JSON bodies, statuses are counted.

    A handler that fails after its stream began reports the error as a stream
    event itself, so this wrapper only catches errors raised before a response exists.
    """

    def decorate(handler: Handler) -> Callable[[Request], Awaitable[AnyResponse]]:
        @functools.wraps(handler)
        async def route(request: Request) -> AnyResponse:
            gateway: Gateway = request.app.state.gateway
            response: AnyResponse
            try:
                response = await handler(request, gateway)
            except ApiError as error:
                response = error_response(error, flavor)
                log.info(
                    "request_rejected",
                    actor="http",
                    endpoint=endpoint,
                    status=error.status,
                    param=error.param,
                    error=error.message,
                )
            except DraftwiseError as error:
                api_error = from_runtime_error(error)
                response = error_response(api_error, flavor)
                log.warning(
                    "runtime_rejected_request",
                    actor="http",
                    endpoint=endpoint,
                    status=api_error.status,
                    code=api_error.code,
                    error=api_error.message,
                )
            status = 200 if isinstance(response, EventStreamResponse) else response.status_code
            gateway.metrics.record_http(endpoint, status)
            return response

        return route

    return decorate


def error_response(error: ApiError, flavor: ApiFlavor) -> JSONResponse:
    return JSONResponse(error_body(error, flavor), status_code=error.status)


def render_prompt(
    runtime: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, model: str
) -> str:
    """Render the conversation with the model's chat template; a template error is a 400."""
    try:
        return str(runtime.render_chat(messages, tools=tools, model=model))
    except ChatTemplateError as error:
        raise ApiError(400, str(error), param="messages") from error


async def collect_text(
    request: Request, generation: Generation, metrics: GatewayMetrics, endpoint: str
) -> str | None:
    """Run ``generation`` to the end; None if the client disconnected, which cancels it."""

    async def collect() -> str:
        parts = [delta async for delta in generation.text_deltas(metrics, endpoint)]
        return "".join(parts)

    return await run_until_disconnect(request.receive, collect)


def client_closed() -> Response:
    """Placeholder for a request whose client is gone; nothing reaches the client."""
    return Response(status_code=CLIENT_CLOSED_STATUS)

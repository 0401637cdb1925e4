"""The starlette application: routes, the API-key check, health and metrics."""

from __future__ import annotations

import hmac
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from draftwise.actors.http import anthropic_routes, openai_routes
from draftwise.actors.http.errors import ApiError, ApiFlavor, error_body
from draftwise.actors.http.handlers import Gateway
from draftwise.actors.http.metrics import CONTENT_TYPE, GatewayMetrics
from draftwise.protocol.request_messages import Speculation

log = structlog.get_logger("draftwise.http")


def _flavor_of(path: str) -> ApiFlavor:
    return "anthropic" if path.startswith(anthropic_routes.MESSAGES_ENDPOINT) else "openai"


class ApiKeyMiddleware:
    """Reject every HTTP request that lacks the key, as ``Authorization: Bearer KEY``
    or ``x-api-key: KEY``, with a 401 in the shape of the API the path belongs to."""

    def __init__(self, app: ASGIApp, api_key: str, metrics: GatewayMetrics) -> None:
        self.app = app
        self.api_key = api_key.encode()
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        error = ApiError(
            401,
            "missing or invalid API key; send it as 'Authorization: Bearer KEY' or "
            "'x-api-key: KEY'",
            code="invalid_api_key",
        )
        self.metrics.record_http(scope["path"], 401)
        log.info("request_unauthorized", actor="http", path=scope["path"])
        response = JSONResponse(error_body(error, _flavor_of(scope["path"])), status_code=401)
        await response(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        provided = headers.get(b"x-api-key", b"")
        authorization = headers.get(b"authorization", b"")
        if authorization[:7].lower() == b"bearer ":
            provided = authorization[7:].strip()
        return hmac.compare_digest(provided, self.api_key)


async def health(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    status, detail = gateway.runtime.health()
    stats = gateway.runtime.stats()
    body = {
        "status": status,
        "detail": detail,
        "models": [info.name for info in gateway.runtime.models() if info.role == "target"],
        "active_requests": stats.get("active_requests", 0),
        "uptime_s": stats.get("uptime_s"),
    }
    return JSONResponse(body, status_code=503 if status == "draining" else 200)


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    text = gateway.metrics.render(gateway.runtime.stats())
    return Response(text, media_type=CONTENT_TYPE)


# Every route of `build_app`, for the message of a request to any other path.
ENDPOINTS = (
    f"POST {openai_routes.CHAT_ENDPOINT}",
    f"POST {openai_routes.COMPLETIONS_ENDPOINT}",
    f"POST {anthropic_routes.MESSAGES_ENDPOINT}",
    "GET /v1/models",
    "GET /v1/models/{model}",
    "GET /health",
    "GET /metrics",
)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = (
            f"no endpoint {request.method} {request.url.path}; the gateway serves "
            f"{', '.join(ENDPOINTS)}"
        )
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    error = ApiError(exc.status_code, message)
    return JSONResponse(
        error_body(error, _flavor_of(request.url.path)), status_code=exc.status_code
    )


def build_app(
    runtime: Any, *, api_key: str | None = None, speculation: Speculation = "auto"
) -> Starlette:
    """Return the gateway application for ``runtime``; with ``api_key`` every request needs it.

    ``speculation`` applies to requests that do not set the `speculation` extension field.
    """
    routes = [
        Route(openai_routes.CHAT_ENDPOINT, openai_routes.chat_completions, methods=["POST"]),
        Route(openai_routes.COMPLETIONS_ENDPOINT, openai_routes.completions, methods=["POST"]),
        Route("/v1/models", openai_routes.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", openai_routes.get_model, methods=["GET"]),
        Route(anthropic_routes.MESSAGES_ENDPOINT, anthropic_routes.messages, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _http_error, 405: _http_error})
    gateway = Gateway(runtime, GatewayMetrics(), speculation)
    app.state.gateway = gateway
    if api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key, metrics=gateway.metrics)
    return app

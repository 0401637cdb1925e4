"""OpenAI- and Anthropic-compatible HTTP gateway in front of the embedded runtime.

`serve_http` runs hypercorn's trio worker with the starlette app of
`build_app` inside the caller's trio event loop, so the gateway shares the
runtime, its sessions and its KV caches with any other front door served by
the same loop.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

import structlog
import trio

from draftwise.actors.http.app import build_app
from draftwise.protocol.request_messages import Speculation
from draftwise.runtime.errors import DraftwiseError

__all__ = [
    "DEFAULT_PORT",
    "GatewayConfigError",
    "build_app",
    "check_bind",
    "is_loopback_host",
    "serve_http",
]

DEFAULT_PORT = 11435

log = structlog.get_logger("draftwise.http")


class GatewayConfigError(DraftwiseError):
    """A gateway bind address or key setting that is unsafe or invalid."""


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses; any other name counts as remote."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, api_key: str | None, allow_remote: bool) -> None:
    """Raise `GatewayConfigError` unless binding ``host`` is safe with these settings."""
    if api_key is not None and not api_key.strip():
        raise GatewayConfigError("the API key is empty; pass a non-empty key or none")
    if is_loopback_host(host):
        return
    if not allow_remote:
        raise GatewayConfigError(
            f"binding {host} would expose the gateway beyond this machine; bind 127.0.0.1, "
            "or allow remote clients explicitly and set an API key"
        )
    if api_key is None:
        raise GatewayConfigError(
            f"binding the non-loopback address {host} needs an API key that every request "
            "must send; set one"
        )


async def serve_http(
    runtime: Any,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    api_key: str | None = None,
    allow_remote: bool = False,
    speculation: Speculation = "auto",
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the gateway for ``runtime`` until cancelled.

    ``port`` 0 picks a free port. Once listening, ``task_status.started`` gets
    the bound base URLs (``["http://127.0.0.1:PORT"]``). A non-loopback
    ``host`` needs ``allow_remote=True`` and an ``api_key``; with a key set,
    every request must send it (Bearer or x-api-key). ``speculation`` is the
    mode of requests that do not set the ``speculation`` extension field. Raises
    `GatewayConfigError` before binding when these do not hold, and OSError
    when the address is taken.
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    check_bind(host, api_key=api_key, allow_remote=allow_remote)
    config = Config()
    bind_host = f"[{host.strip('[]')}]" if ":" in host else host
    config.bind = [f"{bind_host}:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 2.0
    app = build_app(runtime, api_key=api_key, speculation=speculation)

    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(functools.partial(serve, app, config))  # type: ignore[arg-type]
            log.info(
                "http_gateway_started", actor="http", urls=binds, api_key_required=bool(api_key)
            )
            task_status.started(binds)
    finally:
        log.info("http_gateway_stopped", actor="http")

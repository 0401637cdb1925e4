"""The `draftwise serve` process: load the models, serve the socket and optional HTTP."""

from __future__ import annotations

import os
import sys
from typing import Any

import trio

from draftwise.actors.server import serve
from draftwise.actors.server_config import (
    ConfigError,
    ServeConfig,
    default_socket_path,
    read_api_key,
    runtime_config,
)
from draftwise.actors.server_socket import check_socket_available


async def run_server(config: ServeConfig) -> None:
    """Load the models, then serve the socket (and HTTP, if configured) until a stop signal."""
    from draftwise.actors.runtime import Runtime

    socket_path = config.server.socket or default_socket_path()
    _make_socket_folder(socket_path)
    check_socket_available(socket_path)
    allowed = {os.getuid(), *config.server.allow_uids}
    # Checked before the models load, so a typo fails in a second, not after the load.
    http_address = None
    if config.http.listen is not None:
        http_address = _split_host_port(config.http.listen)
    api_key = read_api_key(config.http.api_key_file)

    settings = runtime_config(config.runtime)
    async with Runtime.open(settings) as runtime:
        async with trio.open_nursery() as nursery:
            if http_address is not None:
                host, port = http_address
                urls = await nursery.start(_serve_http, runtime, host, port, api_key, config)
                _announce(f"HTTP gateway listening on {', '.join(map(str, urls))}")

            async def serve_socket(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                await serve(
                    runtime,
                    socket_path,
                    socket_mode=config.server.socket_mode,
                    allowed_uids=allowed,
                    drain_timeout_s=config.server.drain_timeout_s,
                    limits=config.server.limits(),
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()

            await nursery.start(serve_socket)
            _announce(f"serving {settings.model} on {socket_path}; stop with Ctrl-C")


def _announce(line: str) -> None:
    """Print a startup line to stderr, whatever the log level, so a user sees the server is up."""
    print(f"draftwise: {line}", file=sys.stderr, flush=True)


async def _serve_http(
    runtime: Any,
    host: str,
    port: int,
    api_key: str | None,
    config: ServeConfig,
    *,
    task_status: Any,
) -> None:
    try:
        from draftwise.actors.http import serve_http
    except ImportError as error:
        raise ConfigError(
            f"--http needs the HTTP gateway, which failed to import ({error}); install "
            f"draftwise with its HTTP dependencies or drop --http"
        ) from error
    await serve_http(
        runtime,
        host=host,
        port=port,
        api_key=api_key,
        allow_remote=config.http.allow_remote,
        task_status=task_status,
    )


def _split_host_port(listen: str) -> tuple[str, int]:
    host, separator, port_text = listen.rpartition(":")
    if not separator or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"--http '{listen}' is not HOST:PORT; write it like 127.0.0.1:8080")
    return host.strip("[]"), int(port_text)


def _make_socket_folder(socket_path: str) -> None:
    """Create the socket's folder, owner-only, when it does not exist yet."""
    folder = os.path.dirname(socket_path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)

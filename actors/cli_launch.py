"""The `launch` command: run a coding agent against a local draftwise HTTP gateway.

`draftwise launch aider [-- AIDER_ARGS]` reuses the gateway already serving
on the port, or starts `draftwise serve --http` in the background and waits
for its health check, then runs aider with the gateway as its OpenAI
endpoint (model ``openai/<target>``). A server that `launch` started is
stopped when aider exits, unless ``--keep-server`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from draftwise.runtime.errors import DraftwiseError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435
DEFAULT_TARGET = "qwen2.5-coder:1.5b"
DEFAULT_DRAFT = "qwen2.5-coder:0.5b"
HEALTH_TIMEOUT_S = 2.0
LOCAL_KEY = "draftwise-local"
"""Key aider sends when the gateway needs none; OpenAI clients refuse to run without one."""


class LaunchError(DraftwiseError):
    """A launch step that failed, with what to do about it."""


@dataclass(frozen=True)
class ServerInfo:
    base_url: str
    models: list[str]
    context_length: int | None


def add_launch_commands(subparsers: Any) -> None:
    """Add ``launch aider`` to the ``draftwise`` command's subparsers."""
    launch = subparsers.add_parser(
        "launch", help="run a coding agent against a local draftwise HTTP server"
    )
    agents = launch.add_subparsers(dest="agent", required=True, metavar="AGENT")
    aider = agents.add_parser(
        "aider",
        help="run aider with draftwise as its OpenAI-compatible backend",
        description="Start or reuse a draftwise HTTP server, then run aider against it. "
        "Arguments after -- go to aider unchanged.",
    )
    aider.add_argument("--host", default=DEFAULT_HOST, help=f"server host (default {DEFAULT_HOST})")
    aider.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"server port (default {DEFAULT_PORT})"
    )
    aider.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="target model; a running server must serve it, a new one loads it "
        f"(default: the running server's model, else {DEFAULT_TARGET})",
    )
    aider.add_argument(
        "--draft",
        default=DEFAULT_DRAFT,
        metavar="NAME",
        help=f"draft model of a server that launch starts (default {DEFAULT_DRAFT}; "
        "'none' for n-gram drafts only)",
    )
    aider.add_argument("--store", metavar="DIR", help="model store folder of a new server")
    aider.add_argument(
        "--aider", metavar="PATH", help="aider executable (default: `aider` on PATH)"
    )
    aider.add_argument(
        "--start-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for a new server to load its models (default 600)",
    )
    aider.add_argument(
        "--keep-server",
        action="store_true",
        help="leave a server that launch started running after aider exits",
    )
    aider.add_argument(
        "--server-log",
        metavar="FILE",
        help="log file of a server that launch starts (default: draftwise-http-PORT.log "
        "in the temporary folder)",
    )
    aider.add_argument(
        "aider_args", nargs=argparse.REMAINDER, metavar="-- AIDER_ARGS", help="passed to aider"
    )
    aider.set_defaults(func=run_launch_aider)


def run_launch_aider(args: argparse.Namespace) -> int:
    """Run aider against a reused or new server; return aider's exit status."""
    aider_args = list(args.aider_args)
    if aider_args[:1] == ["--"]:
        aider_args = aider_args[1:]
    aider = _find_aider(args.aider)
    api_key = os.environ.get("DRAFTWISE_API_KEY") or None
    base_url = f"http://{_url_host(args.host)}:{args.port}"

    server = None
    info = probe_server(base_url, api_key)
    if info is None:
        server = _start_server(args, base_url)
        info = _wait_for_server(server, base_url, api_key, args.start_timeout, args)
    model = _pick_model(info, args.model)
    command = aider_command(aider, info, model, aider_args)
    env = {**os.environ, "OPENAI_API_BASE": info.base_url + "/v1"}
    env["OPENAI_API_KEY"] = api_key or LOCAL_KEY
    # litellm (inside aider) otherwise downloads its model price list at start.
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    print(f"draftwise: running aider on {model} at {info.base_url}", file=sys.stderr)

    if server is None or args.keep_server:
        os.execvpe(command[0], command, env)
    try:
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        _stop_server(server)


def probe_server(base_url: str, api_key: str | None) -> ServerInfo | None:
    """Return the served models if a healthy gateway responds at ``base_url``, else None."""
    try:
        health = _get_json(base_url + "/health", api_key)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    if health.get("status") not in ("ok", "degraded"):
        return None
    context_length = None
    try:
        listing = _get_json(base_url + "/v1/models", api_key)
        first = listing["data"][0]
        context_length = first.get("draftwise", {}).get("context_length")
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError):
        pass
    return ServerInfo(base_url, list(health.get("models", [])), context_length)


def aider_command(aider: str, info: ServerInfo, model: str, aider_args: list[str]) -> list[str]:
    """Build the aider command line: the gateway as OpenAI endpoint and the model's context size."""
    command = [aider, "--model", f"openai/{model}", "--openai-api-base", info.base_url + "/v1"]
    if info.context_length:
        command += ["--model-metadata-file", str(_metadata_file(model, info.context_length))]
    return command + aider_args


def _metadata_file(model: str, context_length: int) -> Path:
    # aider looks up unknown models' context size in litellm's table. This file
    # gives the context size and marks the tokens as free.
    metadata = {
        f"openai/{model}": {
            "max_input_tokens": context_length,
            "max_output_tokens": context_length,
            "max_tokens": context_length,
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
            "litellm_provider": "openai",
            "mode": "chat",
        }
    }
    safe_name = "".join(ch if ch.isalnum() else "-" for ch in model)
    path = Path(tempfile.gettempdir()) / f"draftwise-aider-{safe_name}.json"
    path.write_text(json.dumps(metadata, indent=2))
    return path


def _get_json(url: str, api_key: str | None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT_S) as response:
        value = json.loads(response.read())
    if not isinstance(value, dict):
        raise ValueError(f"{url} returned {type(value).__name__}, not a JSON object")
    return value


def _find_aider(explicit: str | None) -> str:
    if explicit is not None:
        if not os.access(explicit, os.X_OK):
            raise LaunchError(f"--aider {explicit} is not an executable file; pass aider's path")
        return explicit
    found = shutil.which("aider")
    if found is None:
        raise LaunchError(
            "aider was not found on PATH; install it in its own virtualenv "
            "(python -m venv ~/aider-venv && ~/aider-venv/bin/pip install aider-chat) "
            "and pass --aider ~/aider-venv/bin/aider"
        )
    return found


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _server_log_path(args: argparse.Namespace) -> Path:
    if args.server_log:
        return Path(args.server_log)
    return Path(tempfile.gettempdir()) / f"draftwise-http-{args.port}.log"


def _start_server(args: argparse.Namespace, base_url: str) -> subprocess.Popen[bytes]:
    log_path = _server_log_path(args)
    socket_path = Path(tempfile.gettempdir()) / f"draftwise-launch-{args.port}.sock"
    command = [
        sys.executable, "-m", "draftwise.actors.cli", "serve",
        "--http", f"{_url_host(args.host)}:{args.port}",
        "--socket", str(socket_path),
        "--model", args.model or DEFAULT_TARGET,
    ]  # fmt: skip
    if args.draft and args.draft != "none":
        command += ["--draft", args.draft]
    if args.store:
        command += ["--store", args.store]
    print(f"draftwise: starting a server at {base_url}, log in {log_path}", file=sys.stderr)
    log_file = log_path.open("ab")
    try:
        return subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    finally:
        log_file.close()


def _wait_for_server(
    server: subprocess.Popen[bytes],
    base_url: str,
    api_key: str | None,
    timeout_s: float,
    args: argparse.Namespace,
) -> ServerInfo:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = probe_server(base_url, api_key)
        if info is not None:
            return info
        if server.poll() is not None:
            raise LaunchError(
                f"the server exited with status {server.returncode} before responding at "
                f"{base_url}; see {_server_log_path(args)}"
            )
        time.sleep(0.5)
    _stop_server(server)
    raise LaunchError(
        f"the server did not respond at {base_url} within {timeout_s:.0f} s; raise "
        "--start-timeout for slow model loads"
    )


def _stop_server(server: subprocess.Popen[bytes] | None) -> None:
    if server is None or server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _pick_model(info: ServerInfo, requested: str | None) -> str:
    if requested is None:
        if not info.models:
            raise LaunchError(f"the server at {info.base_url} serves no model")
        return info.models[0]
    if requested not in info.models:
        raise LaunchError(
            f"the server at {info.base_url} serves {', '.join(info.models) or 'no model'}, "
            f"not '{requested}'; stop it or drop --model"
        )
    return requested

"""The `serve`, `chat` and `stats` commands, and `generate --socket`.

Exit codes: 0 success, 1 a failed request or a server error, 2 invalid
options or configuration, 3 no server at the socket path, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import msgspec

from draftwise.actors.cli import DEFAULT_TARGET, _add_sampling_options, _read_messages
from draftwise.actors.server_config import (
    ConfigError,
    default_socket_path,
    load_serve_config,
    parse_socket_mode,
)
from draftwise.protocol import (
    ChatMessage,
    Chunk,
    ClientError,
    Done,
    GenerateRequest,
    ProtocolError,
    RemoteError,
    SamplingParams,
)

EXIT_REQUEST_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_SERVER = 3

GenerateFunction = Callable[[GenerateRequest], Iterator[Chunk | Done]]


def add_socket_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--socket", metavar="PATH", help=help_text)


def _default_socket_help() -> str:
    return f"$DRAFTWISE_SOCKET, else {default_socket_path()}"


EMBEDDED_SOCKET_HELP = (
    "Unix socket of a running `draftwise serve` to send the request to; without it the "
    "model loads in this process"
)


def add_serve_commands(subparsers: Any) -> None:
    """Add `serve`, `chat` and `stats` to the `draftwise` subcommands."""
    _add_serve(subparsers)

    chat = subparsers.add_parser(
        "chat", help="talk to a model interactively, embedded or through --socket"
    )
    add_socket_option(chat, EMBEDDED_SOCKET_HELP)
    _add_runtime_options(chat)
    _add_sampling_options(chat)
    chat.add_argument("--system", metavar="TEXT", help="system message for the chat template")
    chat.set_defaults(func=run_chat)

    stats = subparsers.add_parser("stats", help="print a running server's counters")
    add_socket_option(stats, f"Unix socket of the server (default {_default_socket_help()})")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(func=run_stats)


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="target model: catalogue name, GGUF file or safetensors folder (default: the "
        f"server's target with --socket, else {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--draft",
        metavar="NAME",
        help="draft model for speculative decoding (default: the server's, else n-gram drafts)",
    )
    parser.add_argument(
        "--drafter",
        default="auto",
        choices=["auto", "draft_model", "ngram"],
        help="what proposes draft tokens in this process (default auto)",
    )
    parser.add_argument("--store", metavar="DIR", help="model store folder")
    parser.add_argument(
        "--policy",
        default="auto",
        choices=["auto", "exact", "float32", "float32-all"],
        help="weight policy when the model loads in this process (default auto)",
    )


def _add_serve(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve", help="serve models on a Unix socket (and optionally over HTTP)"
    )
    serve.add_argument(
        "--config", metavar="FILE", help="TOML configuration; options given here override it"
    )
    add_socket_option(serve, f"Unix socket path to listen on (default {_default_socket_help()})")
    serve.add_argument("--model", metavar="NAME", help="target model: catalogue name or path")
    serve.add_argument("--draft", metavar="NAME", help="draft model (default: n-gram drafts only)")
    serve.add_argument(
        "--drafter",
        choices=["auto", "draft_model", "ngram"],
        help="what proposes draft tokens (default auto)",
    )
    serve.add_argument("--store", metavar="DIR", help="model store folder")
    serve.add_argument(
        "--policy",
        choices=["auto", "exact", "float32", "float32-all"],
        help="weight policy of the loader (default auto)",
    )
    serve.add_argument(
        "--socket-mode",
        metavar="OCTAL",
        help="socket file permissions in octal: 0600 owner only (default), 0660 adds the group",
    )
    serve.add_argument(
        "--allow-uid",
        action="append",
        type=int,
        metavar="UID",
        help="also accept clients running as this user id; repeat for several (default: the "
        "server's own uid only)",
    )
    serve.add_argument(
        "--cache-budget",
        metavar="SIZE",
        help="KV cache memory over all sessions, in bytes or with KiB/MiB/GiB, e.g. 4GiB "
        "(default 4GiB); idle sessions are evicted beyond it",
    )
    serve.add_argument(
        "--max-sessions", type=int, metavar="N", help="maximum sessions kept (default 64)"
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM or SIGINT, seconds to let running requests finish before they are "
        "cancelled (default 30)",
    )
    _add_http_options(serve)
    serve.set_defaults(func=run_serve)


def _add_http_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="also serve the OpenAI/Anthropic-compatible HTTP API on this address",
    )
    serve.add_argument(
        "--api-key-file",
        metavar="FILE",
        help="file whose first line is the key HTTP clients must send (default: "
        "$DRAFTWISE_API_KEY, else no key)",
    )
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        default=None,
        help="let --http bind a non-loopback address (needs an API key)",
    )


def run_serve(args: argparse.Namespace) -> int:
    """Load the models, then serve until SIGTERM or SIGINT."""
    import trio

    from draftwise.actors.server_main import run_server

    try:
        config = load_serve_config(args.config, _serve_overrides(args))
    except ConfigError as error:
        print(f"draftwise: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if config.log_level and args.log_level is None:
        from draftwise.runtime.log import configure_logging

        configure_logging(config.log_level)
    try:
        try:
            trio.run(run_server, config)
        except BaseExceptionGroup as group:
            # Nurseries wrap a start-up error; the CLI reports the one error it contains.
            raise _sole_exception(group) from None
    except ConfigError as error:
        print(f"draftwise: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _sole_exception(group: BaseExceptionGroup) -> BaseException:
    leaves = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            leaves.append(error)
    return leaves[0] if len(leaves) == 1 else group


def _serve_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    server: dict[str, Any] = {
        "socket": args.socket,
        "socket_mode": None if args.socket_mode is None else parse_socket_mode(args.socket_mode),
        "allow_uids": args.allow_uid,
        "drain_timeout_s": args.drain_timeout,
    }
    runtime = {
        "model": args.model,
        "draft": args.draft,
        "drafter": args.drafter,
        "policy": args.policy,
        "store_dir": args.store,
        "cache_budget": args.cache_budget,
        "max_sessions": args.max_sessions,
    }
    http = {
        "listen": args.http,
        "api_key_file": args.api_key_file,
        "allow_remote": args.allow_remote,
    }
    return {"server": server, "runtime": runtime, "http": http}


def run_stats(args: argparse.Namespace) -> int:
    """Print the server's counters."""

    def fetch(client: Any) -> dict[str, Any]:
        stats = msgspec.to_builtins(client.stats(timeout=30))
        stats.pop("type", None)
        stats.pop("request_id", None)
        return dict(stats)

    with _socket_errors(args.socket) as exit_code:
        from draftwise.protocol import Client

        with Client.connect(_socket(args), timeout=10) as client:
            client.hello("draftwise-cli", timeout=10)
            stats = fetch(client)
        if args.json:
            print(json.dumps(stats))
        else:
            width = max(len(key) for key in stats)
            for key, value in stats.items():
                shown = f"{value:.3f}" if isinstance(value, float) else value
                print(f"{key:<{width}}  {shown}")
    return exit_code[0]


def run_generate_over_socket(args: argparse.Namespace) -> int:
    """`draftwise generate --socket PATH`: send one request to a server and stream its text."""
    from draftwise.runtime.engine import parse_speculation

    speculation = parse_speculation(args.speculation)
    if args.raw:
        if not args.prompt:
            raise ValueError("--raw needs a PROMPT")
        request = _request(args, prompt=args.prompt, speculation=speculation)
    else:
        request = _request(args, messages=_chat_messages(args), speculation=speculation)

    with _socket_errors(args.socket) as exit_code, _socket_backend(_socket(args)) as generate:
        parts, token_ids, done = _stream(generate(request), echo=not args.json)
        if args.json:
            output = msgspec.to_builtins(done)
            output.pop("type", None)
            print(json.dumps({"text": "".join(parts), "token_ids": token_ids, **output}))
        else:
            sys.stdout.write("\n")
    return exit_code[0]


def run_chat(args: argparse.Namespace) -> int:
    """Read user turns from standard input and stream the model's replies."""
    history: list[dict[str, str]] = []
    if args.system:
        history.append({"role": "system", "content": args.system})
    session_id = None
    interactive = sys.stdin.isatty()
    backend = _socket_backend(_socket(args)) if args.socket else _embedded_backend(args)
    with _socket_errors(args.socket) as exit_code, backend as generate:
        if interactive:
            print("draftwise chat: type a message; /reset starts over, /exit or Ctrl-D ends.")
        while True:
            line = _prompt_line(interactive)
            if line is None or line.strip() == "/exit":
                break
            if line.strip() == "/reset":
                history, session_id = history[:1] if args.system else [], None
                continue
            if not line.strip():
                continue
            history.append({"role": "user", "content": line})
            messages = [ChatMessage(role=m["role"], content=m["content"]) for m in history]  # type: ignore[arg-type]
            request = _request(args, messages=messages, session_id=session_id)
            parts, _, done = _stream(generate(request), echo=True)
            sys.stdout.write("\n")
            history.append({"role": "assistant", "content": "".join(parts)})
            session_id = done.session_id
    return exit_code[0]


def _prompt_line(interactive: bool) -> str | None:
    try:
        return input("> " if interactive else "")
    except EOFError:
        return None


def _request(args: argparse.Namespace, **fields: Any) -> GenerateRequest:
    from draftwise.protocol import new_request_id

    sampling = SamplingParams(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed
    )
    fields.setdefault("speculation", "auto")
    return GenerateRequest(
        request_id=new_request_id(),
        model=args.model,
        draft=_socket_draft(args),
        sampling=sampling,
        stop=list(args.stop),
        max_tokens=args.max_tokens,
        **fields,
    )


def _socket_draft(args: argparse.Namespace) -> str | None:
    """Return the request's `draft`: the --draft name, else a --drafter other than auto.

    Raises ValueError for an MTP drafter, which `draftwise serve` cannot host.
    """
    from draftwise.runtime.drafters.mtp_catalogue import is_mtp_drafter

    draft = getattr(args, "draft", None)
    drafter = getattr(args, "drafter", "auto")
    if draft is not None and is_mtp_drafter(draft):
        raise ValueError(
            f"--draft {draft} is an MTP drafter, and draftwise serve cannot host one; "
            "run the command without --socket to draft with it, or omit --draft"
        )
    if drafter == "mtp":
        raise ValueError(
            "--drafter mtp needs an MTP drafter, and draftwise serve cannot host one; "
            "run the command without --socket, or use --drafter auto, ngram or draft_model"
        )
    if draft is None and drafter != "auto":
        return str(drafter)
    return draft


def _chat_messages(args: argparse.Namespace) -> list[ChatMessage]:
    messages = _read_messages(args)
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    return [ChatMessage(role=m["role"], content=m["content"]) for m in messages]  # type: ignore[arg-type]


def _stream(replies: Iterator[Chunk | Done], *, echo: bool) -> tuple[list[str], list[int], Done]:
    parts: list[str] = []
    token_ids: list[int] = []
    for reply in replies:
        if isinstance(reply, Done):
            return parts, token_ids, reply
        parts.append(reply.text)
        token_ids.extend(reply.token_ids)
        if echo and reply.text:
            sys.stdout.write(reply.text)
            sys.stdout.flush()
    raise ClientError("the reply stream ended without a Done reply")


def _socket(args: argparse.Namespace) -> str:
    return args.socket or default_socket_path()


@contextmanager
def _socket_backend(path: str) -> Iterator[GenerateFunction]:
    """Yield a function that sends a GenerateRequest to the server at `path`."""
    from draftwise.protocol import Client

    with Client.connect(path, timeout=10) as client:
        client.hello("draftwise-cli", timeout=10)

        def generate(request: GenerateRequest) -> Iterator[Chunk | Done]:
            fields = msgspec.structs.asdict(request)
            return client.generate(**fields)

        yield generate


def _embedded_backend(args: argparse.Namespace) -> AbstractContextManager[GenerateFunction]:
    """Load the model in this process and yield a function that runs a GenerateRequest."""
    from draftwise.actors.runtime import RuntimeConfig, SyncRuntime

    config = RuntimeConfig(
        model=args.model or DEFAULT_TARGET,
        draft=args.draft,
        drafter=args.drafter,
        policy=args.policy,
        store_dir=args.store,
    )

    @contextmanager
    def backend() -> Iterator[GenerateFunction]:
        with SyncRuntime.open(config) as runtime:
            # The runtime serves only the models it loaded, so requests name none.
            yield lambda request: runtime.generate(
                msgspec.structs.replace(request, model=None, draft=None)
            )

    return backend()


@contextmanager
def _socket_errors(socket_path: str | None) -> Iterator[list[int]]:
    """Turn connection and server errors into a message and an exit code in the yielded list."""
    exit_code = [0]
    path = socket_path or default_socket_path()
    try:
        yield exit_code
    except (FileNotFoundError, ConnectionRefusedError) as error:
        print(
            f"draftwise: error: no server at {path} ({error.strerror}); start one with "
            f"`draftwise serve --socket {path} --model NAME`",
            file=sys.stderr,
        )
        exit_code[0] = EXIT_NO_SERVER
    except RemoteError as error:
        print(f"draftwise: error: {error}", file=sys.stderr)
        exit_code[0] = EXIT_REQUEST_FAILED
    except (ClientError, ProtocolError, TimeoutError) as error:
        print(f"draftwise: error: talking to the server at {path} failed: {error}", file=sys.stderr)
        exit_code[0] = EXIT_REQUEST_FAILED

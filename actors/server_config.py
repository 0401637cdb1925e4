"""The `draftwise serve` configuration file: TOML decoded into typed sections with msgspec.

Every section rejects keys it does not define, naming the key and its table,
so a misspelled option fails at start instead of being ignored. Command-line
options override the file, key by key.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from draftwise.actors.server import (
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SEND_BUFFER_BYTES,
    DEFAULT_SEND_TIMEOUT_S,
    ServerLimits,
)
from draftwise.protocol import DEFAULT_MAX_FRAME_BYTES
from draftwise.runtime.errors import DraftwiseError

_SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class ConfigError(DraftwiseError):
    """A configuration file or option that cannot be used."""


class ServerSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[server]` table: the Unix socket and per-connection limits."""

    socket: str | None = None
    """Socket path; None uses `default_socket_path()`."""

    socket_mode: Annotated[int, Meta(ge=0, le=0o777)] = 0o600
    allow_uids: list[Annotated[int, Meta(ge=0)]] = msgspec.field(default_factory=list)
    """Peer uids accepted besides the server's own uid."""

    drain_timeout_s: Annotated[float, Meta(ge=0)] = DEFAULT_DRAIN_TIMEOUT_S
    max_connections: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_CONNECTIONS
    max_frame_bytes: Annotated[int, Meta(ge=1024, le=2**32 - 1)] = DEFAULT_MAX_FRAME_BYTES
    send_buffer_bytes: Annotated[int, Meta(ge=1024)] = DEFAULT_SEND_BUFFER_BYTES
    send_timeout_s: Annotated[float, Meta(gt=0)] = DEFAULT_SEND_TIMEOUT_S

    def limits(self) -> ServerLimits:
        return ServerLimits(
            max_frame_bytes=self.max_frame_bytes,
            send_buffer_bytes=self.send_buffer_bytes,
            send_timeout_s=self.send_timeout_s,
            max_connections=self.max_connections,
        )


class RuntimeSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[runtime]` table: the fields of `RuntimeConfig`, with the budget as a size string."""

    model: str | None = None
    draft: str | None = None
    drafter: str = "auto"
    policy: str = "auto"
    store_dir: str | None = None
    cache_budget: str | int = "4GiB"
    """KV cache bytes over all sessions: an integer, or a string such as "512MiB" or "4GiB"."""

    max_sessions: Annotated[int, Meta(ge=1)] = 64
    prefill_chunk: Annotated[int, Meta(ge=1)] = 256
    batch_sessions: Annotated[int, Meta(ge=1)] = 8
    """Most sessions whose decode rounds share one target pass; 1 runs every round alone."""


class HttpSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[http]` table: the optional OpenAI/Anthropic-compatible HTTP gateway."""

    listen: str | None = None
    """HOST:PORT to serve HTTP on; None serves no HTTP."""

    api_key_file: str | None = None
    """File whose first line is the API key clients must send."""

    allow_remote: bool = False


class ServeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A whole `draftwise serve` configuration file."""

    log_level: str | None = None
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    runtime: RuntimeSection = msgspec.field(default_factory=RuntimeSection)
    http: HttpSection = msgspec.field(default_factory=HttpSection)


def load_serve_config(
    path: str | os.PathLike[str] | None, overrides: dict[str, dict[str, Any]] | None = None
) -> ServeConfig:
    """Read `path` (or start empty), apply `overrides` by table and key, and validate.

    `overrides` maps a table name to the keys the command line set; None values
    are skipped, so an option left unset keeps the file's value. Raises
    ConfigError naming the file and the bad key.
    """
    raw: dict[str, Any] = {}
    source = "command-line options"
    if path is not None:
        source = f"config file {os.fspath(path)}"
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{source} does not exist; pass an existing --config FILE") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source} is not valid TOML: {exc}") from None

    for table, values in (overrides or {}).items():
        section = raw.setdefault(table, {}) if table else raw
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: `{table}` must be a table, like [{table}]")
        section.update({key: value for key, value in values.items() if value is not None})

    try:
        config = msgspec.convert(raw, ServeConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}; see deploy/draftwise.toml for every key") from None
    if config.runtime.model is None:
        raise ConfigError(f"{source} names no model; pass --model NAME or set model in [runtime]")
    parse_size(config.runtime.cache_budget, "cache_budget")
    return config


def runtime_config(section: RuntimeSection) -> Any:
    """Build the `RuntimeConfig` that `Runtime.open` takes from the `[runtime]` table."""
    from draftwise.actors.runtime import RuntimeConfig

    assert section.model is not None
    return RuntimeConfig(
        model=section.model,
        draft=section.draft,
        drafter=section.drafter,
        policy=section.policy,
        store_dir=section.store_dir,
        cache_budget_bytes=parse_size(section.cache_budget, "cache_budget"),
        max_sessions=section.max_sessions,
        prefill_chunk=section.prefill_chunk,
        batch_sessions=section.batch_sessions,
    )


def parse_size(value: str | int, name: str) -> int:
    """Return a byte count from an integer or a string such as "512MiB", "4GiB" or "1.5GiB"."""
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{name} is {value} bytes; use a size of 0 or more")
        return value
    match = _SIZE_PATTERN.match(value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ConfigError(
            f"{name} '{value}' is not a size; write bytes or a number with KiB, MiB, GiB or TiB, "
            f"such as 4GiB"
        )
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_socket_mode(value: str) -> int:
    """Return the permission bits of an octal string such as "600", "0660" or "0o660"."""
    text = value.lower().removeprefix("0o")
    try:
        mode = int(text, 8)
    except ValueError:
        raise ConfigError(
            f"socket mode '{value}' is not octal; write it like 0600 or 0660"
        ) from None
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"socket mode '{value}' is over 0777; give permission bits only")
    return mode


def default_socket_path() -> str:
    """Return `$DRAFTWISE_SOCKET`, else draftwise.sock in `$XDG_RUNTIME_DIR`, else in /tmp."""
    explicit = os.environ.get("DRAFTWISE_SOCKET")
    if explicit:
        return explicit
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return os.path.join(runtime_dir, "draftwise", "draftwise.sock")
    return f"/tmp/draftwise-{os.getuid()}/draftwise.sock"


def read_api_key(path: str | None) -> str | None:
    """Return the first line of `path`, else `$DRAFTWISE_API_KEY`, else None."""
    if path is None:
        return os.environ.get("DRAFTWISE_API_KEY") or None
    try:
        key = Path(path).read_text().strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
    if not key or not key[0]:
        raise ConfigError(f"API key file {path} is empty; write the key on its first line")
    return key[0]

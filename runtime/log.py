"""structlog set-up: JSON lines in production, readable lines in a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog

_configured = False


class _StderrLoggerFactory:
    """Make PrintLoggers that write to whatever ``sys.stderr`` is when a line is logged.

    ``structlog.PrintLoggerFactory(file=sys.stderr)`` keeps the stream it saw at
    configure time. When that stream is later replaced and closed (by a test
    harness, or a daemon that reopens its streams), every log call would raise.
    """

    def __call__(self, *args: object) -> structlog.PrintLogger:
        return structlog.PrintLogger(file=sys.stderr)


def configure_logging(level: str | None = None, *, json: bool | None = None) -> None:
    """Configure structlog once; ``DRAFTWISE_LOG_LEVEL`` and ``DRAFTWISE_LOG_JSON`` override."""
    global _configured
    level_name = (level or os.environ.get("DRAFTWISE_LOG_LEVEL") or "warning").upper()
    numeric = getattr(logging, level_name, None)
    if not isinstance(numeric, int):
        raise ValueError(f"log level '{level_name}' is invalid; use debug, info, warning or error")
    if json is None:
        json = os.environ.get("DRAFTWISE_LOG_JSON", "") == "1" or not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    _configured = True


def ensure_logging() -> None:
    """Apply `configure_logging`'s defaults unless structlog is configured already.

    Without this, an embedded runtime in a program that never configured
    structlog would print every debug line to standard output.
    """
    if not structlog.is_configured():
        configure_logging()

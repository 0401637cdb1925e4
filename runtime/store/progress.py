"""Progress reports of a pull: a redrawn bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

_MIB = 1024 * 1024


class Progress(Protocol):
    """Receives what a pull is doing: notes, and the bytes written while assembling."""

    def note(self, message: str) -> None:
        """Report one event, such as "already pulled" or "installing packages"."""
        ...

    def begin(self, label: str, total_bytes: int) -> None:
        """Start a transfer of ``total_bytes``."""
        ...

    def advance(self, num_bytes: int) -> None:
        """Add ``num_bytes`` written since the last call."""
        ...

    def end(self) -> None:
        """Finish the transfer started by ``begin``."""
        ...


class NullProgress:
    """A Progress that reports nothing."""

    def note(self, message: str) -> None:
        pass

    def begin(self, label: str, total_bytes: int) -> None:
        pass

    def advance(self, num_bytes: int) -> None:
        pass

    def end(self) -> None:
        pass


def format_size(num_bytes: int) -> str:
    """Format a byte count in MiB or GiB with one decimal (``1065.6 MiB``)."""
    if num_bytes >= 10 * 1024 * _MIB:
        return f"{num_bytes / (1024 * _MIB):.1f} GiB"
    return f"{num_bytes / _MIB:.1f} MiB"


class StreamProgress:
    """A Progress that writes to a text stream, stderr by default.

    On a terminal it redraws one line (bar, percent, bytes) at most every
    ``redraw_interval_s`` seconds. Elsewhere, such as a log file or a pipe, it
    prints a plain line at every ``line_step_percent`` percent, so the output
    contains no carriage returns.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        bar_width: int = 30,
        redraw_interval_s: float = 0.1,
        line_step_percent: int = 10,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._is_terminal = self._stream.isatty()
        self._bar_width = bar_width
        self._redraw_interval_s = redraw_interval_s
        self._line_step_percent = line_step_percent
        self._label = ""
        self._total_bytes = 0
        self._done_bytes = 0
        self._last_draw_s = 0.0
        self._next_line_percent = 0
        self._last_line_percent = -1

    def note(self, message: str) -> None:
        self._stream.write(message + "\n")
        self._stream.flush()

    def begin(self, label: str, total_bytes: int) -> None:
        self._label = label
        self._total_bytes = total_bytes
        self._done_bytes = 0
        self._last_draw_s = 0.0
        self._next_line_percent = 0
        self._last_line_percent = -1
        self._draw(force=True)

    def advance(self, num_bytes: int) -> None:
        self._done_bytes += num_bytes
        self._draw(force=False)

    def end(self) -> None:
        self._draw(force=True)
        if self._is_terminal:
            self._stream.write("\n")
            self._stream.flush()

    def _percent(self) -> float:
        if self._total_bytes <= 0:
            return 100.0
        return min(100.0, 100.0 * self._done_bytes / self._total_bytes)

    def _draw(self, *, force: bool) -> None:
        if self._is_terminal:
            self._draw_bar(force=force)
        else:
            self._draw_line(force=force)

    def _draw_bar(self, *, force: bool) -> None:
        now_s = time.monotonic()
        if not force and now_s - self._last_draw_s < self._redraw_interval_s:
            return
        self._last_draw_s = now_s
        percent = self._percent()
        filled = round(self._bar_width * percent / 100)
        bar = "#" * filled + "-" * (self._bar_width - filled)
        self._stream.write(
            f"\r{self._label} [{bar}] {percent:5.1f}% "
            f"{format_size(self._done_bytes)} / {format_size(self._total_bytes)}"
        )
        self._stream.flush()

    def _draw_line(self, *, force: bool) -> None:
        percent = self._percent()
        if int(percent) == self._last_line_percent:
            return
        if not force and percent < self._next_line_percent:
            return
        # Print each step once, even when one advance crosses several steps.
        while self._next_line_percent <= percent:
            self._next_line_percent += self._line_step_percent
        self._last_line_percent = int(percent)
        self._stream.write(
            f"{self._label}: {percent:.0f}% "
            f"({format_size(self._done_bytes)} / {format_size(self._total_bytes)})\n"
        )
        self._stream.flush()

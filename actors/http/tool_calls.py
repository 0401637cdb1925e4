"""Find Qwen-style tool calls in generated text, also while it streams.

Qwen 2.5 chat templates ask the model to answer a tool request with
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. The parser
splits the output into plain text and tool calls. While streaming, it holds
back any text that could be the start of an opening tag, so a client never
sees a partial tag as text.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"


@dataclass(frozen=True)
class ToolCall:
    """One parsed call: ``arguments`` is the JSON object the model wrote, encoded again."""

    id: str
    name: str
    arguments: str

    @property
    def arguments_object(self) -> dict[str, Any]:
        value = json.loads(self.arguments)
        assert isinstance(value, dict)
        return value


@dataclass(frozen=True)
class TextPiece:
    text: str


Piece = TextPiece | ToolCall


def new_tool_call_id(prefix: str = "call_") -> str:
    return prefix + secrets.token_hex(12)


def parse_tool_call(body: str, id_prefix: str = "call_") -> ToolCall | None:
    """Parse the JSON between the tags; None when it is not a call with a name."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        # Some models write the arguments as a JSON string instead of an object.
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(new_tool_call_id(id_prefix), value["name"], json.dumps(arguments))


class ToolCallParser:
    """Split streamed text into `TextPiece`s and `ToolCall`s.

    Call `feed` with each text delta and `finish` once at the end. A tagged
    block whose body is not a valid call is passed through as text, tags
    included, so nothing the model wrote is lost.
    """

    def __init__(self, id_prefix: str = "call_") -> None:
        self._id_prefix = id_prefix
        self._pending = ""  # text not yet emitted: a possible tag start, or a call body
        self._in_call = False
        self.num_calls = 0

    def feed(self, text: str) -> list[Piece]:
        self._pending += text
        pieces: list[Piece] = []
        while True:
            if self._in_call:
                end = self._pending.find(CLOSE_TAG)
                if end < 0:
                    return pieces
                body = self._pending[:end]
                self._pending = self._pending[end + len(CLOSE_TAG) :]
                self._in_call = False
                pieces.append(self._call_or_text(body, closed=True))
                continue
            start = self._pending.find(OPEN_TAG)
            if start >= 0:
                if start > 0:
                    pieces.append(TextPiece(self._pending[:start]))
                self._pending = self._pending[start + len(OPEN_TAG) :]
                self._in_call = True
                continue
            keep = _partial_tag_length(self._pending)
            emit = self._pending[: len(self._pending) - keep]
            self._pending = self._pending[len(self._pending) - keep :]
            if emit:
                pieces.append(TextPiece(emit))
            return pieces

    def finish(self) -> list[Piece]:
        """Flush what is held back; an unclosed call still counts if its JSON is complete."""
        pending, self._pending = self._pending, ""
        if not pending:
            return []
        if self._in_call:
            self._in_call = False
            return [self._call_or_text(pending, closed=False)]
        return [TextPiece(pending)]

    def _call_or_text(self, body: str, *, closed: bool) -> Piece:
        call = parse_tool_call(body.strip(), self._id_prefix)
        if call is None:
            return TextPiece(OPEN_TAG + body + (CLOSE_TAG if closed else ""))
        self.num_calls += 1
        return call


def split_tool_calls(text: str, id_prefix: str = "call_") -> tuple[str, list[ToolCall]]:
    """Return the plain text and the tool calls of a whole output."""
    parser = ToolCallParser(id_prefix)
    pieces = parser.feed(text) + parser.finish()
    plain = "".join(piece.text for piece in pieces if isinstance(piece, TextPiece))
    calls = [piece for piece in pieces if isinstance(piece, ToolCall)]
    return plain, calls


def _partial_tag_length(text: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of the open tag."""
    for length in range(min(len(text), len(OPEN_TAG) - 1), 0, -1):
        if OPEN_TAG.startswith(text[-length:]):
            return length
    return 0

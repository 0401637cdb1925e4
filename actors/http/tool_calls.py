"""Find Qwen-style tool calls in generated text, also while it streams.

Qwen 2.5 chat templates ask the model to answer a tool request with
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. The parser
splits the output into plain text and tool calls. While streaming, it holds
back any text that could be the start of an opening tag, so a client never
sees a partial tag as text.

Small models often drop the tags and answer with the bare JSON object, in a
```` ```json ```` fence or not (Qwen2.5-Coder-1.5B does). Given the declared
tool names, the parser also accepts a reply that consists of nothing but such
an object naming a declared tool. To decide, it holds back a reply that
starts with ``{`` or a json fence until the reply ends.
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


def tool_names(tools: list[dict[str, Any]] | None) -> frozenset[str] | None:
    """Names of OpenAI-form tool definitions; None when no tools are declared."""
    if not tools:
        return None
    return frozenset(tool["function"]["name"] for tool in tools)


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
    included, so nothing the model wrote is lost. With ``tool_names``, a
    whole reply that is one bare JSON call to a declared tool is a call too.
    """

    def __init__(self, id_prefix: str = "call_", tool_names: frozenset[str] | None = None) -> None:
        self._id_prefix = id_prefix
        self._tool_names = tool_names
        self._pending = ""  # text not yet emitted: a possible tag start, or a call body
        self._in_call = False
        self._leading = bool(tool_names)  # still deciding whether the reply is a bare call
        self.num_calls = 0

    def feed(self, text: str) -> list[Piece]:
        self._pending += text
        if self._leading:
            if _may_be_bare_call(self._pending):
                return []
            self._leading = False
        return self._split_tags()

    def finish(self) -> list[Piece]:
        """Flush what is held back; an unclosed call still counts if its JSON is complete."""
        if self._leading:
            self._leading = False
            call = self._bare_call(self._pending)
            if call is not None:
                self._pending = ""
                return [call]
        pieces = self._split_tags()
        pending, self._pending = self._pending, ""
        if not pending:
            return pieces
        if self._in_call:
            self._in_call = False
            return [*pieces, self._call_or_text(pending, closed=False)]
        return [*pieces, TextPiece(pending)]

    def _split_tags(self) -> list[Piece]:
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

    def _call_or_text(self, body: str, *, closed: bool) -> Piece:
        call = parse_tool_call(body.strip(), self._id_prefix)
        if call is None:
            return TextPiece(OPEN_TAG + body + (CLOSE_TAG if closed else ""))
        self.num_calls += 1
        return call

    def _bare_call(self, text: str) -> ToolCall | None:
        body = text.strip()
        if body.startswith(JSON_FENCE):
            if not body.endswith("```"):
                return None
            body = body[len(JSON_FENCE) : -3].strip()
        call = parse_tool_call(body, self._id_prefix)
        if call is None or self._tool_names is None or call.name not in self._tool_names:
            return None
        self.num_calls += 1
        return call


JSON_FENCE = "```json"


def _may_be_bare_call(text: str) -> bool:
    """True while ``text`` could still be a reply made of one bare JSON call."""
    head = text.lstrip()
    if not head:
        return True
    if head.startswith("{"):
        return True
    return head.startswith(JSON_FENCE) or JSON_FENCE.startswith(head)


def split_tool_calls(
    text: str, id_prefix: str = "call_", tool_names: frozenset[str] | None = None
) -> tuple[str, list[ToolCall]]:
    """Return the plain text and the tool calls of a whole output."""
    parser = ToolCallParser(id_prefix, tool_names)
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

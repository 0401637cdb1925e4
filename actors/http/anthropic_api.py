"""Translate Anthropic messages requests and build their responses and stream events.

Anthropic's usage counts ``input_tokens`` without the prompt tokens read from
the cache, which it reports as ``cache_read_input_tokens``; the gateway
follows that split. Nothing here touches the network.
"""

from __future__ import annotations

from typing import Any

from draftwise.actors.http.anthropic_schema import (
    MessageIn,
    MessagesRequest,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from draftwise.actors.http.generation import Generation, GenerationSpec
from draftwise.actors.http.tool_calls import TextPiece, ToolCall

DEFAULT_TEMPERATURE = 0.0
"""Greedy decoding when a request sets no temperature, as `draftwise generate` does.
Current Anthropic clients no longer send a temperature at all."""

TOOL_ID_PREFIX = "toolu_"


def _system_text(system: str | list[TextBlock] | None) -> str | None:
    if system is None or isinstance(system, str):
        return system
    return "\n".join(block.text for block in system)


def _tool_result_text(block: ToolResultBlock) -> str:
    if block.content is None:
        text = ""
    elif isinstance(block.content, str):
        text = block.content
    else:
        text = "\n".join(inner.text for inner in block.content if isinstance(inner, TextBlock))
    # The template has no error flag, so the model learns of a failed call from the text.
    return f"Error: {text}" if block.is_error else text


def _user_turns(message: MessageIn) -> list[dict[str, Any]]:
    """Convert a user message's blocks in order, tool results to ``tool`` turns."""
    if isinstance(message.content, str):
        return [{"role": "user", "content": message.content}]
    turns: list[dict[str, Any]] = []
    texts: list[str] = []
    for block in message.content:
        if isinstance(block, ToolResultBlock):
            if texts:
                turns.append({"role": "user", "content": "\n".join(texts)})
                texts = []
            turns.append(
                {
                    "role": "tool",
                    "content": _tool_result_text(block),
                    "tool_call_id": block.tool_use_id,
                }
            )
        elif isinstance(block, TextBlock):
            texts.append(block.text)
    if texts:
        turns.append({"role": "user", "content": "\n".join(texts)})
    return turns


def _assistant_turn(message: MessageIn) -> dict[str, Any]:
    if isinstance(message.content, str):
        return {"role": "assistant", "content": message.content}
    texts = [block.text for block in message.content if isinstance(block, TextBlock)]
    calls = [
        {
            "id": block.id,
            "type": "function",
            "function": {"name": block.name, "arguments": block.input},
        }
        for block in message.content
        if isinstance(block, ToolUseBlock)
    ]
    turn: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
    if calls:
        turn["tool_calls"] = calls
    return turn


def template_messages(body: MessagesRequest) -> list[dict[str, Any]]:
    """Convert the system prompt and messages to the dicts chat templates read."""
    converted: list[dict[str, Any]] = []
    system = _system_text(body.system)
    if system:
        converted.append({"role": "system", "content": system})
    for message in body.messages:
        if message.role == "user":
            converted.extend(_user_turns(message))
        else:
            converted.append(_assistant_turn(message))
    return converted


def message_tools(body: MessagesRequest) -> list[dict[str, Any]] | None:
    """Tool definitions in the template's (OpenAI function) form; None when tools are off."""
    if not body.tools or (body.tool_choice is not None and body.tool_choice.type == "none"):
        return None
    tools = []
    for tool in body.tools:
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description is not None:
            function["description"] = tool.description
        tools.append({"type": "function", "function": function})
    return tools


def messages_spec(body: MessagesRequest, prompt: str, model: str) -> GenerationSpec:
    return GenerationSpec(
        prompt=prompt,
        model=model,
        max_tokens=body.max_tokens,
        temperature=DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        stop=list(body.stop_sequences or []),
        speculation=body.speculation,
    )


def stop_details(
    generation: Generation, stop_sequences: list[str], has_tool_calls: bool
) -> tuple[str, str | None]:
    """Return (stop_reason, stop_sequence) in Anthropic's terms."""
    if has_tool_calls:
        return "tool_use", None
    reason = generation.done.finish_reason if generation.done else "cancelled"
    if reason == "length":
        return "max_tokens", None
    if reason == "stop":
        # NOTE: the runtime does not report which stop string matched, so the
        # sequence is named only when the request gave exactly one.
        return "stop_sequence", stop_sequences[0] if len(stop_sequences) == 1 else None
    return "end_turn", None


def usage_body(generation: Generation) -> dict[str, Any]:
    prompt, completion, cached = generation.usage_counts()
    return {
        "input_tokens": prompt - cached,
        "output_tokens": completion,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def tool_use_block(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments_object}


def message_body(
    message_id: str,
    generation: Generation,
    text: str,
    calls: list[ToolCall],
    stop_sequences: list[str],
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text.strip() or not calls:
        content.append({"type": "text", "text": text})
    content.extend(tool_use_block(call) for call in calls)
    stop_reason, stop_sequence = stop_details(generation, stop_sequences, bool(calls))
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": generation.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_body(generation),
        "draftwise": generation.stats(),
    }


class StreamEvents:
    """Build the event sequence of one streamed message, tracking open content blocks.

    Order: message_start, then per block content_block_start, deltas and
    content_block_stop, then message_delta with the stop reason and usage, and
    message_stop. Each method returns (event name, data) pairs.
    """

    def __init__(self, message_id: str, generation: Generation) -> None:
        self.message_id = message_id
        self.generation = generation
        self.block_index = -1
        self.open_block: str | None = None  # "text" while a text block is open
        self.num_tool_calls = 0

    def start(self) -> list[tuple[str, dict[str, Any]]]:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.generation.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.generation.prompt_tokens, "output_tokens": 0},
        }
        return [
            ("message_start", {"type": "message_start", "message": message}),
            ("ping", {"type": "ping"}),
        ]

    def piece(self, piece: TextPiece | ToolCall) -> list[tuple[str, dict[str, Any]]]:
        if isinstance(piece, TextPiece):
            events = [] if self.open_block == "text" else self._open({"type": "text", "text": ""})
            self.open_block = "text"
            delta = {"type": "text_delta", "text": piece.text}
            return [*events, self._delta(delta)]
        self.num_tool_calls += 1
        block = {"type": "tool_use", "id": piece.id, "name": piece.name, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": piece.arguments}
        return [*self._open(block), self._delta(delta), *self._close()]

    def finish(self, stop_sequences: list[str]) -> list[tuple[str, dict[str, Any]]]:
        events = self._close()
        stop_reason, stop_sequence = stop_details(
            self.generation, stop_sequences, self.num_tool_calls > 0
        )
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": usage_body(self.generation),
            "draftwise": self.generation.stats(),
        }
        return [
            *events,
            ("message_delta", message_delta),
            ("message_stop", {"type": "message_stop"}),
        ]

    def _open(self, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = self._close()
        self.block_index += 1
        self.open_block = block["type"]
        start = {"type": "content_block_start", "index": self.block_index, "content_block": block}
        return [*events, ("content_block_start", start)]

    def _delta(self, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return (
            "content_block_delta",
            {"type": "content_block_delta", "index": self.block_index, "delta": delta},
        )

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self.open_block is None:
            return []
        self.open_block = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.block_index})]

"""Request body of the Anthropic-compatible ``POST /v1/messages``, validated at decode time.

Content blocks are a tagged union on ``type``. Text, tool_use and tool_result
blocks are served. Image and document blocks decode only so that the error can
name them, and any other type fails decoding with its path. ``cache_control`` marks are
accepted and change nothing, at block and request level, because the gateway
reuses cached prefixes on its own. Unknown fields are rejected.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from draftwise.actors.http.errors import ApiError, unsupported
from draftwise.protocol.request_messages import Speculation


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of the request structs: keyword fields, unknown fields rejected."""


class Block(msgspec.Struct, kw_only=True, tag_field="type", omit_defaults=True):
    """Base of the content blocks; the ``type`` field selects the subclass.

    Unknown fields inside a block are ignored, unlike elsewhere: clients send
    back the blocks of earlier replies as they received them, and the
    response-only fields those carry (such as ``caller``) change no prompt.
    """


class TextBlock(Block, tag="text"):
    text: str
    cache_control: dict[str, Any] | None = None
    citations: list[Any] | None = None


class ImageBlock(Block, tag="image"):
    source: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class DocumentBlock(Block, tag="document"):
    source: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class ToolUseBlock(Block, tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class ToolResultBlock(Block, tag="tool_result"):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool = False
    cache_control: dict[str, Any] | None = None


ContentBlock = TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock


class MessageIn(Body):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolIn(Body):
    name: Annotated[str, Meta(min_length=1, max_length=128)]
    input_schema: dict[str, Any]
    description: str | None = None
    cache_control: dict[str, Any] | None = None
    type: Literal["custom"] | None = None


class ToolChoice(Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(msgspec.Struct, kw_only=True):
    type: str
    budget_tokens: int | None = None


class MessagesRequest(Body):
    model: Annotated[str, Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1)]
    messages: Annotated[list[MessageIn], Meta(min_length=1)]
    system: str | list[TextBlock] | None = None
    stop_sequences: list[Annotated[str, Meta(min_length=1)]] | None = None
    stream: bool = False
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoice | None = None
    metadata: dict[str, Any] | None = None
    cache_control: dict[str, Any] | None = None
    thinking: ThinkingConfig | None = None
    service_tier: str | None = None
    speculation: Speculation | None = None
    """draftwise extension: "auto", "off" or a fixed draft length; None takes the server's."""


def reject_unsupported_messages(body: MessagesRequest) -> None:
    """Raise `ApiError` for each messages feature draftwise cannot honour."""
    if body.thinking is not None and body.thinking.type != "disabled":
        raise unsupported("thinking", body.thinking.type, "omit thinking or set it to disabled")
    choice = body.tool_choice
    if choice is not None and choice.type in ("any", "tool"):
        raise unsupported(
            "tool_choice.type",
            choice.type,
            "use 'auto' or 'none'; forced tool use is not implemented",
        )
    if choice is not None and choice.type == "auto" and not body.tools:
        raise ApiError(400, "'tool_choice' is set but 'tools' is empty", param="tool_choice")
    for index, message in enumerate(body.messages):
        if isinstance(message.content, str):
            continue
        for number, block in enumerate(message.content):
            where = f"messages.{index}.content.{number}"
            if isinstance(block, ImageBlock | DocumentBlock):
                kind = "image" if isinstance(block, ImageBlock) else "document"
                raise unsupported(f"{where}.type", kind, "send text blocks only")
            if isinstance(block, ToolResultBlock) and isinstance(block.content, list):
                for inner in block.content:
                    if isinstance(inner, ImageBlock):
                        raise unsupported(f"{where}.content", "image", "send text results only")
            if isinstance(block, ToolUseBlock | ToolResultBlock):
                expected = "assistant" if isinstance(block, ToolUseBlock) else "user"
                if message.role != expected:
                    raise ApiError(
                        400,
                        f"{where} is a {block.__struct_config__.tag} block in a "
                        f"'{message.role}' message; it belongs in a '{expected}' message",
                        param=where,
                    )

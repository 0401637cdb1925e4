"""Tool calls: the parser on Qwen-format text, and round trips through both APIs.

The round trips run the real runtime on a scripted model whose greedy output
is a Qwen-style tool call when the prompt lists tools and has no tool result
yet, and a short answer once it has one.
"""

from __future__ import annotations

import json

import anthropic
import openai
from fakes import tiny_model
from http_fakes import MODEL, ScriptedModel, in_thread, running_gateway

from draftwise.actors.http.tool_calls import TextPiece, ToolCall, ToolCallParser, split_tool_calls

# Qwen2.5-Coder-1.5B's reply to "Show me the file src/main.py." with a read_file
# tool declared: the call as a fenced JSON object, without the tags.
QWEN_BARE_REPLY = (
    '```json\n{\n  "name": "read_file",\n  "arguments": {\n    "path": "src/main.py"\n  }\n}\n```'
)
NAMES = frozenset({"read_file", "run_tests"})

CALL_TEXT = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
ANSWER = "It is sunny in Paris."
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


BARE_CALL_TEXT = '```json {"name": "get_weather", "arguments": {"city": "Paris"}} ```'


def choose_script(prompt: str) -> str:
    if "<tool_response>" in prompt:
        return ANSWER
    if "tools: get_weather" in prompt:
        return BARE_CALL_TEXT if "bare" in prompt else CALL_TEXT
    return "no tools"


def scripted() -> ScriptedModel:
    return ScriptedModel(tiny_model(seed=0), choose_script)


# A reply of Qwen2.5-Coder-1.5B-Instruct to a tool request, verbatim in form.
QWEN_REPLY = (
    '<tool_call>\n{"name": "read_file", "arguments": {"path": "src/main.py"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "run_tests", "arguments": {}}\n</tool_call>'
)


def test_split_tool_calls_qwen_reply():
    text, calls = split_tool_calls(QWEN_REPLY)

    assert text.strip() == ""
    assert [call.name for call in calls] == ["read_file", "run_tests"]
    assert json.loads(calls[0].arguments) == {"path": "src/main.py"}
    assert calls[1].arguments_object == {}
    assert calls[0].id != calls[1].id


def test_tool_call_parser_stream_split_anywhere():
    text = "Let me look.\n" + QWEN_REPLY + "\nDone."
    for size in (1, 2, 3, 5, 7, 11):
        parser = ToolCallParser()
        pieces = []
        for start in range(0, len(text), size):
            pieces += parser.feed(text[start : start + size])
        pieces += parser.finish()
        plain = "".join(p.text for p in pieces if isinstance(p, TextPiece))
        calls = [p for p in pieces if isinstance(p, ToolCall)]
        assert plain == "Let me look.\n\n\nDone.", size
        assert [call.name for call in calls] == ["read_file", "run_tests"], size
        for piece in pieces:
            if isinstance(piece, TextPiece):
                assert "<tool" not in piece.text, size


def test_tool_call_parser_keeps_invalid_block_as_text():
    text, calls = split_tool_calls("a <tool_call>not json</tool_call> b")

    assert calls == []
    assert text == "a <tool_call>not json</tool_call> b"


def test_tool_call_parser_accepts_unclosed_complete_call():
    text, calls = split_tool_calls('<tool_call>\n{"name": "f", "arguments": "{\\"x\\": 1}"}')

    assert text == ""
    assert [(call.name, call.arguments_object) for call in calls] == [("f", {"x": 1})]


def test_tool_call_parser_text_like_tag_prefix():
    text, calls = split_tool_calls("if a <tool or b < c:")

    assert calls == []
    assert text == "if a <tool or b < c:"


def test_bare_json_call_of_declared_tool():
    for size in (1, 4, 9, len(QWEN_BARE_REPLY)):
        parser = ToolCallParser(tool_names=NAMES)
        pieces = []
        for start in range(0, len(QWEN_BARE_REPLY), size):
            pieces += parser.feed(QWEN_BARE_REPLY[start : start + size])
        pieces += parser.finish()
        assert len(pieces) == 1, size
        assert isinstance(pieces[0], ToolCall), size
        assert pieces[0].name == "read_file"
        assert pieces[0].arguments_object == {"path": "src/main.py"}


def test_bare_json_unfenced_call():
    text, calls = split_tool_calls('{"name": "run_tests", "arguments": {}}', tool_names=NAMES)

    assert text == ""
    assert [call.name for call in calls] == ["run_tests"]


def test_bare_json_without_declared_name_stays_text():
    reply = '```json\n{"name": "delete_all", "arguments": {}}\n```'
    assert split_tool_calls(reply, tool_names=NAMES) == (reply, [])
    assert split_tool_calls(QWEN_BARE_REPLY) == (QWEN_BARE_REPLY, [])
    with_text = QWEN_BARE_REPLY + "\nThat reads the file."
    assert split_tool_calls(with_text, tool_names=NAMES) == (with_text, [])


def test_bare_json_detection_releases_code_at_once():
    parser = ToolCallParser(tool_names=NAMES)

    assert parser.feed("```") == []
    assert parser.feed("py") == [TextPiece("```py")]
    assert parser.feed("thon") == [TextPiece("thon")]


async def test_openai_bare_json_tool_call():
    async with running_gateway(scripted()) as gateway:
        api = openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0, timeout=60)
        messages = [{"role": "user", "content": "bare weather in Paris?"}]
        response = await in_thread(
            api.chat.completions.create, model=MODEL, messages=messages, tools=[WEATHER_TOOL]
        )
        chunks = await in_thread(
            lambda: list(
                api.chat.completions.create(
                    model=MODEL, messages=messages, tools=[WEATHER_TOOL], stream=True
                )
            )
        )

    calls = response.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert response.choices[0].message.content is None
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert [d.tool_calls[0].function.name for d in deltas if d.tool_calls] == ["get_weather"]
    assert "".join(d.content or "" for d in deltas) == ""


async def test_openai_tool_call_round_trip():
    async with running_gateway(scripted()) as gateway:
        api = openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0, timeout=60)
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        first = await in_thread(
            api.chat.completions.create, model=MODEL, messages=messages, tools=[WEATHER_TOOL]
        )
        call = first.choices[0].message.tool_calls[0]
        messages += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"},
        ]
        second = await in_thread(
            api.chat.completions.create, model=MODEL, messages=messages, tools=[WEATHER_TOOL]
        )

        def stream_call() -> list:
            stream = api.chat.completions.create(
                model=MODEL, messages=messages[:1], tools=[WEATHER_TOOL], stream=True
            )
            return list(stream)

        chunks = await in_thread(stream_call)
        without_tools = await in_thread(
            api.chat.completions.create, model=MODEL, messages=messages[:1]
        )

    assert first.choices[0].finish_reason == "tool_calls"
    assert first.choices[0].message.content is None
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert second.choices[0].message.content == ANSWER
    assert second.choices[0].finish_reason == "stop"
    assert second.usage.prompt_tokens_details.cached_tokens > 0

    deltas = [c.choices[0].delta for c in chunks if c.choices]
    streamed_calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert [c.function.name for c in streamed_calls] == ["get_weather"]
    assert json.loads(streamed_calls[0].function.arguments) == {"city": "Paris"}
    assert "".join(d.content or "" for d in deltas) == ""
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert without_tools.choices[0].message.content == "no tools"


async def test_anthropic_tool_use_round_trip():
    tool = {
        "name": "get_weather",
        "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    async with running_gateway(scripted()) as gateway:
        api = anthropic.Anthropic(
            base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=60
        )
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        first = await in_thread(
            api.messages.create, model=MODEL, max_tokens=200, messages=messages, tools=[tool]
        )
        tool_use = first.content[-1]
        messages += [
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny, 24 C"}
                ],
            },
        ]
        second = await in_thread(
            api.messages.create, model=MODEL, max_tokens=200, messages=messages, tools=[tool]
        )

        def stream_call():
            with api.messages.stream(
                model=MODEL, max_tokens=200, messages=messages[:1], tools=[tool]
            ) as stream:
                return stream.get_final_message()

        streamed = await in_thread(stream_call)

    assert first.stop_reason == "tool_use"
    assert [block.type for block in first.content] == ["tool_use"]
    assert tool_use.name == "get_weather"
    assert tool_use.input == {"city": "Paris"}
    assert tool_use.id.startswith("toolu_")
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == ANSWER
    assert streamed.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in streamed.content] == [
        ("tool_use", "get_weather", {"city": "Paris"})
    ]

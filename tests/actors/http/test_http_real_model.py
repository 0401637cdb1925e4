"""The gateway on the real Qwen 2.5 Coder pair (1.5B target, 0.5B draft).

Skipped, saying how to get the models, when they are not in the store.
"""

from __future__ import annotations

import functools

import anthropic
import openai
import pytest
import trio
from http_fakes import DRAFT, TARGET, in_thread, load_or_skip

from draftwise.actors.http import serve_http
from draftwise.actors.http.tool_calls import OPEN_TAG
from draftwise.actors.runtime import Runtime, RuntimeConfig
from draftwise.runtime.engine import Engine
from draftwise.runtime.generate import GenerationParams

pytestmark = pytest.mark.slow

MESSAGES = [
    {"role": "system", "content": "You are a coding assistant. Reply with code only."},
    {"role": "user", "content": "Write a Python function square(x)."},
]
MAX_TOKENS = 16


@pytest.fixture
async def real_gateway():
    models = {TARGET: load_or_skip(TARGET), DRAFT: load_or_skip(DRAFT)}
    config = RuntimeConfig(model=TARGET, draft=DRAFT)
    async with Runtime.open(config, models=models) as runtime:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(functools.partial(serve_http, runtime, port=0))
            yield runtime, urls[0], models[TARGET]
            nursery.cancel_scope.cancel()


def greedy_reference(target, messages, max_tokens: int) -> str:
    """What `draftwise generate` prints for ``messages`` with plain greedy decoding."""
    params = GenerationParams(max_tokens=max_tokens)
    prompt_ids = target.encode_messages(messages)
    return "".join(chunk.text for chunk in Engine(target).generate(prompt_ids, params, "off"))


async def test_real_chat_stream_and_messages_equal_greedy_generate(real_gateway):
    _runtime, base_url, target = real_gateway
    api = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=600)
    claude = anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=600)

    def stream_chat() -> list:
        stream = api.chat.completions.create(
            model=TARGET, messages=MESSAGES, temperature=0, max_tokens=MAX_TOKENS, stream=True
        )
        return list(stream)

    chunks = await in_thread(stream_chat)
    message = await in_thread(
        claude.messages.create,
        model=TARGET,
        system=MESSAGES[0]["content"],
        messages=MESSAGES[1:],
        max_tokens=MAX_TOKENS,
    )
    expected = await in_thread(greedy_reference, target, MESSAGES, MAX_TOKENS)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert message.content[0].text == expected
    stats = chunks[-1].model_extra["draftwise"]
    assert stats["num_drafted"] > 0
    print(f"\nreal gateway stream: {stats}")


async def test_real_tool_call_parsed(real_gateway):
    _runtime, base_url, _target = real_gateway
    api = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=600)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "read_file",
                "description": "Return the contents of a file",
                "parameters": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}},
                    "required": ["path"],
                },
            },
        }
    ]
    messages = [{"role": "user", "content": "Show me the file src/main.py."}]
    response = await in_thread(
        api.chat.completions.create, model=TARGET, messages=messages, tools=tools, max_tokens=40
    )

    message = response.choices[0].message
    print(f"\nreal tool reply: content={message.content!r} tool_calls={message.tool_calls}")
    if message.tool_calls:
        call = message.tool_calls[0]
        assert call.function.name == "read_file"
        assert response.choices[0].finish_reason == "tool_calls"
        assert "path" in openai_arguments(call)
    else:
        # No call produced: the output must not hide an unparsed one.
        assert OPEN_TAG not in (message.content or "")


def openai_arguments(call) -> dict:
    import json

    return json.loads(call.function.arguments)


async def test_real_second_turn_reuses_cache(real_gateway):
    _runtime, base_url, _target = real_gateway
    api = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=600)
    first = await in_thread(
        api.chat.completions.create, model=TARGET, messages=MESSAGES, max_tokens=12
    )
    reply = first.choices[0].message.content
    turn2 = [*MESSAGES, {"role": "assistant", "content": reply},
             {"role": "user", "content": "Add a docstring."}]  # fmt: skip
    second = await in_thread(
        api.chat.completions.create, model=TARGET, messages=turn2, max_tokens=4
    )
    cold_turn2 = [{"role": "system", "content": "Answer briefly."}, *turn2[1:]]
    cold = await in_thread(
        api.chat.completions.create, model=TARGET, messages=cold_turn2, max_tokens=4
    )

    # All of the first turn, its last sampled token included.
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens + first.usage.completion_tokens
    warm_stats, cold_stats = second.model_extra["draftwise"], cold.model_extra["draftwise"]
    print(
        f"\nfirst turn: prompt {first.usage.prompt_tokens} output "
        f"{first.usage.completion_tokens}; second turn: prompt {second.usage.prompt_tokens} "
        f"cached {cached} "
        f"ttft {warm_stats['ttft_ms']} ms; cold: prompt {cold.usage.prompt_tokens} cached "
        f"{cold.usage.prompt_tokens_details.cached_tokens} ttft {cold_stats['ttft_ms']} ms"
    )

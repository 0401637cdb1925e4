"""The Anthropic-compatible messages endpoint, driven by the official anthropic client."""

from __future__ import annotations

import anthropic
from http_fakes import MODEL, in_thread, reference_text, running_gateway

SYSTEM = "You write Python."
USER = "def add(a, b):"
MAX_TOKENS = 40


def client(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=60)


def expected_text(gateway, max_tokens: int = MAX_TOKENS) -> str:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    prompt_ids = gateway.target.encode_messages(messages)
    return reference_text(gateway.target, prompt_ids, max_tokens)


async def test_messages_equal_greedy_generate():
    async with running_gateway() as gateway:
        api = client(gateway.base_url)
        message = await in_thread(
            api.messages.create,
            model=MODEL,
            system=SYSTEM,
            messages=[{"role": "user", "content": USER}],
            max_tokens=MAX_TOKENS,
            extra_body={"temperature": 0, "top_k": 0},
        )
        expected = expected_text(gateway)

    assert message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == expected
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens > 0
    prompt_tokens = message.usage.input_tokens + message.usage.cache_read_input_tokens
    assert prompt_tokens == len(
        gateway.target.encode_messages(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
        )
    )
    assert message.model_extra["draftwise"]["prompt_tokens"] == prompt_tokens


async def test_messages_stream_equals_greedy_generate():
    async with running_gateway() as gateway:
        api = client(gateway.base_url)

        def read_stream():
            with api.messages.stream(
                model=MODEL,
                system=[{"type": "text", "text": SYSTEM}],
                messages=[{"role": "user", "content": [{"type": "text", "text": USER}]}],
                max_tokens=MAX_TOKENS,
            ) as stream:
                events = [event.type for event in stream]
                return events, stream.get_final_message()

        events, final = await in_thread(read_stream)
        expected = expected_text(gateway)

    assert events[0] == "message_start"
    assert events[-1] == "message_stop"
    assert "content_block_start" in events
    assert final.content[0].text == expected
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0


async def test_messages_stop_sequence_ends_text():
    async with running_gateway() as gateway:
        api = client(gateway.base_url)
        full = expected_text(gateway)
        stop = full[3:5]
        message = await in_thread(
            api.messages.create,
            model=MODEL,
            system=SYSTEM,
            messages=[{"role": "user", "content": USER}],
            max_tokens=MAX_TOKENS,
            stop_sequences=[stop],
        )

    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == stop
    assert message.content[0].text == full[: full.index(stop)]


async def test_messages_max_tokens_reports_max_tokens():
    async with running_gateway() as gateway:
        api = client(gateway.base_url)
        full = expected_text(gateway)
        message = await in_thread(
            api.messages.create,
            model=MODEL,
            messages=[{"role": "user", "content": USER}],
            system=SYSTEM,
            max_tokens=3,
        )

    assert len(full) > 3
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3
    assert message.content[0].text == full[:3]

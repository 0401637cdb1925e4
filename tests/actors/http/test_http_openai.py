"""The OpenAI-compatible endpoints, driven by the official openai client over loopback."""

from __future__ import annotations

import openai
import pytest
import trio
from fakes import tiny_model
from http_fakes import MODEL, ScriptedModel, in_thread, reference_text, running_gateway

MESSAGES = [
    {"role": "system", "content": "You write Python."},
    {"role": "user", "content": "def add(a, b):"},
]
MAX_TOKENS = 40


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)


def chat_reference(gateway) -> str:
    prompt_ids = gateway.target.encode_messages(MESSAGES)
    return reference_text(gateway.target, prompt_ids, MAX_TOKENS)


async def test_chat_completion_equals_greedy_generate():
    async with running_gateway() as gateway:
        api = client(gateway.v1)
        response = await in_thread(
            api.chat.completions.create,
            model=MODEL,
            messages=MESSAGES,
            temperature=0,
            max_tokens=MAX_TOKENS,
        )
        expected = chat_reference(gateway)

    choice = response.choices[0]
    assert choice.message.content == expected
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert response.model == MODEL
    assert response.usage.completion_tokens > 0
    prompt_tokens = len(gateway.target.encode_messages(MESSAGES))
    assert response.usage.prompt_tokens == prompt_tokens
    assert response.usage.prompt_tokens_details.cached_tokens == 0
    stats = response.model_extra["draftwise"]
    assert stats["prompt_tokens"] == prompt_tokens
    assert stats["completion_tokens"] == response.usage.completion_tokens
    assert stats["num_accepted"] <= stats["num_drafted"]


async def test_chat_completion_stream_equals_greedy_generate():
    async with running_gateway() as gateway:
        api = client(gateway.v1)

        def read_stream() -> list:
            stream = api.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,
                temperature=0,
                max_completion_tokens=MAX_TOKENS,
                stream=True,
                stream_options={"include_usage": True},
            )
            return list(stream)

        chunks = await in_thread(read_stream)
        expected = chat_reference(gateway)

    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [f for f in finishes if f is not None] in (["stop"], ["length"])
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0
    assert "draftwise" in chunks[-1].model_extra


async def test_completion_raw_prompt_equals_greedy():
    prompt = "def fib(n):"
    async with running_gateway() as gateway:
        api = client(gateway.v1)
        response = await in_thread(
            api.completions.create, model=MODEL, prompt=prompt, temperature=0, max_tokens=30
        )
        streamed = await in_thread(
            lambda: list(
                api.completions.create(
                    model=MODEL, prompt=prompt, temperature=0, max_tokens=30, stream=True
                )
            )
        )
        expected = reference_text(gateway.target, gateway.target.tokenizer.encode(prompt), 30)

    assert response.choices[0].text == expected
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected
    assert streamed[-1].usage.prompt_tokens == len(prompt)


async def test_models_lists_the_target():
    async with running_gateway() as gateway:
        api = client(gateway.v1)
        models = await in_thread(api.models.list)
        one = await in_thread(api.models.retrieve, MODEL)

    assert [m.id for m in models.data] == [MODEL]
    assert one.id == MODEL


async def test_second_turn_reports_cached_tokens():
    async with running_gateway() as gateway:
        api = client(gateway.v1)
        first = await in_thread(
            api.chat.completions.create,
            model=MODEL,
            messages=MESSAGES,
            temperature=0,
            max_tokens=20,
        )
        reply = first.choices[0].message.content
        follow_up = [
            *MESSAGES,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "and sub?"},
        ]
        with trio.fail_after(60):
            second = await in_thread(
                api.chat.completions.create,
                model=MODEL,
                messages=follow_up,
                temperature=0,
                max_tokens=20,
            )

    # After the first turn's Done, its last sampled token ran into the cache too,
    # so all of the first turn is reused. This test template has no end-of-turn
    # marker, so an EOS that ended the first turn is not part of the second prompt.
    ended_by_eos = first.choices[0].finish_reason == "stop"
    first_total = first.usage.prompt_tokens + first.usage.completion_tokens - ended_by_eos
    assert second.usage.prompt_tokens > first_total
    assert second.usage.prompt_tokens_details.cached_tokens >= first_total
    assert second.model_extra["draftwise"]["cached_tokens"] >= first_total


async def test_speculation_extension_field():
    script = "abcd" * 20
    model = ScriptedModel(tiny_model(seed=0), lambda prompt: script)
    async with running_gateway(model) as gateway:
        api = client(gateway.v1)
        runs = {}
        for mode in ("auto", "off"):
            runs[mode] = await in_thread(
                api.chat.completions.create,
                model=MODEL,
                messages=MESSAGES,
                max_tokens=60,
                extra_body={"speculation": mode},
            )
        with pytest.raises(openai.BadRequestError, match="speculation"):
            await in_thread(
                api.chat.completions.create,
                model=MODEL,
                messages=MESSAGES,
                extra_body={"speculation": "fast"},
            )

    auto, off = runs["auto"], runs["off"]
    assert auto.choices[0].message.content == off.choices[0].message.content == script[:60]
    assert auto.model_extra["draftwise"]["num_drafted"] > 0
    assert off.model_extra["draftwise"]["num_drafted"] == 0

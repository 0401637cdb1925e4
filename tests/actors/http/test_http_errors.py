"""Bad input gets each API's error shape and status, while another stream runs to the end."""

from __future__ import annotations

import json

import openai
import pytest
import trio
from fakes import tiny_model
from http_fakes import (
    MODEL,
    ScriptedModel,
    SlowModel,
    StreamReader,
    get,
    in_thread,
    post,
    running_gateway,
)

from draftwise.actors.http import GatewayConfigError, check_bind

SCRIPT = "".join(chr(33 + (i * 7) % 90) for i in range(200))


def long_script_model(delay_s: float = 0.02) -> ScriptedModel:
    return ScriptedModel(SlowModel(tiny_model(seed=0), delay_s), lambda prompt: SCRIPT)


USER = [{"role": "user", "content": "hi"}]
LONG_TEXT = "x" * 600  # more characters (tokens) than the tiny model's 512-token context

OPENAI_CASES = [
    # (name, body, status, text the message must contain)
    ("malformed json", b"{not json", 400, "not valid JSON"),
    ("empty body", b"", 400, "empty"),
    ("missing messages", {"model": MODEL}, 400, "messages"),
    (
        "mistyped max_tokens",
        {"model": MODEL, "messages": USER, "max_tokens": "ten"},
        400,
        "max_tokens",
    ),
    ("unknown model", {"model": "nope", "messages": USER}, 404, "nope"),
    (
        "prompt too long",
        {"model": MODEL, "messages": [{"role": "user", "content": LONG_TEXT}]},
        400,
        "512",
    ),
    (
        "temperature too high",
        {"model": MODEL, "messages": USER, "temperature": 5},
        400,
        "temperature",
    ),
    ("top_p zero", {"model": MODEL, "messages": USER, "top_p": 0}, 400, "top_p"),
    (
        "negative max_tokens",
        {"model": MODEL, "messages": USER, "max_tokens": -1},
        400,
        "max_tokens",
    ),
    ("n above one", {"model": MODEL, "messages": USER, "n": 2}, 400, "'n'"),
    ("logprobs", {"model": MODEL, "messages": USER, "logprobs": True}, 400, "logprobs"),
    ("unknown field", {"model": MODEL, "messages": USER, "foo": 1}, 400, "foo"),
    (
        "penalty",
        {"model": MODEL, "messages": USER, "presence_penalty": 1.0},
        400,
        "presence_penalty",
    ),
    (
        "json mode",
        {"model": MODEL, "messages": USER, "response_format": {"type": "json_object"}},
        400,
        "response_format",
    ),
    (
        "forced tool",
        {
            "model": MODEL,
            "messages": USER,
            "tool_choice": "required",
            "tools": [{"type": "function", "function": {"name": "f"}}],
        },
        400,
        "tool_choice",
    ),
    (
        "image part",
        {
            "model": MODEL,
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}
            ],
        },
        400,
        "image_url",
    ),
    ("bad role", {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
    ("too many stops", {"model": MODEL, "messages": USER, "stop": ["a"] * 17}, 400, "stop"),
]

ANTHROPIC_CASES = [
    ("malformed json", b'{"model": "tiny",', 400, "not valid JSON"),
    ("missing max_tokens", {"model": MODEL, "messages": USER}, 400, "max_tokens"),
    ("unknown model", {"model": "nope", "max_tokens": 5, "messages": USER}, 404, "nope"),
    (
        "prompt too long",
        {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": LONG_TEXT}]},
        400,
        "512",
    ),
    (
        "temperature too high",
        {"model": MODEL, "max_tokens": 5, "messages": USER, "temperature": 1.5},
        400,
        "temperature",
    ),
    (
        "image block",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": ""},
                        }
                    ],
                }
            ],
        },
        400,
        "image",
    ),
    (
        "thinking",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": USER,
            "thinking": {"type": "enabled", "budget_tokens": 100},
        },
        400,
        "thinking",
    ),
    (
        "unknown block type",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "video"}]}],
        },
        400,
        "type",
    ),
    (
        "forced tool",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": USER,
            "tool_choice": {"type": "any"},
            "tools": [{"name": "f", "input_schema": {}}],
        },
        400,
        "tool_choice",
    ),
]

COMPLETION_CASES = [
    ("several prompts", {"model": MODEL, "prompt": ["a", "b"]}, 400, "prompt"),
    ("echo", {"model": MODEL, "prompt": "a", "echo": True}, 400, "echo"),
    ("missing prompt", {"model": MODEL}, 400, "prompt"),
]


def check_openai_error(name: str, status: int, raw: bytes, expected_status: int, text: str):
    body = json.loads(raw)
    assert status == expected_status, name
    assert set(body) == {"error"}, name
    assert set(body["error"]) == {"message", "type", "param", "code"}, name
    assert body["error"]["type"] in ("invalid_request_error", "not_found_error"), name
    assert text in body["error"]["message"], (name, body)


def check_anthropic_error(name: str, status: int, raw: bytes, expected_status: int, text: str):
    body = json.loads(raw)
    assert status == expected_status, name
    assert body["type"] == "error", name
    kind = "not_found_error" if expected_status == 404 else "invalid_request_error"
    assert body["error"]["type"] == kind, name
    assert text in body["error"]["message"], (name, body)


async def test_bad_input_answered_while_stream_completes():
    async with running_gateway(long_script_model()) as gateway:
        api = openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0, timeout=120)
        reader = StreamReader(
            lambda: api.chat.completions.create(
                model=MODEL, messages=USER, max_tokens=len(SCRIPT), stream=True
            )
        )
        reader.start()
        await in_thread(reader.first_event.wait, 60)

        results = []
        for cases, path in (
            (OPENAI_CASES, "/v1/chat/completions"),
            (COMPLETION_CASES, "/v1/completions"),
            (ANTHROPIC_CASES, "/v1/messages"),
        ):
            for name, body, expected_status, text in cases:
                status, raw = await in_thread(post, gateway.base_url + path, body)
                results.append((path, name, status, raw, expected_status, text))
        still_streaming = reader.is_alive()
        prompt = gateway.runtime.render_chat([{"role": "user", "content": LONG_TEXT}])
        long_prompt_tokens = gateway.runtime.count_tokens(prompt)
        await in_thread(reader.join, 120)

    for path, name, status, raw, expected_status, text in results:
        if path == "/v1/messages":
            check_anthropic_error(name, status, raw, expected_status, text)
        else:
            check_openai_error(name, status, raw, expected_status, text)
    too_long = [r for r in results if r[1] == "prompt too long"]
    for _, _, _, raw, _, _ in too_long:
        assert str(long_prompt_tokens) in raw.decode()
    assert still_streaming
    assert reader.error is None
    text = "".join(c.choices[0].delta.content or "" for c in reader.events if c.choices)
    assert text == SCRIPT


async def test_unknown_path_and_method_shapes():
    async with running_gateway() as gateway:
        missing = await in_thread(get, gateway.base_url + "/v1/nothing")
        wrong_method = await in_thread(get, gateway.base_url + "/v1/chat/completions")
        anthropic_method = await in_thread(get, gateway.base_url + "/v1/messages")
        missing_model = await in_thread(get, gateway.base_url + "/v1/models/nope")

    check_openai_error("missing", *missing, 404, "/v1/nothing")
    assert "POST /v1/chat/completions" in json.loads(missing[1])["error"]["message"]
    assert wrong_method[0] == 405
    assert "error" in json.loads(wrong_method[1])
    assert anthropic_method[0] == 405
    assert json.loads(anthropic_method[1])["type"] == "error"
    check_openai_error("missing model", *missing_model, 404, "nope")


async def test_client_disconnect_mid_stream_cancels_generation():
    model = long_script_model(delay_s=0.05)
    async with running_gateway(model) as gateway:
        api = openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0, timeout=120)
        reader = StreamReader(
            lambda: api.chat.completions.create(
                model=MODEL, messages=USER, max_tokens=len(SCRIPT), stream=True
            ),
            stop_after=3,
        )
        reader.start()
        await in_thread(reader.join, 60)
        with trio.fail_after(30):
            while gateway.runtime.stats()["active_requests"]:
                await trio.sleep(0.05)
        calls_after_cancel = model.inner.calls
        metrics = (await in_thread(get, gateway.base_url + "/metrics"))[1].decode()

    assert reader.error is None
    assert len(reader.events) == 3
    assert calls_after_cancel < len(SCRIPT)
    assert 'outcome="cancelled"' in metrics
    assert 'outcome="ok"' not in metrics


async def test_client_disconnect_without_stream_cancels_generation():
    model = long_script_model(delay_s=0.05)
    body = json.dumps({"model": MODEL, "messages": USER, "max_tokens": len(SCRIPT)}).encode()
    async with running_gateway(model) as gateway:
        port = int(gateway.base_url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode()
        await stream.send_all(head + body)
        with trio.fail_after(30):
            while not gateway.runtime.stats()["active_requests"]:
                await trio.sleep(0.02)
        await stream.aclose()
        with trio.fail_after(30):
            while gateway.runtime.stats()["active_requests"]:
                await trio.sleep(0.05)
        calls_after_cancel = model.inner.calls
        metrics = (await in_thread(get, gateway.base_url + "/metrics"))[1].decode()

    assert calls_after_cancel < len(SCRIPT)
    assert 'outcome="cancelled"' in metrics
    assert 'outcome="ok"' not in metrics


@pytest.mark.parametrize(
    ("host", "api_key", "allow_remote", "fix"),
    [
        ("0.0.0.0", "key", False, "allow remote"),
        ("192.0.2.1", None, True, "API key"),
        ("example.org", None, True, "API key"),
        ("127.0.0.1", "  ", False, "empty"),
    ],
)
def test_check_bind_rejects_unsafe_settings(host, api_key, allow_remote, fix):
    with pytest.raises(GatewayConfigError, match=fix):
        check_bind(host, api_key=api_key, allow_remote=allow_remote)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_check_bind_accepts_loopback(host):
    check_bind(host, api_key=None, allow_remote=False)


def test_check_bind_accepts_remote_with_key():
    check_bind("0.0.0.0", api_key="secret", allow_remote=True)


class FailingModel:
    """Delegate to ``inner`` until ``after_calls`` forward passes, then raise."""

    def __init__(self, inner, after_calls: int) -> None:
        self.inner = inner
        self.after_calls = after_calls
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, token_ids, cache, **kw):
        self.calls += 1
        if self.calls > self.after_calls:
            raise RuntimeError("injected fault in the forward pass")
        return self.inner(token_ids, cache, **kw)


async def test_runtime_failure_mid_generation_shapes():
    model = FailingModel(ScriptedModel(tiny_model(seed=0), lambda prompt: SCRIPT), after_calls=3)
    async with running_gateway(model) as gateway:
        body = {"model": MODEL, "messages": USER, "max_tokens": 50}
        status, raw = await in_thread(post, gateway.v1 + "/chat/completions", body)
        api = openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0, timeout=60)
        reader = StreamReader(
            lambda: api.chat.completions.create(**body, stream=True)  # type: ignore[arg-type]
        )
        reader.start()
        await in_thread(reader.join, 60)
        anthropic_status, anthropic_raw = await in_thread(
            post, gateway.base_url + "/v1/messages", body
        )
        health = json.loads((await in_thread(get, gateway.base_url + "/health"))[1])

    assert status == 500
    assert json.loads(raw)["error"]["type"] == "server_error"
    assert "injected fault" in json.loads(raw)["error"]["message"]
    assert isinstance(reader.error, openai.APIError)
    assert "injected fault" in str(reader.error)
    assert anthropic_status == 500
    assert json.loads(anthropic_raw)["error"]["type"] == "api_error"
    assert health["active_requests"] == 0


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": [{"content": "hi"}]}', "messages[0].role"),
        (b'{"model": "m", "messages": [], "max_tokens": 5}', "messages"),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}',
            "max_tokens",
        ),
    ],
)
def test_body_error_names_param(raw, param):
    from draftwise.actors.http.errors import ApiError, decode_body
    from draftwise.actors.http.openai_schema import ChatCompletionRequest

    with pytest.raises(ApiError) as caught:
        decode_body(raw, ChatCompletionRequest)
    assert caught.value.param == param

"""Message schemas: round trips, tags, and every constraint rejected with the path to the field."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from draftwise.protocol import (
    REPLY_TYPES,
    REQUEST_TYPES,
    CancelReply,
    CancelRequest,
    ChatMessage,
    Chunk,
    CloseSessionReply,
    CloseSessionRequest,
    Done,
    ErrorCode,
    ErrorReply,
    GenerateRequest,
    HealthReply,
    HealthRequest,
    Hello,
    ModelInfo,
    ModelsReply,
    ModelsRequest,
    ProtocolError,
    RoundStats,
    SamplingParams,
    StatsReply,
    StatsRequest,
    Welcome,
    decode_reply,
    decode_request,
    encode_request_frame,
)
from draftwise.protocol.client_support import build_generate_request

VALID_GENERATE: dict[str, Any] = {
    "type": "generate_request",
    "request_id": "req-1",
    "prompt": "def add(a, b):",
    "sampling": {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "seed": 7},
    "stop": ["\n\n"],
    "max_tokens": 64,
    "speculation": "auto",
}

VALID_DONE: dict[str, Any] = {
    "type": "done",
    "request_id": "req-1",
    "session_id": "s-1",
    "finish_reason": "eos",
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cached_tokens": 4},
    "speculation": {
        "rounds": 2,
        "num_drafted": 8,
        "num_accepted": 3,
        "draft_length_histogram": {4: 2},
        "acceptance_rate": 0.375,
        "reason_off": None,
    },
}

VALID_CHUNK: dict[str, Any] = {
    "type": "chunk",
    "request_id": "req-1",
    "text": "return",
    "token_ids": [1, 2],
    "round": {"num_drafted": 4, "num_accepted": 1, "draft_length": 4, "drafter": "small"},
}


def _encode(message: dict[str, Any]) -> bytes:
    return msgspec.msgpack.encode(message)


def _with(base: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """Return a deep copy of `base` with the item at `path` set to `value`."""
    message = copy.deepcopy(base)
    target = message
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return message


ALL_REQUESTS = [
    Hello(protocol_version=1, client_name="cli"),
    GenerateRequest(
        request_id="a",
        session_id="s-1",
        messages=[
            ChatMessage(role="system", content="be brief"),
            ChatMessage(role="user", content="hi"),
        ],
        model="target",
        draft="draft",
        sampling=SamplingParams(temperature=0.5, top_k=10, top_p=0.95, seed=2**63 - 1),
        stop=["x"] * 16,
        max_tokens=1_000_000,
        speculation=16,
        stream=False,
    ),
    GenerateRequest(request_id="b" * 64, prompt="p", speculation="off"),
    CancelRequest(request_id="c", target_request_id="a"),
    CloseSessionRequest(request_id="d", session_id="s-1"),
    StatsRequest(request_id="e"),
    ModelsRequest(request_id="f"),
    HealthRequest(request_id="g"),
]

ALL_REPLIES = [
    Welcome(protocol_version=1, server_name="draftwise", models=["t", "d"], max_frame_bytes=1024),
    Chunk(request_id="a", text="hé", token_ids=[5, 6], round=None),
    Chunk(
        request_id="a",
        text="",
        token_ids=[],
        round=RoundStats(num_drafted=3, num_accepted=3, draft_length=4, drafter="ngram"),
    ),
    msgspec.msgpack.decode(_encode(VALID_DONE), type=Done),
    ErrorReply(request_id=None, code=ErrorCode.OVERLOADED, message="too many connections"),
    ErrorReply(request_id="a", code="some_future_code", message="m"),
    CancelReply(request_id="c", target_request_id="a", cancelled=False),
    CloseSessionReply(request_id="d", session_id="s-1", freed_cache_bytes=4096),
    StatsReply(
        request_id="e",
        uptime_s=3.5,
        active_sessions=1,
        active_requests=2,
        finished_requests=3,
        prompt_tokens=4,
        completion_tokens=5,
        cached_tokens=1,
        num_drafted=6,
        num_accepted=2,
        acceptance_rate=1 / 3,
        cache_bytes=7,
        cache_budget_bytes=8,
        prefill_tokens_per_s=120.5,
        decode_tokens_per_s=30.25,
    ),
    ModelsReply(
        request_id="f",
        models=[
            ModelInfo(
                name="t",
                role="target",
                architecture="qwen2",
                context_length=32768,
                vocab_size=151936,
                default_draft="d",
            ),
            ModelInfo(
                name="d", role="draft", architecture="qwen2", context_length=32768, vocab_size=1
            ),
        ],
    ),
    HealthReply(request_id="g", status="draining", uptime_s=0.0, active_requests=0, detail="stop"),
]


@pytest.mark.parametrize("request_message", ALL_REQUESTS, ids=lambda m: type(m).__name__)
def test_decode_request_round_trips(request_message: Any) -> None:
    body = msgspec.msgpack.encode(request_message)
    assert decode_request(body) == request_message


@pytest.mark.parametrize("reply", ALL_REPLIES, ids=lambda m: type(m).__name__)
def test_decode_reply_round_trips(reply: Any) -> None:
    body = msgspec.msgpack.encode(reply)
    assert decode_reply(body) == reply


def test_message_type_tags_are_snake_case() -> None:
    assert REQUEST_TYPES == (
        "hello",
        "generate_request",
        "cancel_request",
        "close_session_request",
        "stats_request",
        "models_request",
        "health_request",
    )
    assert REPLY_TYPES == (
        "welcome",
        "chunk",
        "done",
        "error_reply",
        "cancel_reply",
        "close_session_reply",
        "stats_reply",
        "models_reply",
        "health_reply",
    )
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ALL_REQUESTS[1]))["type"] == (
        "generate_request"
    )


def test_error_code_encodes_as_plain_string() -> None:
    reply = ErrorReply(request_id=None, code=ErrorCode.BAD_FRAME, message="m")
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(reply))["code"] == "bad_frame"


def test_generate_request_defaults() -> None:
    request = decode_request(
        _encode({"type": "generate_request", "request_id": "r", "prompt": "p"})
    )
    assert isinstance(request, GenerateRequest)
    assert request.sampling == SamplingParams(temperature=0.0, top_k=0, top_p=1.0, seed=None)
    assert request.stop == []
    assert request.speculation == "auto"
    assert request.stream is True
    assert request.session_id is None


REQUEST_VIOLATIONS = [
    ("request_id_empty", ("request_id",), "", "$.request_id"),
    ("request_id_too_long", ("request_id",), "r" * 65, "$.request_id"),
    ("request_id_not_str", ("request_id",), 5, "$.request_id"),
    ("session_id_empty", ("session_id",), "", "$.session_id"),
    ("prompt_empty", ("prompt",), "", "$.prompt"),
    ("model_empty", ("model",), "", "$.model"),
    ("draft_too_long", ("draft",), "d" * 257, "$.draft"),
    ("temperature_negative", ("sampling", "temperature"), -0.1, "$.sampling.temperature"),
    ("temperature_nan", ("sampling", "temperature"), float("nan"), "$.sampling.temperature"),
    ("temperature_inf", ("sampling", "temperature"), float("inf"), "$.sampling"),
    ("top_k_negative", ("sampling", "top_k"), -1, "$.sampling.top_k"),
    ("top_p_zero", ("sampling", "top_p"), 0.0, "$.sampling.top_p"),
    ("top_p_above_one", ("sampling", "top_p"), 1.01, "$.sampling.top_p"),
    ("seed_negative", ("sampling", "seed"), -1, "$.sampling.seed"),
    ("seed_float", ("sampling", "seed"), 1.5, "$.sampling.seed"),
    ("sampling_unknown_field", ("sampling", "temp"), 1.0, "$.sampling"),
    ("stop_too_many", ("stop",), ["s"] * 17, "$.stop"),
    ("stop_empty_string", ("stop",), ["ok", ""], "$.stop[1]"),
    ("stop_too_long", ("stop",), ["s" * 257], "$.stop[0]"),
    ("stop_not_list", ("stop",), "\n", "$.stop"),
    ("max_tokens_zero", ("max_tokens",), 0, "$.max_tokens"),
    ("max_tokens_too_large", ("max_tokens",), 1_000_001, "$.max_tokens"),
    ("speculation_negative", ("speculation",), -1, "$.speculation"),
    ("speculation_too_long", ("speculation",), 17, "$.speculation"),
    ("speculation_unknown_mode", ("speculation",), "on", "$.speculation"),
    ("speculation_bool", ("speculation",), True, "$.speculation"),
    ("stream_not_bool", ("stream",), "yes", "$.stream"),
]


@pytest.mark.parametrize(
    ("path", "value", "expected_path"),
    [case[1:] for case in REQUEST_VIOLATIONS],
    ids=[case[0] for case in REQUEST_VIOLATIONS],
)
def test_decode_request_rejects_constraint(
    path: tuple[str, ...], value: Any, expected_path: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(_encode(_with(VALID_GENERATE, path, value)))
    assert caught.value.code == ErrorCode.INVALID_REQUEST
    assert f"`{expected_path}`" in caught.value.message
    assert caught.value.message.startswith("invalid generate_request:")
    expected_request_id = None if path == ("request_id",) else "req-1"
    assert caught.value.request_id == expected_request_id


MESSAGE_VIOLATIONS = [
    ("messages_empty", [], "`$.messages`"),
    ("role_unknown", [{"role": "robot", "content": "x"}], "`$.messages[0].role`"),
    ("content_missing", [{"role": "user"}], "`$.messages[0]`"),
    ("content_not_str", [{"role": "user", "content": 3}], "`$.messages[0].content`"),
]


@pytest.mark.parametrize(
    ("messages", "expected_path"),
    [case[1:] for case in MESSAGE_VIOLATIONS],
    ids=[case[0] for case in MESSAGE_VIOLATIONS],
)
def test_decode_request_rejects_bad_messages(messages: Any, expected_path: str) -> None:
    body = dict(VALID_GENERATE, messages=messages)
    del body["prompt"]
    with pytest.raises(ProtocolError) as caught:
        decode_request(_encode(body))
    assert caught.value.code == ErrorCode.INVALID_REQUEST
    assert expected_path in caught.value.message


def test_decode_request_rejects_both_messages_and_prompt() -> None:
    body = dict(VALID_GENERATE, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(ProtocolError) as caught:
        decode_request(_encode(body))
    assert "`messages`" in caught.value.message
    assert "both are present" in caught.value.message


def test_decode_request_rejects_neither_messages_nor_prompt() -> None:
    body = dict(VALID_GENERATE)
    del body["prompt"]
    with pytest.raises(ProtocolError) as caught:
        decode_request(_encode(body))
    assert "both are missing" in caught.value.message
    assert caught.value.request_id == "req-1"


@pytest.mark.parametrize(
    ("message", "expected_path"),
    [
        ({"type": "hello", "protocol_version": 0, "client_name": "c"}, "$.protocol_version"),
        ({"type": "hello", "protocol_version": 1, "client_name": ""}, "$.client_name"),
        (
            {"type": "cancel_request", "request_id": "c", "target_request_id": ""},
            "$.target_request_id",
        ),
        ({"type": "close_session_request", "request_id": "c", "session_id": 1}, "$.session_id"),
        ({"type": "stats_request", "request_id": ""}, "$.request_id"),
    ],
)
def test_decode_request_rejects_other_requests(message: dict[str, Any], expected_path: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(_encode(message))
    assert caught.value.code == ErrorCode.INVALID_REQUEST
    assert f"`{expected_path}`" in caught.value.message


def test_decode_request_rejects_unknown_type() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(_encode({"type": "shutdown", "request_id": "x"}))
    assert caught.value.code == ErrorCode.INVALID_REQUEST
    assert "`$.type`" in caught.value.message
    assert "generate_request" in caught.value.message
    assert caught.value.request_id == "x"


def test_decode_request_rejects_missing_type() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(_encode({"request_id": "x", "prompt": "p"}))
    assert caught.value.code == ErrorCode.INVALID_REQUEST
    assert "`type`" in caught.value.message


def test_decode_request_rejects_unknown_field() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(_encode(dict(VALID_GENERATE, max_token=5)))
    assert caught.value.code == ErrorCode.INVALID_REQUEST
    assert "`max_token`" in caught.value.message


def test_decode_request_rejects_reply_type() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(_encode(VALID_CHUNK))
    assert caught.value.code == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    "body",
    [b"\xc1", b"\x81\xa4type", b"\x93\x01\x02\x03", b"\x05"],
    ids=["invalid_opcode", "truncated_map", "array", "integer"],
)
def test_decode_request_rejects_non_map_bodies(body: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(body)
    assert caught.value.code in (ErrorCode.BAD_FRAME, ErrorCode.INVALID_REQUEST)
    assert caught.value.request_id is None


def test_decode_request_malformed_msgpack_is_bad_frame() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(b"\xc1")
    assert caught.value.code == ErrorCode.BAD_FRAME
    assert "not msgpack" in caught.value.message


def test_decode_request_ignores_unusable_request_id() -> None:
    for request_id in (5, "", "r" * 65, ["r"]):
        with pytest.raises(ProtocolError) as caught:
            decode_request(_encode(dict(VALID_GENERATE, request_id=request_id)))
        assert caught.value.request_id is None


def test_decode_request_deep_nesting_is_protocol_error() -> None:
    deep = b"\x82\xa4type\xa5hello\xa1x" + b"\x91" * 200_000 + b"\xc0"
    with pytest.raises(ProtocolError):
        decode_request(deep)


REPLY_VIOLATIONS = [
    ("token_id_negative", VALID_CHUNK, ("token_ids",), [-1], "`$.token_ids[0]`"),
    ("accepted_over_drafted", VALID_CHUNK, ("round", "num_accepted"), 5, "`$.round`"),
    ("drafted_over_length", VALID_CHUNK, ("round", "num_drafted"), 5, "`$.round`"),
    ("finish_reason_unknown", VALID_DONE, ("finish_reason",), "error", "`$.finish_reason`"),
    ("cached_over_prompt", VALID_DONE, ("usage", "cached_tokens"), 11, "`$.usage`"),
    (
        "rate_above_one",
        VALID_DONE,
        ("speculation", "acceptance_rate"),
        1.5,
        "`$.speculation.acceptance_rate`",
    ),
    (
        "histogram_key_negative",
        VALID_DONE,
        ("speculation", "draft_length_histogram"),
        {-1: 1},
        "`$.speculation.draft_length_histogram`",
    ),
    ("session_id_missing_value", VALID_DONE, ("session_id",), None, "`$.session_id`"),
]


@pytest.mark.parametrize(
    ("base", "path", "value", "expected_path"),
    [case[1:] for case in REPLY_VIOLATIONS],
    ids=[case[0] for case in REPLY_VIOLATIONS],
)
def test_decode_reply_rejects_constraint(
    base: dict[str, Any], path: tuple[str, ...], value: Any, expected_path: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_reply(_encode(_with(base, path, value)))
    assert caught.value.code == ErrorCode.INVALID_REPLY
    assert expected_path in caught.value.message
    assert caught.value.request_id == "req-1"


def test_decode_reply_rejects_bad_error_code() -> None:
    body = {"type": "error_reply", "request_id": None, "code": "Not Snake", "message": "m"}
    with pytest.raises(ProtocolError) as caught:
        decode_reply(_encode(body))
    assert "`$.code`" in caught.value.message


def test_encode_request_frame_rejects_before_sending() -> None:
    request = GenerateRequest(request_id="r", prompt="p", max_tokens=0)
    with pytest.raises(ProtocolError) as caught:
        encode_request_frame(request)
    assert caught.value.code == ErrorCode.INVALID_REQUEST
    assert "`$.max_tokens`" in caught.value.message


def test_encode_request_frame_rejects_oversize() -> None:
    request = GenerateRequest(request_id="r", prompt="p" * 1000)
    with pytest.raises(ProtocolError) as caught:
        encode_request_frame(request, max_frame_bytes=500)
    assert caught.value.code == ErrorCode.FRAME_TOO_LARGE


def test_build_generate_request_rejects_prompt_and_messages() -> None:
    with pytest.raises(ProtocolError) as caught:
        build_generate_request(prompt="p", messages=[ChatMessage(role="user", content="c")])
    assert caught.value.code == ErrorCode.INVALID_REQUEST


def test_build_generate_request_rejects_bare_stop_string() -> None:
    with pytest.raises(TypeError, match="list of strings"):
        build_generate_request(prompt="p", stop="\n")


def test_build_generate_request_picks_fresh_ids() -> None:
    first = build_generate_request(prompt="p")
    second = build_generate_request(prompt="p")
    assert first.request_id != second.request_id
    assert 1 <= len(first.request_id) <= 64

"""The embedded API: validation, stop rules, streaming modes, health, stats and SyncRuntime."""

from __future__ import annotations

import msgspec
import pytest
import trio
from runtime_fakes import (
    PROMPTS,
    BlockingModel,
    collect,
    language_model,
    open_runtime,
    output_ids,
    solo_ids,
    tiny_models,
)

from draftwise.actors import Runtime, RuntimeConfig, RuntimeRequestError, SyncRuntime
from draftwise.protocol import Chunk, Done, GenerateRequest, SamplingParams, StatsReply
from draftwise.runtime.log import configure_logging


@pytest.mark.parametrize(
    ("request_fields", "code", "words"),
    [
        ({"model": "other"}, "unknown_model", "other"),
        ({"draft": "missing-draft"}, "unknown_model", "missing-draft"),
        ({"prompt": "x" * 600}, "invalid_request", "600 tokens"),
        ({"max_tokens": 0}, "invalid_request", "max_tokens"),
        ({"sampling": SamplingParams(top_p=0.0)}, "invalid_request", "top_p"),
    ],
)
async def test_runtime_generate_rejects_bad_input(request_fields, code, words):
    fields = {"request_id": "bad", "prompt": "abc", **request_fields}
    async with open_runtime(tiny_models()) as rt:
        with pytest.raises(RuntimeRequestError) as refused:
            await collect(rt, GenerateRequest(**fields))
        assert rt.stats()["scheduler_steps"] == 0  # refused before any model work
    assert refused.value.code == code
    assert words in refused.value.message


async def test_runtime_context_error_names_both_lengths():
    async with open_runtime(tiny_models()) as rt:
        with pytest.raises(RuntimeRequestError) as refused:
            await collect(rt, GenerateRequest(request_id="long", prompt="y" * 512))
        assert str(rt.context_length()) in refused.value.message
    assert "512 tokens" in refused.value.message


async def test_runtime_open_rejects_bad_config():
    with pytest.raises(RuntimeRequestError, match="prefill_chunk 0"):
        async with open_runtime(tiny_models(), prefill_chunk=0):
            pass


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"draft": "qwen2.5-coder:1.5b-mtp"}, "draft 'qwen2.5-coder:1.5b-mtp' is an MTP"),
        ({"drafter": "mtp"}, "drafter 'mtp' needs an MTP drafter"),
    ],
)
def test_runtime_config_rejects_mtp_drafter(fields, named):
    with pytest.raises(RuntimeRequestError, match="do not host yet") as rejected:
        RuntimeConfig(model="tiny", **fields).validate()
    assert named in rejected.value.message
    assert "draftwise generate --draft" in rejected.value.message


@pytest.mark.parametrize("speculation", ["auto", "off"])
async def test_runtime_stop_string_and_max_tokens_exact(speculation):
    models = tiny_models()
    target = models["tiny"]
    prompt = PROMPTS[2]
    full = solo_ids(target, prompt, 60)
    text = target.tokenizer.decode(full)
    stop = text[20:23]
    async with open_runtime(models, draft="tiny-draft") as rt:
        chunks, done = await collect(
            rt,
            GenerateRequest(
                request_id="s", prompt=prompt, max_tokens=60, stop=[stop], speculation=speculation
            ),
        )
        exact, exact_done = await collect(
            rt,
            GenerateRequest(request_id="m", prompt=prompt, max_tokens=7, speculation=speculation),
        )
    assert done.finish_reason == "stop"
    assert "".join(c.text for c in chunks) == text[: text.index(stop)]
    assert output_ids(chunks) == solo_ids(target, prompt, 60, (stop,))
    assert exact_done.finish_reason == "length"
    assert output_ids(exact) == full[:7]


async def test_runtime_without_stream_sends_one_chunk():
    models = tiny_models()
    async with open_runtime(models, draft="tiny-draft") as rt:
        chunks, done = await collect(
            rt, GenerateRequest(request_id="n", prompt=PROMPTS[1], max_tokens=20, stream=False)
        )
    assert len(chunks) == 1
    assert chunks[0].token_ids == solo_ids(models["tiny"], PROMPTS[1], 20)
    # 20 tokens, or fewer where the random model emits EOS first.
    assert done.usage.completion_tokens == len(chunks[0].token_ids) > 0


async def test_runtime_health_answered_during_long_prefill():
    base = tiny_models()["tiny"].model
    blocking = BlockingModel(base, min_tokens=32)
    models = {"tiny": language_model("tiny", blocking)}
    long_prompt = PROMPTS[0] * 16  # 432 tokens, 14 slices of 32
    results = {}

    async def run(name, prompt, max_tokens):
        results[name] = await collect(
            rt, GenerateRequest(request_id=name, prompt=prompt, max_tokens=max_tokens)
        )

    async with open_runtime(models, prefill_chunk=32) as rt:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "long", long_prompt, 4)
            await trio.to_thread.run_sync(blocking.entered.wait)
            # A prefill slice is running on the device thread right now.
            assert rt.health() == ("ok", None)
            assert rt.stats()["active_requests"] == 1
            nursery.start_soon(run, "short", PROMPTS[1], 16)
            blocking.release.set()
        history = list(rt._parts.scheduler.history)
    assert output_ids(results["short"][0]) == solo_ids(language_model("p", base), PROMPTS[1], 16)
    # The short request's decode rounds ran between the long prompt's prefill slices.
    last_slice = max(i for i, e in enumerate(history) if e[1] == "long" and e[2] == "prefill")
    assert any(e[1] == "short" and e[2] == "decode" for e in history[:last_slice])


async def test_runtime_stats_models_and_tokens():
    models = tiny_models()
    async with open_runtime(models, draft="tiny-draft") as rt:
        _, done = await collect(
            rt, GenerateRequest(request_id="a", prompt=PROMPTS[1], max_tokens=12)
        )
        stats = rt.stats()
        infos = rt.models()
        assert rt.count_tokens("hello") == 5
        assert rt.context_length() == 512
        with pytest.raises(RuntimeRequestError) as no_template:
            rt.render_chat([{"role": "user", "content": "hi"}])
        assert no_template.value.code == "invalid_request"
    reply_fields = set(StatsReply.__struct_fields__) - {"request_id"}
    assert reply_fields <= set(stats)
    msgspec.convert({"request_id": "x", **{k: stats[k] for k in reply_fields}}, StatsReply)
    assert stats["finished_requests"] == 1
    assert stats["completion_tokens"] == done.usage.completion_tokens
    assert stats["num_accepted"] == done.speculation.num_accepted
    assert stats["ttft_s"] and "tiny" in stats["draft_length"]
    assert [(i.name, i.role, i.default_draft) for i in infos] == [
        ("tiny", "target", "tiny-draft"),
        ("tiny-draft", "draft", None),
    ]


def test_sync_runtime_generate_from_plain_code():
    models = tiny_models()
    config = RuntimeConfig(model="tiny", draft="tiny-draft")
    with SyncRuntime.open(config, models=models) as rt:
        replies = list(
            rt.generate(GenerateRequest(request_id="s", prompt=PROMPTS[1], max_tokens=10))
        )
        assert isinstance(replies[-1], Done)
        chunks = [r for r in replies if isinstance(r, Chunk)]
        assert output_ids(chunks) == solo_ids(models["tiny"], PROMPTS[1], 10)
        stream = rt.generate(GenerateRequest(request_id="t", prompt=PROMPTS[2], max_tokens=100))
        next(stream)
        stream.close()  # cancels the request
        assert rt.health() == ("ok", None)
        assert rt.stats()["active_requests"] == 0
        freed = rt.close_session(replies[-1].session_id)
        assert freed > 0
    with pytest.raises(RuntimeRequestError, match="unknown"):
        with SyncRuntime.open(RuntimeConfig(model="tiny", drafter="unknown"), models=models):
            pass


def test_runtime_is_exported_from_actors():
    assert Runtime.open is not None


async def test_runtime_seeded_sampling_matches_engine():
    models = tiny_models()
    target = models["tiny"]
    sampling = SamplingParams(temperature=0.8, top_k=20, seed=7)
    async with open_runtime(models, draft="tiny-draft") as rt:
        chunks, _ = await collect(
            rt,
            GenerateRequest(
                request_id="s", prompt=PROMPTS[5], max_tokens=16, sampling=sampling, speculation=3
            ),
        )
    from draftwise.runtime.engine import Engine
    from draftwise.runtime.generate import GenerationParams
    from draftwise.runtime.sampling import SamplingParams as RuntimeSampling

    params = GenerationParams(sampling=RuntimeSampling(0.8, 20, 1.0, 7), max_tokens=16)
    engine = Engine(target, models["tiny-draft"])
    prompt_ids = target.tokenizer.encode(PROMPTS[5])
    expected = [t for c in engine.generate(prompt_ids, params, 3) for t in c.token_ids]
    assert output_ids(chunks) == expected


async def test_runtime_logs_one_line_per_request():
    from structlog.testing import capture_logs

    configure_logging("debug")
    models = tiny_models()
    async with open_runtime(models, draft="tiny-draft") as rt:
        with capture_logs() as logs:
            _, done = await collect(
                rt, GenerateRequest(request_id="logged", prompt=PROMPTS[1], max_tokens=10)
            )
    started = [e for e in logs if e["event"] == "request_started"]
    finished = [e for e in logs if e["event"] == "request_finished"]
    assert len(started) == 1
    assert len(finished) == 1
    line = finished[0]
    assert line["request_id"] == "logged"
    assert line["session_id"] == done.session_id
    assert line["generated_tokens"] == done.usage.completion_tokens
    assert line["num_accepted"] == done.speculation.num_accepted
    assert line["finish_reason"] == done.finish_reason
    assert {"ttft_ms", "total_ms", "prompt_tokens", "num_drafted"} <= set(line)
    rounds = [e for e in logs if e["event"] == "round_finished"]
    assert rounds and all(e["log_level"] == "debug" for e in rounds)


async def test_runtime_body_error_reraised_as_is():
    with pytest.raises(ValueError, match="from the body"):
        async with open_runtime(tiny_models()) as rt:
            assert rt.health() == ("ok", None)
            raise ValueError("raised from the body")


async def test_runtime_defaults_to_warning_logs(capsys):
    # A program that never configured structlog gets warnings only, on stderr.
    models = tiny_models()
    async with open_runtime(models) as rt:
        await collect(rt, GenerateRequest(request_id="quiet", prompt=PROMPTS[1], max_tokens=4))
    captured = capsys.readouterr()
    assert "request_started" not in captured.out
    assert "request_started" not in captured.err

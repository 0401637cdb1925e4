"""Many sessions at once: same tokens as alone, fair turns, failures stay in their request."""

from __future__ import annotations

import itertools

import pytest
import trio
from runtime_fakes import (
    PROMPTS,
    PoisonedModel,
    collect,
    language_model,
    open_runtime,
    output_ids,
    solo_ids,
    tiny_models,
)

from draftwise.actors.runtime import RuntimeRequestError
from draftwise.protocol import GenerateRequest

MAX_TOKENS = 24


async def _run_all(rt, requests):
    results = {}

    async def one(request):
        results[request.request_id] = await collect(rt, request)

    async with trio.open_nursery() as nursery:
        for request in requests:
            nursery.start_soon(one, request)
    return results


@pytest.mark.parametrize("speculation", ["auto", "off", 3])
async def test_runtime_concurrent_sessions_match_solo(speculation):
    models = tiny_models()
    requests = [
        GenerateRequest(
            request_id=f"r{i}", prompt=p, max_tokens=MAX_TOKENS, speculation=speculation
        )
        for i, p in enumerate(PROMPTS)
    ]
    async with open_runtime(models, draft="tiny-draft", prefill_chunk=8) as rt:
        results = await _run_all(rt, requests)
        history = list(rt._parts.scheduler.history)
    for i, prompt in enumerate(PROMPTS):
        chunks, done = results[f"r{i}"]
        assert output_ids(chunks) == solo_ids(models["tiny"], prompt, MAX_TOKENS), prompt
        assert done.usage.completion_tokens == len(output_ids(chunks))
    # The runs overlapped: some session's consecutive steps had another's in between.
    sessions = [entry[0] for entry in history]
    assert len(set(sessions[:16])) > 1
    # With a fixed draft length every round drafts. Sharing passes, auto only
    # drafts n-gram probes (see adaptive.py), which depend on what the random
    # model happens to repeat, so only its output is checked.
    if speculation == 3:
        assert any(done.speculation.num_accepted > 0 for _, done in results.values())


@pytest.mark.parametrize("speculation", ["off", 3])
async def test_concurrent_rounds_share_target_passes(speculation):
    models = tiny_models()
    requests = [
        GenerateRequest(
            request_id=f"r{i}", prompt=p, max_tokens=MAX_TOKENS, speculation=speculation
        )
        for i, p in enumerate(PROMPTS[:4])
    ]
    async with open_runtime(models, draft="tiny-draft", prefill_chunk=64) as rt:
        results = await _run_all(rt, requests)
        sizes = dict(rt._parts.scheduler.batch_sizes)
        calls = list(rt._parts.scheduler.calls)
    for i, prompt in enumerate(PROMPTS[:4]):
        assert output_ids(results[f"r{i}"][0]) == solo_ids(models["tiny"], prompt, MAX_TOKENS)
    # Most rounds ran in passes shared by several sessions.
    shared = sum(size * count for size, count in sizes.items())
    rounds = sum(len(ids) for ids in calls) - 4  # minus one prefill call per request
    assert max(sizes) >= 3, sizes
    assert shared > rounds / 2, (sizes, rounds)


async def test_batch_sessions_one_runs_rounds_alone():
    models = tiny_models()
    requests = [
        GenerateRequest(request_id=f"r{i}", prompt=p, max_tokens=8, speculation="off")
        for i, p in enumerate(PROMPTS[:3])
    ]
    async with open_runtime(models, batch_sessions=1) as rt:
        results = await _run_all(rt, requests)
        calls = list(rt._parts.scheduler.calls)
        assert not rt._parts.scheduler.batch_sizes
    assert all(len(ids) == 1 for ids in calls)
    for i, prompt in enumerate(PROMPTS[:3]):
        assert output_ids(results[f"r{i}"][0]) == solo_ids(models["tiny"], prompt, 8)


async def test_scheduler_fairness_bound():
    models = tiny_models()
    count = 4
    requests = [
        GenerateRequest(request_id=f"r{i}", prompt=PROMPTS[i] * 3, max_tokens=40, speculation="off")
        for i in range(count)
    ]
    async with open_runtime(models, prefill_chunk=8) as rt:
        await _run_all(rt, requests)
        history = list(rt._parts.scheduler.history)
        calls = list(rt._parts.scheduler.calls)
    # Between two device calls that serve one request, while it runs, there
    # are at most count - 1 others: no request waits more than that.
    for request_id in (r.request_id for r in requests):
        positions = [i for i, ids in enumerate(calls) if request_id in ids]
        gaps = [b - a - 1 for a, b in itertools.pairwise(positions)]
        assert max(gaps) <= count - 1, (request_id, gaps)
    # Prefill slices of one request interleave with other requests' steps.
    first = [i for i, e in enumerate(history) if e[1] == "r0" and e[2] == "prefill"]
    assert any(history[i + 1][1] != "r0" for i in first[:-1])


async def test_runtime_exception_fails_only_its_request():
    base = tiny_models()["tiny"].model
    poison = "~"  # only the poisoned prompt contains this character
    poisoned = PoisonedModel(base, poison_id=ord(poison) - 32)
    models = {"tiny": language_model("tiny", poisoned)}
    prompts = [*PROMPTS[:7], "poisoned ~ prompt"]
    requests = [
        GenerateRequest(request_id=f"r{i}", prompt=p, max_tokens=MAX_TOKENS, speculation="auto")
        for i, p in enumerate(prompts)
    ]
    results, errors = {}, {}

    async def one(request):
        try:
            results[request.request_id] = await collect(rt, request)
        except RuntimeRequestError as error:
            errors[request.request_id] = error

    async with open_runtime(models, prefill_chunk=8) as rt:
        async with trio.open_nursery() as nursery:
            for request in requests:
                nursery.start_soon(one, request)
        assert rt.health() == ("ok", None)
        # The failed session starts over on its next request.
        again, _ = await collect(
            rt, GenerateRequest(request_id="again", prompt=PROMPTS[0], max_tokens=8)
        )
    assert set(errors) == {"r7"}
    assert errors["r7"].code == "internal"
    assert "injected fault" in errors["r7"].message
    reference = language_model("plain", base)
    for i in range(7):
        chunks, done = results[f"r{i}"]
        assert output_ids(chunks) == solo_ids(reference, prompts[i], MAX_TOKENS)
        assert done.finish_reason in ("length", "eos")
    assert output_ids(again) == solo_ids(reference, PROMPTS[0], 8)

"""Sessions across requests: prefix reuse, cancellation, closing and the memory budget."""

from __future__ import annotations

import mlx.core as mx
import pytest
from runtime_fakes import PROMPTS, collect, open_runtime, output_ids, solo_ids, tiny_models

from draftwise.actors.runtime import RuntimeRequestError
from draftwise.protocol import Chunk, Done, GenerateRequest
from draftwise.runtime.generate import prefill


def _text(target, ids):
    return target.tokenizer.decode(ids)


@pytest.mark.parametrize("speculation", ["auto", "off"])
async def test_session_second_turn_prefills_only_new_tokens(speculation):
    models = tiny_models()
    target = models["tiny"]
    first = PROMPTS[1]
    async with open_runtime(models, draft="tiny-draft", prefill_chunk=8) as rt:
        chunks, done = await collect(
            rt,
            GenerateRequest(request_id="t1", prompt=first, max_tokens=10, speculation=speculation),
        )
        reply = _text(target, output_ids(chunks))
        second = first + reply + " and more"
        cached_count = len(first) + len(output_ids(chunks))  # the last token ran in after Done
        chunks2, done2 = await collect(
            rt,
            GenerateRequest(
                request_id="t2",
                session_id=done.session_id,
                prompt=second,
                max_tokens=12,
                speculation=speculation,
            ),
        )
        cold, cold_done = await collect(
            rt,
            GenerateRequest(request_id="t3", prompt=second, max_tokens=12, speculation=speculation),
        )
    assert done2.session_id == done.session_id
    assert done2.usage.cached_tokens == cached_count
    assert cold_done.usage.cached_tokens == 0
    assert output_ids(chunks2) == output_ids(cold) == solo_ids(target, second, 12)


async def test_session_reuse_prefix_picks_longest_match():
    models = tiny_models()
    async with open_runtime(models, prefill_chunk=8) as rt:
        done, outputs = {}, {}
        for i in range(3):
            outputs[i], done[i] = await collect(
                rt, GenerateRequest(request_id=f"a{i}", prompt=PROMPTS[i], max_tokens=4)
            )
        extended = PROMPTS[2] + _text(models["tiny"], output_ids(outputs[2])) + " # next"
        chunks, reused = await collect(
            rt, GenerateRequest(request_id="b", prompt=extended, max_tokens=6), reuse_prefix=True
        )
        _, fresh = await collect(
            rt,
            GenerateRequest(request_id="c", prompt="zzz unrelated", max_tokens=2),
            reuse_prefix=True,
        )
    assert reused.session_id == done[2].session_id
    assert reused.usage.cached_tokens == len(PROMPTS[2]) + 4
    assert output_ids(chunks) == solo_ids(models["tiny"], extended, 6)
    assert fresh.session_id not in {d.session_id for d in done.values()}


@pytest.mark.parametrize("how", ["cancel", "break"])
async def test_session_cancel_returns_cache_bytes_to_baseline(how):
    models = tiny_models()
    prompt = PROMPTS[2]  # generates 200 tokens without EOS
    async with open_runtime(models, draft="tiny-draft", prefill_chunk=8) as rt:
        assert rt.stats()["cache_bytes"] == 0
        request = GenerateRequest(
            request_id="long", prompt=prompt, max_tokens=200, speculation="off"
        )
        received: list[int] = []
        done = None
        stream = rt.generate(request)
        async for reply in stream:
            if isinstance(reply, Chunk):
                received += reply.token_ids
                if len(received) == 5:
                    if how == "break":
                        break
                    assert await rt.cancel("long")
            else:
                done = reply
        await stream.aclose()
        if how == "cancel":
            assert isinstance(done, Done) and done.finish_reason == "cancelled"
            assert done.usage.completion_tokens == len(received) < 200
        session_id = next(iter(rt._parts.cache.sessions))
        # Closing the stream released the session with its cache at a round boundary.
        assert rt.session_info(session_id)["busy"] is False
        held = rt.stats()["cache_bytes"]
        assert held > 0
        continued = prompt + _text(models["tiny"], received)
        chunks, again = await collect(
            rt,
            GenerateRequest(
                request_id="again", session_id=session_id, prompt=continued, max_tokens=6
            ),
        )
        assert again.usage.cached_tokens == len(continued) - 1
        assert output_ids(chunks) == solo_ids(models["tiny"], continued, 6)
        freed = await rt.close_session(session_id)
        assert freed > 0
        assert rt.stats()["cache_bytes"] == 0
        assert rt.stats()["active_sessions"] == 0
        assert await rt.cancel("long") is False


async def test_session_budget_evicts_oldest_idle():
    models = tiny_models()
    async with open_runtime(models, drafter="ngram", prefill_chunk=8) as rt:
        _, _a = await collect(rt, GenerateRequest(request_id="a", prompt=PROMPTS[0], max_tokens=4))
        one_session = rt.stats()["cache_bytes"]
    budget = int(one_session * 2.5)
    async with open_runtime(
        models, drafter="ngram", prefill_chunk=8, cache_budget_bytes=budget
    ) as rt:
        ids = []
        for i in range(2):
            _, done = await collect(
                rt, GenerateRequest(request_id=f"i{i}", prompt=PROMPTS[i], max_tokens=4)
            )
            ids.append(done.session_id)
        assert rt.stats()["evictions"] == 0
        chunks, _active = await collect(
            rt, GenerateRequest(request_id="c", prompt=PROMPTS[2], max_tokens=8)
        )
        assert output_ids(chunks) == solo_ids(models["tiny"], PROMPTS[2], 8)
        assert rt.stats()["evictions"] == 1
        assert rt.session_info(ids[0])["cache_bytes"] == 0  # the oldest idle one went
        assert rt.session_info(ids[1])["cache_bytes"] > 0
        assert rt.stats()["cache_bytes"] <= budget
        # A request on the evicted session prefills from scratch and is correct.
        chunks, again = await collect(
            rt,
            GenerateRequest(
                request_id="d", session_id=ids[0], prompt=PROMPTS[0] + "!", max_tokens=6
            ),
        )
        assert again.usage.cached_tokens == 0
        assert output_ids(chunks) == solo_ids(models["tiny"], PROMPTS[0] + "!", 6)


async def test_session_unknown_and_busy_refused():
    models = tiny_models()
    async with open_runtime(models) as rt:
        with pytest.raises(RuntimeRequestError) as unknown:
            await collect(rt, GenerateRequest(request_id="x", session_id="nope", prompt="a"))
        assert unknown.value.code == "unknown_session"
        with pytest.raises(RuntimeRequestError) as closing:
            await rt.close_session("nope")
        assert closing.value.code == "unknown_session"
        stream = rt.generate(GenerateRequest(request_id="y", prompt=PROMPTS[0], max_tokens=50))
        first = await stream.__anext__()
        assert isinstance(first, Chunk)
        session_id = next(iter(rt._parts.cache.sessions))
        with pytest.raises(RuntimeRequestError) as busy:
            await collect(rt, GenerateRequest(request_id="z", session_id=session_id, prompt="b"))
        assert busy.value.code == "invalid_request"
        assert session_id in busy.value.message
        await stream.aclose()


async def test_session_idle_draft_cache_follows_new_prompt():
    models = tiny_models()  # the draft has the target's weights, so it proposes exactly
    first, other = PROMPTS[2], PROMPTS[2][:5] + " something else entirely"
    async with open_runtime(models, draft="tiny-draft", drafter="draft_model") as rt:
        _, done = await collect(
            rt, GenerateRequest(request_id="a", prompt=first, max_tokens=12, speculation=3)
        )
        session = done.session_id
        await collect(
            rt,
            GenerateRequest(
                request_id="b", session_id=session, prompt=other, max_tokens=6, speculation="off"
            ),
        )
        extended = other + " and more"
        chunks, last = await collect(
            rt,
            GenerateRequest(
                request_id="c", session_id=session, prompt=extended, max_tokens=12, speculation=3
            ),
        )
    assert output_ids(chunks) == solo_ids(models["tiny"], extended, 12)
    assert last.speculation.num_drafted > 0
    assert last.speculation.num_accepted == last.speculation.num_drafted


async def test_session_reuse_prefix_forks_on_partial_match():
    models = tiny_models()
    system = "You are terse. "
    first, other = system + PROMPTS[0], system + PROMPTS[5]
    async with open_runtime(models, draft="tiny-draft", prefill_chunk=8) as rt:
        chunks, a1 = await collect(
            rt, GenerateRequest(request_id="a1", prompt=first, max_tokens=6), reuse_prefix=True
        )
        b_chunks, b1 = await collect(
            rt, GenerateRequest(request_id="b1", prompt=other, max_tokens=6), reuse_prefix=True
        )
        second = first + _text(models["tiny"], output_ids(chunks)) + " more"
        a_chunks, a2 = await collect(
            rt, GenerateRequest(request_id="a2", prompt=second, max_tokens=6), reuse_prefix=True
        )
    # The second conversation copied the shared system prompt from the first...
    assert b1.session_id != a1.session_id
    assert b1.usage.cached_tokens == len(system)
    assert output_ids(b_chunks) == solo_ids(models["tiny"], other, 6)
    # ...and the first conversation kept its whole cache for its next turn.
    assert a2.session_id == a1.session_id
    assert a2.usage.cached_tokens == len(first) + len(output_ids(chunks))
    assert output_ids(a_chunks) == solo_ids(models["tiny"], second, 6)


async def test_finished_request_caches_last_token():
    models = tiny_models()
    target = models["tiny"]
    async with open_runtime(models, prefill_chunk=8) as rt:
        chunks, done = await collect(
            rt, GenerateRequest(request_id="a", prompt=PROMPTS[3], max_tokens=5)
        )
        cache = rt._parts.cache.sessions[done.session_id].target_cache
        # A close sent right after Done waits for the step that runs the last
        # token in, instead of failing because the session is still leased.
        freed = await rt.close_session(done.session_id)
    assert freed > 0
    committed = target.tokenizer.encode(PROMPTS[3]) + output_ids(chunks)
    assert cache.kv_offset == len(committed)
    assert len(committed) == done.usage.prompt_tokens + done.usage.completion_tokens
    fresh = target.model.make_cache()
    prefill(target.model, fresh, committed)
    for got, want in zip(cache.state(), fresh.state(), strict=True):
        assert mx.array_equal(got[..., : len(committed), :], want[..., : len(committed), :])


async def test_cancelled_request_skips_last_token():
    models = tiny_models()
    async with open_runtime(models, prefill_chunk=8) as rt:
        request = GenerateRequest(request_id="c", prompt=PROMPTS[4], max_tokens=200)
        received = []
        async for reply in rt.generate(request):
            if isinstance(reply, Chunk):
                received.extend(reply.token_ids)
                if len(received) >= 3:
                    await rt.cancel("c")
            else:
                done = reply
                break
        assert done.finish_reason == "cancelled"
        info = rt.session_info(done.session_id)
    assert info["cached_tokens"] == done.usage.prompt_tokens + len(received) - 1

"""The runtime on the real Qwen pair: an agent's second turn reuses the first turn's cache."""

from __future__ import annotations

import pytest
from real_models import DRAFT, TARGET

from draftwise.actors.cache_actor import common_prefix_length
from draftwise.actors.runtime import Runtime, RuntimeConfig
from draftwise.protocol import Chunk, GenerateRequest

pytestmark = pytest.mark.slow

SYSTEM = "You are a coding assistant. Reply with code only."


async def _run(rt, request):
    ids, done = [], None
    async for reply in rt.generate(request):
        if isinstance(reply, Chunk):
            ids += reply.token_ids
        else:
            done = reply
    return ids, done


async def test_real_runtime_second_turn_prefills_only_new_tokens(target_lm, draft_lm):
    models = {TARGET: target_lm, DRAFT: draft_lm}
    tokenizer = target_lm.tokenizer
    turn1 = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Write a Python function square(x)."},
    ]
    config = RuntimeConfig(model=TARGET, draft=DRAFT, prefill_chunk=64)
    async with Runtime.open(config, models=models) as rt:
        prompt1 = rt.render_chat(turn1)
        prompt1_ids = tokenizer.encode(prompt1)
        # A rendered prompt tokenizes exactly as the messages do.
        assert prompt1_ids == target_lm.encode_messages(turn1)
        out1, done1 = await _run(
            rt, GenerateRequest(request_id="turn1", prompt=prompt1, max_tokens=12)
        )
        reply = tokenizer.decode(out1, skip_special_tokens=True)
        turn2 = [
            *turn1,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "Add a docstring."},
        ]
        prompt2 = rt.render_chat(turn2)
        prompt2_ids = tokenizer.encode(prompt2)
        out2, done2 = await _run(
            rt,
            GenerateRequest(
                request_id="turn2", session_id=done1.session_id, prompt=prompt2, max_tokens=8
            ),
        )
        cold, cold_done = await _run(
            rt, GenerateRequest(request_id="cold", prompt=prompt2, max_tokens=8)
        )
    # After its Done, the first turn ran its last sampled token into the cache too.
    cached_ids = [*prompt1_ids, *out1]
    expected_cached = min(common_prefix_length(prompt2_ids, cached_ids), len(prompt2_ids) - 1)
    assert done2.usage.cached_tokens == expected_cached
    assert done2.usage.cached_tokens >= len(prompt1_ids)
    assert cold_done.usage.cached_tokens == 0
    assert out2 == cold

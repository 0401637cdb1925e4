"""The verifier and draft actors own the models: what runs where, and refusals."""

from __future__ import annotations

import pytest
import trio
from runtime_fakes import PROMPTS, collect, open_runtime, output_ids, solo_ids, tiny_models

from draftwise.actors.cache_actor import ask
from draftwise.actors.device import DeviceThread
from draftwise.actors.draft_actor import DraftActor
from draftwise.actors.messages import DrafterRequested, PrefillRequested, PrefillSlice
from draftwise.actors.runtime import RuntimeRequestError
from draftwise.protocol import GenerateRequest


async def test_model_actors_run_their_steps():
    models = tiny_models()
    async with open_runtime(models, draft="tiny-draft", prefill_chunk=8) as rt:
        chunks, done = await collect(
            rt,
            GenerateRequest(request_id="r", prompt=PROMPTS[0], max_tokens=12, speculation=3),
        )
        parts = rt._parts
        verifier, drafts = parts.verifier, parts.drafts
        assert verifier.target is models["tiny"]
        assert drafts.draft is models["tiny-draft"]
        # Every round went to the verifier; the prompt's slices to both owners.
        assert verifier.rounds_run == done.speculation.rounds + 1  # + the first token's step
        slices = -(-len(models["tiny"].tokenizer.encode(PROMPTS[0])) // 8)
        assert verifier.prefill_slices >= slices
        assert drafts.prefill_slices == slices
        assert drafts.drafters_built == 1
    assert output_ids(chunks) == solo_ids(models["tiny"], PROMPTS[0], 12)


async def test_plain_request_skips_draft_actor():
    models = tiny_models()
    async with open_runtime(models, draft="tiny-draft") as rt:
        await collect(
            rt, GenerateRequest(request_id="r", prompt=PROMPTS[1], max_tokens=6, speculation="off")
        )
        assert rt._parts.drafts.prefill_slices == 0
        assert rt._parts.drafts.drafters_built == 0
        assert rt._parts.verifier.rounds_run > 0


async def test_draft_actor_rejects_bad_work():
    with DeviceThread() as device:
        actor = DraftActor(None, device, 4)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor.run)
            work = PrefillSlice(role="draft", cache=None, token_ids=(1, 2))
            reply = await ask(actor.inbox, lambda c: PrefillRequested(work=work, reply=c))
            assert isinstance(reply.error, ValueError)
            assert "draft model None" in str(reply.error)
            built = await ask(
                actor.inbox,
                lambda c: DrafterRequested(drafter="draft_model", speculation="auto", reply=c),
            )
            assert isinstance(built, Exception)
            actor.inbox.close()


async def test_drafter_error_fails_one_request(monkeypatch):
    from draftwise.actors import draft_actor

    real = draft_actor.make_drafter

    def failing(draft, drafter, speculation):
        if speculation == 2:
            raise ValueError("injected: no drafter for k=2")
        return real(draft, drafter, speculation)

    monkeypatch.setattr(draft_actor, "make_drafter", failing)
    models = tiny_models()
    async with open_runtime(models, draft="tiny-draft") as rt:
        with pytest.raises(RuntimeRequestError, match="injected: no drafter for k=2"):
            await collect(
                rt,
                GenerateRequest(request_id="bad", prompt=PROMPTS[0], max_tokens=4, speculation=2),
            )
        chunks, _ = await collect(
            rt, GenerateRequest(request_id="ok", prompt=PROMPTS[0], max_tokens=4, speculation=3)
        )
        assert output_ids(chunks) == solo_ids(models["tiny"], PROMPTS[0], 4)
        assert rt.health() == ("ok", None)

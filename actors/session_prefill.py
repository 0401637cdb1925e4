"""Prefill for a session's request: copy a forked cache, reuse the shared prefix, slice the rest.

`SessionPrefill` is a mixin of `SessionRequest`. Each cache is rolled back
to the longest common prefix of the new prompt and the tokens it contains,
and the remaining prompt tokens run through the model in slices of
`RuntimeParts.prefill_chunk` tokens, one scheduler step each, which the
actor owning that model runs (`VerifierActor` or `DraftActor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import trio

from draftwise.actors.cache_actor import SessionState, common_prefix_length
from draftwise.actors.messages import PrefillSlice, SessionReleased
from draftwise.runtime.cache import ModelCache
from draftwise.runtime.errors import RollbackError

# Rollback room of every session cache: the longest draft a request may ask for, plus two.
CACHE_ROLLBACK = 18


class SessionPrefill:
    """Prefill steps of a `SessionRequest`; it provides the attributes used here."""

    parts: Any
    plan: Any
    log: Any
    cached_tokens: int
    prefill_tokens: int
    prefill_s: float

    async def _step(self, state: SessionState, phase: Any, work: Any) -> Any:
        raise NotImplementedError

    async def _fork(self, state: SessionState, source: SessionState) -> None:
        """Copy the caches of ``source`` into this new session, then release ``source``."""

        def copy_caches() -> tuple[ModelCache | None, ModelCache | None]:
            # Snapshots share buffers until either side writes, so this copies no data.
            target = None if source.target_cache is None else source.target_cache.snapshot()
            draft = None if source.draft_cache is None else source.draft_cache.snapshot()
            return target, draft

        pin = source.request_id
        try:
            caches = await self._step(state, "prefill", copy_caches)
            state.target_cache, state.draft_cache = caches
            state.token_ids = list(source.token_ids)
        finally:
            with trio.CancelScope(shield=True):
                await self.parts.cache.inbox.send(
                    SessionReleased(
                        session_id=source.session_id,
                        request_id=str(pin),
                        token_ids=tuple(source.token_ids),
                        caches_valid=True,
                    )
                )
        self.log.info(
            "session_forked",
            source_session_id=source.session_id,
            cached_tokens=len(state.cached_token_ids()),
        )

    async def _prefill_target(self, state: SessionState) -> Any:
        model = self.parts.target.model
        prompt = self.plan.prompt_ids
        reuse = 0
        if state.target_cache is not None:
            reuse = min(common_prefix_length(prompt, state.cached_token_ids()), len(prompt) - 1)
            try:
                state.target_cache.rollback(reuse)
            except RollbackError:
                state.target_cache, reuse = None, 0
        if state.target_cache is None:
            state.target_cache = model.make_cache(max_rollback=CACHE_ROLLBACK)
        self.cached_tokens = reuse
        return await self._prefill_slices(state, "target", state.target_cache, prompt[reuse:])

    async def _prefill_draft(self, state: SessionState) -> None:
        assert self.parts.draft is not None
        model = self.parts.draft.model
        prompt = self.plan.prompt_ids
        reuse = 0
        if state.draft_cache is not None:
            held = state.token_ids[: state.draft_cache.kv_offset]
            reuse = common_prefix_length(prompt, held)
            try:
                state.draft_cache.rollback(reuse)
            except RollbackError:
                state.draft_cache, reuse = None, 0
        if state.draft_cache is None:
            state.draft_cache = model.make_cache(max_rollback=CACHE_ROLLBACK)
        await self._prefill_slices(state, "draft", state.draft_cache, prompt[reuse:])

    def _trim_idle_draft_cache(self, state: SessionState) -> None:
        """Cut a draft cache this request does not use to the prefix it shares with the prompt.

        The session's token_ids change to this request's tokens on release,
        so positions past the shared prefix would no longer match them.
        """
        if state.draft_cache is None:
            return
        held = state.token_ids[: state.draft_cache.kv_offset]
        try:
            state.draft_cache.rollback(common_prefix_length(self.plan.prompt_ids, held))
        except RollbackError:
            state.draft_cache = None
            state.drafters.clear()

    async def _prefill_slices(
        self,
        state: SessionState,
        role: Literal["target", "draft"],
        cache: ModelCache,
        token_ids: Sequence[int],
    ) -> Any:
        logits = None
        size = self.parts.prefill_chunk
        for start in range(0, len(token_ids), size):
            if self.plan.cancelled:
                return None
            piece = tuple(token_ids[start : start + size])
            work = PrefillSlice(role=role, cache=cache, token_ids=piece)
            logits, seconds = await self._step(state, "prefill", work)
            self.prefill_s += seconds
            self.prefill_tokens += len(piece)
        return logits

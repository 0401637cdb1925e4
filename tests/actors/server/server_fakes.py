"""Tiny models for the real Runtime, and a scripted runtime for cases a real model cannot script.

`FakeRuntime` has the server-facing methods of the embedded Runtime.

Its "model" returns the words of the prompt (or of the last chat message), one
word per chunk. Scripted prompts:

- "hold": send one chunk, then wait until the request is cancelled.
- "boom": raise RuntimeError inside the request, as a model bug would.

A model named anything but MODEL_NAME is unknown, and a prompt of more than
CONTEXT_LENGTH words is longer than the context.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio
from fakes import CharTokenizer, tiny_config, tiny_model

from draftwise.actors.runtime_errors import RuntimeRequestError as FakeRequestError
from draftwise.protocol import (
    Chunk,
    Done,
    GenerateRequest,
    ModelInfo,
    RoundStats,
    SpeculationSummary,
    Usage,
)
from draftwise.runtime.language_model import LanguageModel

MODEL_NAME = "fake-target"
CONTEXT_LENGTH = 64
TINY_CONTEXT_LENGTH = tiny_config().context_length


def tiny_models() -> dict[str, LanguageModel]:
    """A tiny random target named "tiny" with a character tokenizer, for `Runtime.open(models=)`."""
    return {
        "tiny": LanguageModel(
            name="tiny",
            model=tiny_model(seed=0),
            tokenizer=CharTokenizer(),  # type: ignore[arg-type]
            path=Path("."),
            source_sha256="0" * 64,
            load_s=0.0,
        )
    }


class FakeRuntime:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: dict[str, str] = {}
        self.sessions: set[str] = set()
        self._cancelled: dict[str, trio.Event] = {}
        self._next_session = 0

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk | Done]:
        if request.model not in (None, MODEL_NAME):
            raise FakeRequestError("unknown_model", f"model {request.model!r} is not loaded")
        if request.session_id is not None and request.session_id not in self.sessions:
            raise FakeRequestError("unknown_session", f"session {request.session_id!r} not found")
        text = request.prompt if request.prompt is not None else request.messages[-1].content
        words = text.split()
        if len(words) > CONTEXT_LENGTH:
            raise FakeRequestError(
                "invalid_request",
                f"prompt is {len(words)} tokens, over the context length of {CONTEXT_LENGTH}",
            )

        request_id = request.request_id
        cancelled = self._cancelled[request_id] = trio.Event()
        self.started.append(request_id)
        session_id = request.session_id or self._new_session()
        try:
            emitted = 0
            if text == "boom":
                raise RuntimeError("scripted model failure")
            if text == "hold":
                yield self._chunk(request_id, ["hold"], emitted)
                emitted = 1
                await cancelled.wait()
            limit = min(len(words), request.max_tokens)
            if not request.stream:
                await trio.sleep(0)
                yield self._chunk(request_id, words[:limit], 0)
                emitted = limit
            while emitted < limit and not cancelled.is_set():
                await trio.sleep(0)
                yield self._chunk(request_id, words[emitted : emitted + 1], emitted)
                emitted += 1
            if cancelled.is_set():
                reason = "cancelled"
            elif emitted < len(words):
                reason = "length"
            else:
                reason = "eos"
            self.finished[request_id] = reason
            yield Done(
                request_id=request_id,
                session_id=session_id,
                finish_reason=reason,
                usage=Usage(prompt_tokens=len(words), completion_tokens=emitted, cached_tokens=0),
                speculation=SpeculationSummary(rounds=emitted, num_drafted=0, num_accepted=0),
            )
        finally:
            self.finished.setdefault(request_id, "aborted")
            del self._cancelled[request_id]

    async def cancel(self, request_id: str) -> bool:
        event = self._cancelled.get(request_id)
        if event is None:
            return False
        event.set()
        return True

    async def close_session(self, session_id: str) -> int:
        if session_id not in self.sessions:
            raise FakeRequestError("unknown_session", f"session {session_id!r} not found")
        self.sessions.discard(session_id)
        return 1024

    def stats(self) -> dict[str, Any]:
        return dict(
            uptime_s=1.0, active_sessions=len(self.sessions), active_requests=len(self._cancelled),
            finished_requests=len(self.finished), prompt_tokens=0, completion_tokens=0,
            cached_tokens=0, num_drafted=0, num_accepted=0, acceptance_rate=0.0, cache_bytes=0,
            cache_budget_bytes=1 << 30, prefill_tokens_per_s=0.0, decode_tokens_per_s=0.0,
            draft_length={MODEL_NAME: 4}, ttft_s=[],
        )  # fmt: skip

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                name=MODEL_NAME,
                role="target",
                architecture="fake",
                context_length=CONTEXT_LENGTH,
                vocab_size=100,
            )
        ]

    def health(self) -> tuple[str, str | None]:
        return "ok", None

    def _chunk(self, request_id: str, words: list[str], start: int) -> Chunk:
        round_stats = RoundStats(num_drafted=0, num_accepted=0, draft_length=0, drafter="none")
        text = "".join(word + " " for word in words)
        return Chunk(
            request_id=request_id,
            text=text,
            token_ids=list(range(start, start + len(words))),
            round=round_stats,
        )

    def _new_session(self) -> str:
        self._next_session += 1
        session_id = f"session-{self._next_session}"
        self.sessions.add(session_id)
        return session_id

"""One entry point for generation: plain or speculative, with timings and statistics."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from draftwise.runtime.drafters.draft_model import DraftModelDrafter
from draftwise.runtime.errors import GenerationError
from draftwise.runtime.generate import (
    GenerationChunk,
    GenerationParams,
    Prefiller,
    Timings,
    fresh_prefill,
    generate_plain,
)
from draftwise.runtime.language_model import LanguageModel, check_draft_compatible
from draftwise.runtime.speculative import SpeculationStats, generate_speculative
from draftwise.runtime.tuner import DraftLengthTuner

MAX_DRAFT = 8


def parse_speculation(value: str | int) -> str | int:
    """Return "auto", "off" or a draft length from user input, or raise naming the value."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        k = int(value)
        if not 0 <= k <= 16:
            raise GenerationError(f"speculation length {k} is outside 0..16; use auto, off or 0..16")
        return k
    if value in ("auto", "off"):
        return value
    raise GenerationError(f"speculation '{value}' is invalid; use auto, off or a length 0..16")


@dataclass
class GenerationRecord:
    """Everything one request produced, filled in as its chunks stream."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    timings: Timings = field(default_factory=Timings)
    speculation: SpeculationStats | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": self.text,
            "token_ids": self.token_ids,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "timings": self.timings.as_dict(),
        }
        if self.speculation is not None:
            out["speculation"] = self.speculation.as_dict()
        return out


class Engine:
    """A target model and an optional draft model, ready to generate."""

    def __init__(self, target: LanguageModel, draft: LanguageModel | None = None) -> None:
        if draft is not None:
            check_draft_compatible(target, draft)
        self.target = target
        self.draft = draft

    def generate(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        speculation: str | int = "auto",
        record: GenerationRecord | None = None,
        prefiller: Prefiller = fresh_prefill,
    ) -> Iterator[GenerationChunk]:
        """Stream chunks for ``prompt_ids``; ``record`` collects the totals."""
        speculation = parse_speculation(speculation)
        record = record if record is not None else GenerationRecord()
        record.prompt_tokens = len(prompt_ids)
        tokenizer = self.target.tokenizer
        if speculation == "off" or (self.draft is None and speculation == "auto"):
            chunks = generate_plain(
                self.target.model, tokenizer, prompt_ids, params, record.timings, prefiller
            )
        else:
            if self.draft is None:
                raise GenerationError(
                    f"speculation length {speculation} needs a draft model; pass --draft NAME"
                )
            fixed = None if speculation == "auto" else int(speculation)
            tuner = DraftLengthTuner(max_draft=max(MAX_DRAFT, fixed or 0), fixed=fixed)
            record.speculation = SpeculationStats()
            drafter = DraftModelDrafter(self.draft.model, max_draft=tuner.max_draft)
            chunks = generate_speculative(
                self.target.model, drafter, tokenizer, prompt_ids, params, tuner,
                record.speculation, record.timings, prefiller,
            )
        for chunk in chunks:
            record.token_ids.extend(chunk.token_ids)
            record.text += chunk.text
            record.finish_reason = chunk.finish_reason
            yield chunk

"""One entry point for generation: plain or speculative, with timings and statistics."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from draftwise.runtime.drafters.adaptive import AdaptiveDrafter, AdaptiveTuner
from draftwise.runtime.drafters.base import Drafter
from draftwise.runtime.drafters.draft_model import DraftModelDrafter
from draftwise.runtime.drafters.mtp import MTPDrafter, MTPWeights
from draftwise.runtime.drafters.ngram import NgramDrafter
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


def build_drafter(
    drafter: str,
    fixed: int | None,
    *,
    draft: Any = None,
    draft_head_rows: int | None = None,
    target: Any = None,
    mtp: MTPWeights | None = None,
) -> tuple[Drafter, DraftLengthTuner | AdaptiveTuner]:
    """Return a fresh drafter and its tuner for one sequence.

    ``drafter`` is "auto", "ngram", "draft_model" or "mtp"; ``fixed`` is a
    fixed draft length, or None for the tuner's choice. ``draft`` is the draft
    model's Transformer; the MTP drafter needs ``target`` and ``mtp``.
    """
    max_draft = max(MAX_DRAFT, fixed or 0)
    options: list[Drafter] = []
    if drafter in ("auto", "ngram"):
        options.append(NgramDrafter())
    if drafter in ("auto", "draft_model") and draft is not None:
        options.append(DraftModelDrafter(draft, max_draft, head_rows=draft_head_rows))
    if drafter in ("auto", "mtp") and mtp is not None:
        options.append(MTPDrafter(target, mtp, max_draft))
    if not options:
        raise GenerationError(
            f"drafter '{drafter}' needs a draft model or an MTP drafter, and none is loaded; "
            "pass --draft with one, or use --drafter ngram"
        )
    if fixed is not None or len(options) == 1:
        # A fixed length uses one drafter: the last one added.
        return options[-1], DraftLengthTuner(max_draft=max_draft, fixed=fixed)
    adaptive = AdaptiveDrafter(options, max_draft)
    return adaptive, adaptive.tuner


def parse_speculation(value: str | int) -> str | int:
    """Return "auto", "off" or a draft length from user input, or raise naming the value."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        k = int(value)
        if not 0 <= k <= 16:
            raise GenerationError(
                f"speculation length {k} is outside 0..16; use auto, off or 0..16"
            )
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


DRAFTERS = ("auto", "draft_model", "ngram", "mtp")


class Engine:
    """A target model and an optional draft model, ready to generate.

    ``drafter`` selects what proposes tokens: "auto" lets the tuner pick per
    round among n-gram drafts, the draft model and the MTP drafter (those
    loaded), "draft_model", "ngram" and "mtp" use one of them.
    ``draft_head_rows`` limits the draft model's output head to the first
    that many token ids (None: the whole vocabulary).
    """

    def __init__(
        self,
        target: LanguageModel,
        draft: LanguageModel | None = None,
        drafter: str = "auto",
        draft_head_rows: int | None = None,
        mtp: MTPWeights | None = None,
    ) -> None:
        if drafter not in DRAFTERS:
            raise GenerationError(
                f"drafter '{drafter}' is invalid; use one of {', '.join(DRAFTERS)}"
            )
        if drafter == "draft_model" and draft is None:
            raise GenerationError("drafter 'draft_model' needs a draft model; pass --draft NAME")
        if drafter == "mtp" and mtp is None:
            raise GenerationError(
                "drafter 'mtp' needs an MTP drafter; pass --draft qwen2.5-coder:1.5b-mtp"
            )
        if draft is not None:
            check_draft_compatible(target, draft)
        self.target = target
        self.draft = draft
        self.drafter = drafter
        self.draft_head_rows = draft_head_rows
        self.mtp = mtp

    def _make_drafter(self, fixed: int | None) -> tuple[Drafter, DraftLengthTuner | AdaptiveTuner]:
        return build_drafter(
            self.drafter,
            fixed,
            draft=None if self.draft is None else self.draft.model,
            draft_head_rows=self.draft_head_rows,
            target=self.target.model,
            mtp=self.mtp,
        )

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
        if speculation == "off":
            chunks = generate_plain(
                self.target.model, tokenizer, prompt_ids, params, record.timings, prefiller
            )
        else:
            fixed = None if speculation == "auto" else int(speculation)
            drafter, tuner = self._make_drafter(fixed)
            record.speculation = SpeculationStats()
            chunks = generate_speculative(
                self.target.model,
                drafter,
                tokenizer,
                prompt_ids,
                params,
                tuner,
                record.speculation,
                record.timings,
                prefiller,
            )
        for chunk in chunks:
            record.token_ids.extend(chunk.token_ids)
            record.text += chunk.text
            record.finish_reason = chunk.finish_reason
            yield chunk

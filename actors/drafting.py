"""Build a session's drafter and tuner, and watch the draft lengths the tuner picks."""

from __future__ import annotations

from typing import Any

from draftwise.runtime.drafters.adaptive import AdaptiveDrafter, AdaptiveTuner
from draftwise.runtime.drafters.base import Drafter
from draftwise.runtime.drafters.draft_model import DraftModelDrafter
from draftwise.runtime.engine import build_drafter
from draftwise.runtime.language_model import LanguageModel


def make_drafter(
    draft: LanguageModel | None, drafter_name: str, speculation: str | int
) -> tuple[Drafter, Any]:
    """Return the drafter and tuner `Engine` would use for these settings.

    ``drafter_name`` is "auto", "draft_model" or "ngram"; ``speculation`` is
    "auto" or a fixed draft length.
    """
    fixed = None if speculation == "auto" else int(speculation)
    return build_drafter(drafter_name, fixed, draft=None if draft is None else draft.model)


def drafter_uses_model(drafter: Drafter) -> bool:
    """Return whether ``drafter`` runs the draft model, whose cache then needs the prompt."""
    if isinstance(drafter, DraftModelDrafter):
        return True
    if isinstance(drafter, AdaptiveDrafter):
        return any(isinstance(o.drafter, DraftModelDrafter) for o in drafter.options.values())
    return False


class RecordingTuner:
    """A tuner that remembers the draft length it chose last; the rest is the wrapped tuner's."""

    def __init__(self, inner: Any, drafter: Drafter | None = None) -> None:
        self.inner = inner
        self.drafter = drafter
        self.last_choice = 0
        # Rounds in the target pass this session's round shares (1: alone).
        self.company = 1

    @property
    def max_draft(self) -> int:
        return int(self.inner.max_draft)

    def choose(self, limit: int | None = None) -> int:
        if isinstance(self.inner, AdaptiveTuner):
            self.inner.allow_model_drafts = self.company <= 1
        self.last_choice = int(self.inner.choose(limit))
        return self.last_choice

    def record(self, num_drafted: int, num_accepted: int, seconds: float) -> None:
        self.inner.record(num_drafted, num_accepted, seconds)

    def drafter_name(self) -> str:
        """Return the name of the last round's drafter, as `SpeculationStats` names it."""
        drafter = self.drafter
        if drafter is None:
            return "none"
        return str(getattr(drafter, "active", None) or getattr(drafter, "name", "none"))

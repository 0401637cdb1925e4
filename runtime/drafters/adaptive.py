"""Choose the drafter per round: plain decoding, n-gram drafts or the draft model.

Each option keeps its own `DraftLengthTuner`, so acceptance and the cost of a
round are learned per drafter. Every round queries each option for its best
draft length and expected tokens per second, and runs the best one. An
n-gram option only counts when the context has a match right now.

With both an n-gram drafter and a draft model, a third option drafts the
n-gram match and lets the draft model continue past its end, for matches
shorter than the draft length.

The n-gram option learns acceptance per class of match length, because
the length of the matched suffix predicts acceptance: replaying the n-gram
drafter over the plain outputs of 20 workload prompts (256 tokens each),
the first proposed token was accepted after 45% of 2-token matches, 48% of
3-token ones, 69% of 4- to 7-token ones and 86% of 8-token ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from draftwise.runtime.drafters.base import Drafter, DraftProposal
from draftwise.runtime.drafters.draft_model import DraftModelDrafter
from draftwise.runtime.drafters.ngram import NgramDrafter
from draftwise.runtime.sampling import SamplingParams
from draftwise.runtime.tuner import PROBE_LENGTH, DraftLengthTuner

# The option that extends an n-gram match with the draft model.
COMBINED = "ngram+draft_model"

# While a round shares its target pass, a cheap drafter may draft only when
# its estimated acceptance at the first position is at least this. Measured
# with 4 concurrent chat sessions on the real models: n-gram drafts at about
# 0.6 acceptance took throughput from 2.4x to 1.9x of one session.
SHARED_MIN_ACCEPTANCE = 0.8


# Once the draft model has drafted in a request, it only drafts again while
# it lags the committed text by at most this many tokens. A round that lets
# it draft first feeds it every token committed while it sat out. After a
# long stretch of plain decoding that catch-up is a prefill costing many
# draft steps. On the first 10 workload prompts with int8 math, probes after
# plain stretches took auto speculation to 0.86x of plain decoding on
# polyglot. Once it lags further, the n-gram drafter still probes, and the
# draft model sits out the rest of the request. Until its first draft (a
# session that shared every pass so far, for example) it may catch up once.
MAX_DRAFT_MODEL_BACKLOG = 8

# Bounds of the n-gram match classes: class i contains the lengths from
# NGRAM_MATCH_CLASSES[i - 1] (from the shortest for i = 0) up to NGRAM_MATCH_CLASSES[i] - 1,
# and the last class every length from NGRAM_MATCH_CLASSES[-1] on.
NGRAM_MATCH_CLASSES = (4, 8)


@dataclass
class _Option:
    drafter: Drafter | None  # None for COMBINED, which runs two of the other options' drafters
    # The tuner for this round. For the n-gram option it is the one of the current match's class.
    tuner: DraftLengthTuner
    # The n-gram option's tuners, one per match class, sharing the round timings.
    classes: list[DraftLengthTuner] | None = None


def _option(drafter: Drafter, max_draft: int) -> _Option:
    tuner = DraftLengthTuner(max_draft=max_draft)
    if not isinstance(drafter, NgramDrafter):
        return _Option(drafter, tuner)
    classes = [tuner] + [tuner.sibling() for _ in NGRAM_MATCH_CLASSES]
    return _Option(drafter, tuner, classes)


def match_class(length: int) -> int:
    """Return the class (index into an option's ``classes``) of an n-gram match length."""
    return sum(length >= bound for bound in NGRAM_MATCH_CLASSES)


class AdaptiveDrafter:
    """A `Drafter` over several drafters; `tuner` picks the drafter and length per round.

    Sub-drafters that sit out a round still see its committed tokens, so any
    of them can draft the next round.
    """

    def __init__(self, drafters: Sequence[Drafter], max_draft: int = 8) -> None:
        if not drafters:
            raise ValueError("AdaptiveDrafter needs at least one drafter")
        self.name = "adaptive"
        self.options = {d.name: _option(d, max_draft) for d in drafters}
        self.ngram = next((d for d in drafters if isinstance(d, NgramDrafter)), None)
        self.draft_model = next((d for d in drafters if isinstance(d, DraftModelDrafter)), None)
        if self.ngram is not None and self.draft_model is not None:
            self.options[COMBINED] = _Option(None, DraftLengthTuner(max_draft=max_draft))
        self.active: str | None = None
        self.draft_model_tried = False  # whether the draft model drafted in this request
        self.tuner = AdaptiveTuner(self, max_draft)

    def _drafters(self) -> list[tuple[str, Drafter]]:
        return [(name, o.drafter) for name, o in self.options.items() if o.drafter is not None]

    def start(self, prompt_ids: Sequence[int], prefiller: Any) -> None:
        self.draft_model_tried = False
        for _, drafter in self._drafters():
            drafter.start(prompt_ids, prefiller)

    def select_match_class(self) -> None:
        """Point the n-gram option's tuner at the class of the current match."""
        if self.ngram is None:
            return
        option = self.options[self.ngram.name]
        length = self.ngram.match_length()
        if option.classes is not None and length > 0:
            option.tuner = option.classes[match_class(length)]

    def available(self, name: str, cap: int) -> int:
        """Return how many tokens option ``name`` can propose now, at most ``cap``."""
        uses_model = name == COMBINED or isinstance(self.options[name].drafter, DraftModelDrafter)
        if uses_model:
            assert self.draft_model is not None
            if self.draft_model_tried and self.draft_model.backlog > MAX_DRAFT_MODEL_BACKLOG:
                return 0
        if name == COMBINED:
            # Only worth it when a match exists but ends before the draft length.
            assert self.ngram is not None
            matched = len(self.ngram.peek(cap))
            return cap if 0 < matched < cap else 0
        drafter = self.options[name].drafter
        if isinstance(drafter, NgramDrafter):
            return len(drafter.peek(cap))
        return cap

    def propose(
        self, num_tokens: int, sampling: SamplingParams, keys: list[mx.array] | None
    ) -> DraftProposal:
        proposal = DraftProposal(mx.zeros((0,), dtype=mx.uint32), None)
        combined = self.active == COMBINED and num_tokens > 0
        if combined:
            assert self.ngram is not None and self.draft_model is not None
            prefix = self.ngram.peek(num_tokens)
            proposal = self.draft_model.propose_after(
                prefix, num_tokens - len(prefix), sampling, keys
            )
        for name, drafter in self._drafters():
            if combined and drafter is self.draft_model:
                continue
            if name == self.active and num_tokens > 0:
                proposal = drafter.propose(num_tokens, sampling, keys)
            else:
                drafter.propose(0, sampling, None)
        return proposal

    def commit(self, num_accepted: int, committed_ids: Sequence[int]) -> None:
        if self.draft_model is not None and self.active in (COMBINED, self.draft_model.name):
            self.draft_model_tried = True
        for name, drafter in self._drafters():
            drafted = name == self.active or (
                self.active == COMBINED and drafter is self.draft_model
            )
            drafter.commit(num_accepted if drafted else 0, committed_ids)


class AdaptiveTuner:
    """The tuner interface (`choose`, `record`, `max_draft`) for an AdaptiveDrafter."""

    def __init__(self, drafter: AdaptiveDrafter, max_draft: int) -> None:
        self.drafter = drafter
        self.max_draft = max_draft
        # False while the round shares its target pass with other sessions.
        # Draft-model steps then run one session after another, and every
        # drafted row lengthens the pass all of them wait for, so only n-gram
        # drafts that are nearly always accepted still pay (see `_options`).
        self.allow_model_drafts = True

    def _cheap_options(self) -> list[tuple[str, _Option]]:
        return [
            (name, option)
            for name, option in self.drafter.options.items()
            if name != COMBINED and not isinstance(option.drafter, DraftModelDrafter)
        ]

    def _options(self) -> list[tuple[str, _Option]]:
        """Return the options that may draft this round."""
        if self.allow_model_drafts:
            return list(self.drafter.options.items())
        return [
            (name, option)
            for name, option in self._cheap_options()
            if option.tuner.acceptance()[0] >= SHARED_MIN_ACCEPTANCE
        ]

    def choose(self, limit: int | None = None) -> int:
        cap = self.max_draft if limit is None else max(0, min(self.max_draft, limit))
        self.drafter.select_match_class()
        # Each option's best() weighs its own k = 0 (plain decoding) too, so an
        # option that prefers drafting beats plain decoding by its own estimate.
        best_name, best_k, best_rate = None, 0, 0.0
        for name, option in self._options():
            k, rate = option.tuner.best(self.drafter.available(name, cap))
            if k > 0 and rate > best_rate:
                best_name, best_k, best_rate = name, k, rate
        if best_name is None:
            # Probes keep the acceptance estimates current, also while sharing.
            probing = (
                list(self.drafter.options.items())
                if self.allow_model_drafts
                else self._cheap_options()
            )
            for name, option in probing:
                available = self.drafter.available(name, cap)
                if option.tuner.wants_probe(available):
                    best_name, best_k = name, min(PROBE_LENGTH, available)
                    break
        self.drafter.active = best_name
        return best_k

    def record(self, num_drafted: int, num_accepted: int, seconds: float) -> None:
        for name, option in self.drafter.options.items():
            if name == self.drafter.active:
                option.tuner.record(num_drafted, num_accepted, seconds)
            elif num_drafted == 0:
                option.tuner.record(0, 0, seconds)
            else:
                option.tuner.rounds_since_draft += 1

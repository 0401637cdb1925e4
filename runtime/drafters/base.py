"""The drafter interface: propose tokens for the target to verify."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import mlx.core as mx

from draftwise.runtime.sampling import SamplingParams


@dataclass(frozen=True)
class DraftProposal:
    """Lazy draft tokens ``[k]`` and, when sampling, the drafter's probabilities ``[k, vocab]``.

    ``probs`` is None for greedy decoding, and for drafters whose proposals
    are deterministic (their q is one-hot on the proposed token).
    """

    draft_token_ids: mx.array
    probs: mx.array | None

    @property
    def num_drafted(self) -> int:
        return int(self.draft_token_ids.shape[0])


class Drafter(Protocol):
    """Proposes tokens that continue the committed sequence.

    The runner calls `start` once with the prompt, then per round `propose`
    (which may only build a lazy graph) and, after verification, `commit`
    with the tokens that were committed in that round.
    """

    name: str

    def start(self, prompt_ids: Sequence[int], prefiller: Any) -> None:
        """Reset for a new sequence whose first ``len(prompt_ids)`` tokens are known.

        ``prefiller`` (a `draftwise.runtime.generate.Prefiller`) fills a model's
        cache; drafters without a model ignore it.
        """
        ...

    def propose(
        self, num_tokens: int, sampling: SamplingParams, keys: list[mx.array] | None
    ) -> DraftProposal:
        """Build the graph for ``num_tokens`` proposals following the committed tokens."""
        ...

    def commit(self, num_accepted: int, committed_ids: Sequence[int]) -> None:
        """Record that the first ``num_accepted`` proposals were accepted.

        ``committed_ids`` are all tokens committed in the round (accepted
        proposals, then the target's own token), possibly fewer when
        generation stopped inside the run.
        """
        ...

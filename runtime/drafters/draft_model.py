"""A drafter that runs a smaller model with the same tokenizer as the target."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import mlx.core as mx

from draftwise.runtime.drafters.base import DraftProposal
from draftwise.runtime.generate import Prefiller, fresh_prefill
from draftwise.runtime.models.transformer import Transformer
from draftwise.runtime.sampling import SamplingParams, filtered_logprobs


class DraftModelDrafter:
    """Draft with a small model, keeping its KV cache in step with the target.

    The draft cache contains every committed token except those in
    ``_pending``: the newest committed token, plus the last proposal when a
    round accepted all of them (it was never fed to the draft model).
    """

    def __init__(
        self, model: Transformer, max_draft: int = 16, head_rows: int | None = None
    ) -> None:
        # A shallow copy, so limiting its output head leaves the caller's model whole.
        self.model = copy.copy(model)
        self.vocab_size = model.config.vocab_size
        if head_rows is not None and head_rows < self.vocab_size:
            self.model.limit_head(head_rows)
        self.name = "draft_model"
        self.max_draft = max_draft
        self.cache = model.make_cache(max_rollback=max_draft + 2)
        self._pending: list[int] = []
        self._round_start = 0
        self._round_fed_pending = 0  # pending tokens the current round fed
        self._round_fed_proposals = 0  # proposals the current round fed (k - 1)

    def start(self, prompt_ids: Sequence[int], prefiller: Prefiller = fresh_prefill) -> None:
        # The target's first token has no draft-cache entry yet: it stays pending.
        if len(prompt_ids) > 1:
            self.cache, _ = prefiller(self.model, prompt_ids[:-1], self.max_draft + 2)
        else:
            self.cache = self.model.make_cache(max_rollback=self.max_draft + 2)
        self._pending = [prompt_ids[-1]]

    @property
    def backlog(self) -> int:
        """Return how many committed tokens the next draft must feed the model first."""
        return len(self._pending)

    def extend_pending(self, token_id: int) -> None:
        """Append a committed token that the runner obtained without this drafter."""
        self._pending.append(token_id)

    def propose(
        self, num_tokens: int, sampling: SamplingParams, keys: list[mx.array] | None
    ) -> DraftProposal:
        return self.propose_after([], num_tokens, sampling, keys)

    def propose_after(
        self,
        prefix: Sequence[int],
        num_tokens: int,
        sampling: SamplingParams,
        keys: list[mx.array] | None,
    ) -> DraftProposal:
        """Propose ``prefix`` (drafted elsewhere), then ``num_tokens`` of the model's own.

        The prefix runs through the draft model in the same forward as the
        pending tokens, so the model continues from where the prefix ends.
        Prefix tokens were chosen deterministically, so when sampling their
        draft probabilities are one-hot.
        """
        self._round_start = self.cache.checkpoint()
        self._round_fed_pending = 0
        self._round_fed_proposals = 0
        prefix = list(prefix)
        if num_tokens == 0:
            return DraftProposal(mx.array(prefix, dtype=mx.uint32), None)
        self._round_fed_pending = len(self._pending)
        self._round_fed_proposals = len(prefix) + num_tokens - 1
        tokens: list[mx.array] = [mx.array(prefix, dtype=mx.uint32)] if prefix else []
        probs: list[mx.array] = []
        if prefix and not sampling.greedy:
            one_hot = mx.arange(self.vocab_size)[None, :] == mx.array(prefix)[:, None]
            probs.append(one_hot.astype(mx.float32))
        inputs = mx.array(self._pending + prefix, dtype=mx.uint32)
        for step in range(num_tokens):
            logits = self.model(inputs, self.cache, last_row_only=True).logits  # [1, vocab]
            if sampling.greedy:
                token = mx.argmax(logits, axis=-1).astype(mx.uint32)  # [1]
            else:
                assert keys is not None
                key = keys[len(prefix) + step]
                logprobs = filtered_logprobs(logits, sampling)
                token = mx.random.categorical(logprobs, axis=-1, key=key).astype(mx.uint32)
                probs.append(self._full_width(mx.exp(logprobs)))
            tokens.append(token)
            inputs = token
        draft = mx.concatenate(tokens)
        return DraftProposal(draft, mx.concatenate(probs) if probs else None)

    def _full_width(self, probs: mx.array) -> mx.array:
        """Pad ``[1, head_rows]`` probabilities with zeros to ``[1, vocab]``."""
        missing = self.vocab_size - probs.shape[-1]
        if missing == 0:
            return probs
        return mx.concatenate([probs, mx.zeros((probs.shape[0], missing), probs.dtype)], axis=-1)

    def commit(self, num_accepted: int, committed_ids: Sequence[int]) -> None:
        """Rewind the draft cache to the committed prefix and queue what it still lacks."""
        # Accepted proposals that the round fed are valid cache entries, except
        # the newest committed token, which always stays pending.
        valid = min(num_accepted, self._round_fed_proposals, len(committed_ids) - 1)
        valid = max(valid, 0)
        self.cache.rollback(self._round_start + self._round_fed_pending + valid)
        unfed = self._pending if self._round_fed_pending == 0 else []
        self._pending = unfed + list(committed_ids[valid:])

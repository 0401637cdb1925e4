"""Token selection: greedy, temperature/top-k/top-p sampling, seeded keys.

`filtered_logprobs` is the one place where temperature, top-k and top-p
shape a distribution, so the target's p and the drafter's q of speculative
sampling are always transformed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from draftwise.runtime.errors import GenerationError


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings. ``temperature == 0`` selects greedy decoding.

    ``top_k == 0`` and ``top_p == 1`` disable those filters.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise GenerationError(
                f"temperature {self.temperature} is negative; use 0 for greedy decoding or a "
                "positive value to sample"
            )
        if self.top_k < 0:
            raise GenerationError(f"top_k {self.top_k} is negative; use 0 to disable top-k")
        if not 0.0 < self.top_p <= 1.0:
            raise GenerationError(
                f"top_p {self.top_p} is outside (0, 1]; use 1.0 to disable nucleus sampling"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def filtered_logprobs(logits: mx.array, params: SamplingParams) -> mx.array:
    """Return log-probabilities ``[rows, vocab]`` after temperature, top-k and top-p.

    Filtered-out tokens get ``-inf``. Only meaningful for ``temperature > 0``.
    """
    scaled = logits.astype(mx.float32) / params.temperature
    vocab = scaled.shape[-1]
    if 0 < params.top_k < vocab:
        kth = mx.sort(scaled, axis=-1)[..., vocab - params.top_k][..., None]
        scaled = mx.where(scaled < kth, -mx.inf, scaled)
    logprobs = scaled - mx.logsumexp(scaled, axis=-1, keepdims=True)
    if params.top_p < 1.0:
        order = mx.argsort(-logprobs, axis=-1)
        sorted_probs = mx.exp(mx.take_along_axis(logprobs, order, axis=-1))
        # Keep a token while the mass before it is below top_p, so the most
        # likely token always stays.
        mass_before = mx.cumsum(sorted_probs, axis=-1) - sorted_probs
        keep_sorted = mass_before < params.top_p
        keep = mx.put_along_axis(mx.zeros_like(keep_sorted), order, keep_sorted, axis=-1)
        scaled = mx.where(keep, logprobs, -mx.inf)
        logprobs = scaled - mx.logsumexp(scaled, axis=-1, keepdims=True)
    return logprobs


def select_tokens(logits: mx.array, params: SamplingParams, key: mx.array | None) -> mx.array:
    """Pick one token per row of ``logits`` ``[rows, vocab]``; returns ``[rows]`` (lazy)."""
    if params.greedy:
        return mx.argmax(logits, axis=-1)
    return mx.random.categorical(filtered_logprobs(logits, params), axis=-1, key=key)


class KeySequence:
    """Deterministic per-step random keys derived from a seed.

    Step ``i`` always gets the same key for the same seed, however the steps
    are grouped into rounds.
    """

    def __init__(self, seed: int | None) -> None:
        if seed is None:
            seed = int(mx.random.randint(0, 2**31 - 1, shape=()).tolist())  # type: ignore[arg-type]
        self.seed = seed

    def key(self, step: int) -> mx.array:
        return mx.random.key((self.seed * 1_000_003 + step) % 2**63)

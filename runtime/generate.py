"""Plain (non-speculative) generation: prefill, then one token per step."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import mlx.core as mx

from draftwise.runtime.arrays import scalar_int
from draftwise.runtime.cache import ModelCache
from draftwise.runtime.errors import GenerationError
from draftwise.runtime.models.transformer import Transformer
from draftwise.runtime.sampling import KeySequence, SamplingParams, select_tokens
from draftwise.runtime.stepping import EvalCall, ForwardCall, StepGenerator, drive
from draftwise.runtime.termination import StopConditions

# Prefill runs in chunks of this many tokens, bounding the memory of one
# attention block.
PREFILL_CHUNK = 512


class TokenizerLike(Protocol):
    @property
    def eos_token_ids(self) -> frozenset[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class GenerationParams:
    """Generation settings: sampling, the token budget and stop strings."""

    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int = 256
    stop: tuple[str, ...] = ()


@dataclass
class Timings:
    prefill_s: float = 0.0
    decode_s: float = 0.0
    prompt_tokens: int = 0
    generated_tokens: int = 0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        # The first token comes from the prefill pass, so decoding made the rest.
        decoded = max(self.generated_tokens - 1, 0)
        return decoded / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s

    def as_dict(self) -> dict[str, float]:
        return {
            "prefill_s": round(self.prefill_s, 4),
            "decode_s": round(self.decode_s, 4),
            "prefill_tokens_per_s": round(self.prefill_tokens_per_s, 2),
            "decode_tokens_per_s": round(self.decode_tokens_per_s, 2),
            "total_s": round(self.total_s, 4),
        }


@dataclass(frozen=True)
class GenerationChunk:
    """Tokens committed in one step and the text they release."""

    token_ids: list[int]
    text: str
    finish_reason: str | None


def prefill(model: Transformer, cache: ModelCache, token_ids: Sequence[int]) -> mx.array:
    """Run ``token_ids`` through the model, filling ``cache``.

    Returns the logits ``[1, vocab]`` after the last token.
    """
    if not token_ids:
        raise GenerationError("the prompt is empty; pass at least one token")
    logits = None
    for start in range(0, len(token_ids), PREFILL_CHUNK):
        chunk = mx.array(list(token_ids[start : start + PREFILL_CHUNK]), dtype=mx.uint32)
        logits = model(chunk, cache, last_row_only=True).logits
        mx.eval(logits, *cache.state())
    assert logits is not None
    return logits


class Prefiller(Protocol):
    """Return a cache holding ``prompt_ids`` and the logits ``[1, vocab]`` after the last one."""

    def __call__(
        self, model: Transformer, prompt_ids: Sequence[int], max_rollback: int
    ) -> tuple[ModelCache, mx.array]: ...


def fresh_prefill(
    model: Transformer, prompt_ids: Sequence[int], max_rollback: int
) -> tuple[ModelCache, mx.array]:
    """Prefill into a new cache (the default `Prefiller`)."""
    cache = model.make_cache(max_rollback=max_rollback)
    return cache, prefill(model, cache, prompt_ids)


def check_context(model: Transformer, prompt_tokens: int, max_tokens: int) -> int:
    """Return the token budget that fits the context, or raise when the prompt alone does not."""
    limit = model.config.context_length
    if prompt_tokens >= limit:
        raise GenerationError(
            f"the prompt has {prompt_tokens} tokens but model '{model.name}' has a context of "
            f"{limit}; shorten the prompt"
        )
    return min(max_tokens, limit - prompt_tokens)


def generate_plain(
    model: Transformer,
    tokenizer: TokenizerLike,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    timings: Timings | None = None,
    prefiller: Prefiller = fresh_prefill,
) -> Iterator[GenerationChunk]:
    """Yield one chunk per generated token until EOS, a stop string or max_tokens."""
    return drive(plain_steps(model, tokenizer, prompt_ids, params, timings, prefiller))


def plain_steps(
    model: Transformer,
    tokenizer: TokenizerLike,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    timings: Timings | None = None,
    prefiller: Prefiller = fresh_prefill,
) -> StepGenerator:
    """`generate_plain` as a step generator (see `draftwise.runtime.stepping`)."""
    timings = timings if timings is not None else Timings()
    max_tokens = check_context(model, len(prompt_ids), params.max_tokens)
    stops = StopConditions(tokenizer.decode, tokenizer.eos_token_ids, params.stop, max_tokens)
    keys = KeySequence(params.sampling.seed) if not params.sampling.greedy else None

    started = time.perf_counter()
    cache, logits = prefiller(model, prompt_ids, 0)
    token = select_tokens(logits, params.sampling, keys.key(0) if keys else None)
    token_id = scalar_int(token)
    timings.prompt_tokens = len(prompt_ids)
    timings.prefill_s = time.perf_counter() - started

    started = time.perf_counter()
    step = 0
    while True:
        result = stops.feed([token_id])
        timings.generated_tokens += 1
        yield GenerationChunk([token_id], result.text, result.finish_reason)
        if result.finish_reason is not None:
            break
        step += 1
        output = yield ForwardCall(model, mx.array([token_id], dtype=mx.uint32), cache)
        assert output is not None
        token = select_tokens(output.logits, params.sampling, keys.key(step) if keys else None)
        yield EvalCall([token])
        token_id = scalar_int(token)
        timings.decode_s = time.perf_counter() - started


class PrefixCachePrefiller:
    """A `Prefiller` that remembers the caches of recent prompts.

    A prompt seen before (same model, same token ids) skips its prefill and
    continues from a snapshot of the stored cache. Benchmarks use it to
    run several decoding modes from one prefill.
    """

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._entries: dict[tuple[int, tuple[int, ...], int], tuple[ModelCache, mx.array]] = {}

    def __call__(
        self, model: Transformer, prompt_ids: Sequence[int], max_rollback: int
    ) -> tuple[ModelCache, mx.array]:
        key = (id(model), tuple(prompt_ids), max_rollback)
        entry = self._entries.pop(key, None)
        if entry is None:
            entry = fresh_prefill(model, prompt_ids, max_rollback)
        self._entries[key] = entry
        while len(self._entries) > self.capacity:
            self._entries.pop(next(iter(self._entries)))
        cache, logits = entry
        return cache.snapshot(), logits

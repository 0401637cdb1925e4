"""Step generators advanced together: shared target passes, same tokens, isolated failures."""

from __future__ import annotations

import mlx.core as mx
import pytest
from fakes import CharTokenizer, tiny_model

from draftwise.runtime import stepping
from draftwise.runtime.drafters.draft_model import DraftModelDrafter
from draftwise.runtime.generate import GenerationParams, generate_plain, plain_steps
from draftwise.runtime.speculative import speculative_steps
from draftwise.runtime.tuner import DraftLengthTuner

TOKENIZER = CharTokenizer()
PROMPTS = ["def add(a, b):", "for i in range(10):", "x = [", "import os\nimport sys\n"]


def _ids(text: str) -> list[int]:
    return TOKENIZER.encode(text)


def _solo(model, prompt: str, max_tokens: int) -> list[int]:
    params = GenerationParams(max_tokens=max_tokens)
    return [t for c in generate_plain(model, TOKENIZER, _ids(prompt), params) for t in c.token_ids]


def _run_together(generators):
    """Advance all generators together until each has finished; return their tokens."""
    tokens = [[] for _ in generators]
    live = list(range(len(generators)))
    while live:
        results = stepping.advance_together([generators[i] for i in live])
        still = []
        for i, result in zip(live, results, strict=True):
            chunk = result.unwrap()
            if chunk is None:
                continue
            tokens[i].extend(chunk.token_ids)
            if chunk.finish_reason is None:
                still.append(i)
        live = still
    return tokens


@pytest.fixture(scope="module")
def target():
    return tiny_model(seed=0)


def test_plain_generators_together_match_solo(target, monkeypatch):
    passes = []
    original = target.forward_many

    def counting(token_ids, caches):
        passes.append(len(token_ids))
        return original(token_ids, caches)

    monkeypatch.setattr(target, "forward_many", counting)
    params = GenerationParams(max_tokens=12)
    generators = [plain_steps(target, TOKENIZER, _ids(p), params) for p in PROMPTS]
    tokens = _run_together(generators)
    for prompt, got in zip(PROMPTS, tokens, strict=True):
        assert got == _solo(target, prompt, 12)
    assert passes and max(passes) == len(PROMPTS)


def test_speculative_and_plain_together_match_solo(target):
    params = GenerationParams(max_tokens=16)
    generators = [
        speculative_steps(
            target,
            DraftModelDrafter(tiny_model(seed=0)),
            TOKENIZER,
            _ids(PROMPTS[0]),
            params,
            DraftLengthTuner(fixed=3),
        ),
        plain_steps(target, TOKENIZER, _ids(PROMPTS[1]), params),
        speculative_steps(
            target,
            DraftModelDrafter(tiny_model(seed=7)),
            TOKENIZER,
            _ids(PROMPTS[2]),
            params,
            DraftLengthTuner(fixed=5),
        ),
    ]
    tokens = _run_together(generators)
    for prompt, got in zip(PROMPTS[:3], tokens, strict=True):
        assert got == _solo(target, prompt, 16)


def test_failing_sequence_spares_others(target, monkeypatch):
    params = GenerationParams(max_tokens=10)
    bad_cache = {}
    original_call = type(target).__call__

    def failing_forward_many(token_ids, caches):
        if any(id(c) in bad_cache for c in caches):
            raise RuntimeError("injected fault in a shared pass")
        return type(target).forward_many(target, token_ids, caches)

    def failing_call(self, token_ids, cache, **kw):
        if id(cache) in bad_cache and cache.kv_offset >= bad_cache[id(cache)]:
            raise RuntimeError("injected fault")
        return original_call(self, token_ids, cache, **kw)

    monkeypatch.setattr(target, "forward_many", failing_forward_many)
    monkeypatch.setattr(type(target), "__call__", failing_call)

    def poisoned_prefill(model, prompt_ids, max_rollback):
        cache = model.make_cache(max_rollback)
        from draftwise.runtime.generate import prefill

        logits = prefill(model, cache, prompt_ids)
        bad_cache[id(cache)] = cache.kv_offset + 2
        return cache, logits

    generators = [plain_steps(target, TOKENIZER, _ids(p), params) for p in PROMPTS[:2]]
    generators.append(
        plain_steps(target, TOKENIZER, _ids(PROMPTS[2]), params, prefiller=poisoned_prefill)
    )
    tokens = [[] for _ in generators]
    failed = []
    live = [0, 1, 2]
    while live:
        results = stepping.advance_together([generators[i] for i in live])
        still = []
        for i, result in zip(live, results, strict=True):
            try:
                chunk = result.unwrap()
            except RuntimeError as error:
                failed.append((i, str(error)))
                continue
            tokens[i].extend(chunk.token_ids)
            if chunk.finish_reason is None:
                still.append(i)
        live = still
    assert failed == [(2, "injected fault")]
    assert tokens[0] == _solo(target, PROMPTS[0], 10)
    assert tokens[1] == _solo(target, PROMPTS[1], 10)


def test_forward_many_rejects_mismatched_inputs(target):
    cache = target.make_cache()
    with pytest.raises(ValueError, match="2 token arrays but 1 caches"):
        target.forward_many([mx.array([1], dtype=mx.uint32)] * 2, [cache])
    with pytest.raises(ValueError, match="at least one new token"):
        target.forward_many([mx.array([], dtype=mx.uint32)], [cache])

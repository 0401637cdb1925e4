"""KV cache rollback contract and snapshots."""

from __future__ import annotations

import mlx.core as mx
import pytest
from fakes import CharTokenizer, tiny_model

from draftwise.runtime.cache import LayerCache, ModelCache
from draftwise.runtime.errors import RollbackError
from draftwise.runtime.generate import (
    GenerationParams,
    PrefixCachePrefiller,
    generate_plain,
    prefill,
)


def filled_cache(num_positions: int, window: int = 0, max_rollback: int = 4) -> ModelCache:
    cache = ModelCache([LayerCache(window, max_rollback) for _ in range(2)])
    for layer in cache.layers:
        for position in range(num_positions):
            value = mx.full((1, 1, 2), float(position))
            layer.append(value, value)
    return cache


def test_rollback_returns_removed_count():
    cache = filled_cache(10)
    assert cache.rollback(7) == 3
    assert cache.kv_offset == 7
    assert cache.rollback(7) == 0


def test_rollback_beyond_offset_rejected():
    cache = filled_cache(5)
    with pytest.raises(RollbackError, match="kv_offset 6"):
        cache.rollback(6)
    assert cache.kv_offset == 5


def test_append_after_rollback_overwrites():
    cache = filled_cache(6)
    cache.rollback(3)
    layer = cache.layers[0]
    keys, _, start = layer.append(mx.full((1, 1, 2), 99.0), mx.full((1, 1, 2), 99.0))
    assert start == 0
    assert keys.shape[1] == 4
    assert keys[0, :, 0].tolist() == [0.0, 1.0, 2.0, 99.0]


def test_sliding_layer_keeps_window_plus_rollback():
    window, max_rollback = 8, 4
    cache = filled_cache(600, window=window, max_rollback=max_rollback)
    layer = cache.layers[0]
    assert layer.start > 0
    earliest = layer.earliest_rollback()
    assert earliest <= 600 - max_rollback
    cache.rollback(600 - max_rollback)
    with pytest.raises(RollbackError, match="sliding-window"):
        cache.rollback(earliest - 1)


def test_snapshot_independent_of_later_writes():
    cache = filled_cache(4)
    copy = cache.snapshot()
    cache.rollback(2)
    cache.layers[0].append(mx.full((1, 1, 2), 7.0), mx.full((1, 1, 2), 7.0))
    assert copy.kv_offset == 4
    assert copy.layers[0].keys[0, :4, 0].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_prefix_cache_prefiller_reproduces_fresh_output():
    model = tiny_model(seed=1)
    tokenizer = CharTokenizer()
    prompt = tokenizer.encode("class Stack:")
    params = GenerationParams(max_tokens=24)
    fresh = [t for c in generate_plain(model, tokenizer, prompt, params) for t in c.token_ids]
    prefiller = PrefixCachePrefiller()
    runs = [
        [
            t
            for c in generate_plain(model, tokenizer, prompt, params, prefiller=prefiller)
            for t in c.token_ids
        ]
        for _ in range(3)
    ]
    assert runs == [fresh] * 3


def test_prefill_chunks_match_single_pass():
    model = tiny_model(seed=1, context_length=2048)
    tokens = [(i * 7) % 90 for i in range(600)]
    whole = model.make_cache()
    logits = prefill(model, whole, tokens)
    assert whole.kv_offset == 600
    assert logits.shape == (1, model.config.vocab_size)

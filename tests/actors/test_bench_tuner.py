"""The wrong-drafter benchmark runs losslessly; the tuner's back-off itself is in test_tuner."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from fakes import CharTokenizer, tiny_model

from draftwise.actors.bench_tuner import bench_wrong_drafter, unlikely_token
from draftwise.runtime.generate import fresh_prefill
from draftwise.runtime.language_model import LanguageModel


def _language_model(vocab_size: int) -> LanguageModel:
    return LanguageModel(
        name="tiny",
        model=tiny_model(seed=3, vocab_size=vocab_size),
        tokenizer=CharTokenizer(),
        path=Path("/nonexistent"),
        source_sha256="0" * 64,
        load_s=0.0,
    )


def test_unlikely_token_has_the_lowest_logit():
    target = _language_model(96)
    prompt = [5, 6, 7]
    _, logits = fresh_prefill(target.model, prompt, 2)
    row = logits.reshape(-1)
    token = unlikely_token(target, prompt)
    assert row[token].item() == mx.min(row).item()


def test_bench_wrong_drafter_is_lossless():
    target = _language_model(128)
    result = bench_wrong_drafter(target, [5, 6, 7, 8, 5, 6], max_tokens=48, repeats=2)
    assert result["identical_to_plain"] is True
    assert len(result["draft_lengths"]) == result["rounds"]
    assert sum(result["draft_lengths"]) == result["num_drafted"]
    assert len(result["plain_tokens_per_s"]) == len(result["auto_tokens_per_s"]) == 2
    assert result["ratio"] > 0

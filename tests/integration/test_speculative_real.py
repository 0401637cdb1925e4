"""Speculative decoding on the real Qwen pair reproduces plain decoding token for token."""

from __future__ import annotations

import pytest
from real_models import load_or_skip

from draftwise.runtime.engine import Engine, GenerationRecord
from draftwise.runtime.errors import TokenizerMismatchError
from draftwise.runtime.generate import GenerationParams, PrefixCachePrefiller

PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Write a Go function that reverses a slice of ints in place.",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_real_speculative_greedy_matches_plain(target_lm, draft_lm, prompt):
    engine = Engine(target_lm, draft_lm)
    prompt_ids = engine.target.encode_messages([{"role": "user", "content": prompt}])
    params = GenerationParams(max_tokens=48)
    prefiller = PrefixCachePrefiller()
    records = {}
    for mode in ("off", 3, "auto"):
        record = GenerationRecord()
        for _ in engine.generate(prompt_ids, params, mode, record, prefiller):
            pass
        records[mode] = record
    plain = records["off"].token_ids
    assert len(plain) == 48 or records["off"].finish_reason == "eos"
    assert records[3].token_ids == plain
    assert records["auto"].token_ids == plain
    assert records[3].speculation is not None
    assert records[3].speculation.num_accepted > 0
    assert "```" in records["off"].text  # the model replies with a code block


def test_real_draft_with_other_tokenizer_rejected(target_lm):
    gemma = load_or_skip("gemma3:270m")
    with pytest.raises(TokenizerMismatchError, match="different tokenizer"):
        Engine(target_lm, gemma)

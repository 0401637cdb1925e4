"""The engine: drafter selection, speculation modes and draft compatibility checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import CharTokenizer, tiny_model

from draftwise.runtime.engine import Engine, GenerationRecord, parse_speculation
from draftwise.runtime.errors import GenerationError, TokenizerMismatchError
from draftwise.runtime.generate import GenerationParams
from draftwise.runtime.language_model import LanguageModel


class ChatCharTokenizer(CharTokenizer):
    def encode(self, text, *, add_special_tokens=False):
        return super().encode(text)

    def apply_chat_template(self, messages, *, add_generation_prompt=True, system=None):
        return "".join(m["content"] for m in messages)


class ShiftedTokenizer(ChatCharTokenizer):
    def encode(self, text, *, add_special_tokens=False):
        return [(t + 1) % 90 for t in super().encode(text)]


def language_model(seed: int, tokenizer=None) -> LanguageModel:
    return LanguageModel(
        name=f"tiny-{seed}",
        model=tiny_model(seed=seed),
        tokenizer=tokenizer or ChatCharTokenizer(),
        path=Path("/nonexistent"),
        source_sha256="0" * 64,
        load_s=0.0,
    )


def run(engine: Engine, prompt: str, speculation, max_tokens: int = 32) -> GenerationRecord:
    record = GenerationRecord()
    prompt_ids = engine.target.encode_messages([{"role": "user", "content": prompt}])
    for _ in engine.generate(
        prompt_ids, GenerationParams(max_tokens=max_tokens), speculation, record
    ):
        pass
    return record


@pytest.mark.parametrize("drafter", ["auto", "draft_model", "ngram"])
@pytest.mark.parametrize("speculation", ["auto", 3])
def test_engine_speculation_matches_plain(drafter, speculation):
    engine = Engine(language_model(1), language_model(1), drafter=drafter)
    prompt = "for i in range(3): print(i)\nfor i in range(3):"
    plain = run(engine, prompt, "off")
    spec = run(engine, prompt, speculation)
    assert spec.token_ids == plain.token_ids
    assert spec.text == plain.text
    assert spec.speculation is not None
    assert plain.speculation is None


def test_engine_without_draft_drafts_from_context():
    engine = Engine(language_model(1))
    record = run(engine, "abcabcabcabc", "auto")
    assert record.speculation is not None
    assert set(record.speculation.rounds_by_drafter) <= {"ngram", "none"}


def test_engine_rejects_draft_with_other_tokenizer():
    with pytest.raises(TokenizerMismatchError, match="different tokenizer"):
        Engine(language_model(1), language_model(2, ShiftedTokenizer()))


def test_engine_rejects_unknown_drafter():
    with pytest.raises(GenerationError, match="drafter 'magic'"):
        Engine(language_model(1), drafter="magic")


def test_engine_draft_model_drafter_needs_draft():
    with pytest.raises(GenerationError, match="needs a draft model"):
        Engine(language_model(1), drafter="draft_model")


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", "auto"), ("off", "off"), ("0", 0), ("8", 8), (16, 16)]
)
def test_parse_speculation_accepts(value, expected):
    assert parse_speculation(value) == expected


@pytest.mark.parametrize("value", ["17", "fast", "-1", ""])
def test_parse_speculation_rejects(value):
    with pytest.raises(GenerationError, match="speculation"):
        parse_speculation(value)


def test_record_as_dict_reports_speculation():
    engine = Engine(language_model(1), language_model(1))
    record = run(engine, "x = 1", 2)
    summary = record.as_dict()
    assert summary["speculation"]["num_drafted"] >= summary["speculation"]["num_accepted"]
    assert summary["finish_reason"] in ("length", "eos")
    assert summary["prompt_tokens"] == 5

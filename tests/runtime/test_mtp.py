"""The MTP drafter must leave speculative decoding lossless, greedy and sampled."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from fakes import CharTokenizer, tiny_model
from test_speculative_sampling import (
    PROMPT as DIGIT_PROMPT,
)
from test_speculative_sampling import (
    VOCAB as DIGIT_VOCAB,
)
from test_speculative_sampling import (
    DigitTokenizer,
    chi_square_p_value,
    exact_joint,
)

from draftwise.runtime.drafters.mtp import MTPDrafter, MTPWeights
from draftwise.runtime.drafters.mtp_config import config_for_target
from draftwise.runtime.drafters.mtp_model import random_parameters
from draftwise.runtime.generate import GenerationParams, fresh_prefill, generate_plain
from draftwise.runtime.sampling import SamplingParams
from draftwise.runtime.speculative import SpeculationStats, generate_speculative
from draftwise.runtime.tuner import DraftLengthTuner

TOKENIZER = CharTokenizer()
PROMPT = TOKENIZER.encode("def add(a, b):")


class ForcedTuner(DraftLengthTuner):
    """Replay a fixed sequence of draft lengths, then repeat its last value."""

    def __init__(self, lengths: list[int]) -> None:
        super().__init__(max_draft=8)
        self.lengths = list(lengths)
        self.calls = 0

    def choose(self, limit: int | None = None) -> int:
        k = self.lengths[min(self.calls, len(self.lengths) - 1)]
        self.calls += 1
        return min(k, limit if limit is not None else k)


def random_mtp(target, candidates: int | None = None, seed: int = 0, layers: int = 1) -> MTPWeights:
    vocab = target.config.vocab_size
    size = candidates or vocab
    config = config_for_target(
        target.config, num_hidden_layers=layers, intermediate_size=32, candidate_vocab_size=size
    )
    ids = np.random.default_rng(seed).permutation(vocab)[:size]
    return MTPWeights(config, random_parameters(config, seed), mx.array(np.sort(ids)))


@pytest.fixture(scope="module")
def target():
    return tiny_model(seed=1)


def plain_tokens(model, params, prompt=PROMPT, tokenizer=TOKENIZER):
    return [t for c in generate_plain(model, tokenizer, prompt, params) for t in c.token_ids]


def spec_tokens(model, drafter, tuner, params, prompt=PROMPT, stats=None, tokenizer=TOKENIZER):
    chunks = generate_speculative(model, drafter, tokenizer, prompt, params, tuner, stats)
    return [t for chunk in chunks for t in chunk.token_ids]


@pytest.mark.parametrize("candidates", [None, 40])
@pytest.mark.parametrize("k", range(9))
def test_mtp_greedy_matches_plain(target, k, candidates):
    params = GenerationParams(max_tokens=40)
    drafter = MTPDrafter(target, random_mtp(target, candidates), max_draft=8)
    stats = SpeculationStats()
    assert spec_tokens(target, drafter, DraftLengthTuner(fixed=k), params, stats=stats) == (
        plain_tokens(target, params)
    )
    if k > 0:
        assert stats.num_drafted > 0, "the MTP drafter proposed nothing"


@pytest.mark.parametrize("lengths", [[0, 3, 0, 8, 1], [8, 8, 2, 0, 5], [1, 0, 1, 7]])
def test_mtp_forced_length_sequence_matches_plain(target, lengths):
    params = GenerationParams(max_tokens=48)
    drafter = MTPDrafter(target, random_mtp(target, layers=2), max_draft=8)
    assert spec_tokens(target, drafter, ForcedTuner(lengths), params) == plain_tokens(
        target, params
    )


def test_mtp_proposes_only_candidates(target):
    weights = random_mtp(target, candidates=12, seed=3)
    drafter = MTPDrafter(target, weights, max_draft=8)
    allowed = set(np.array(weights.candidate_ids).tolist())
    cache, _ = fresh_prefill(target, PROMPT, 10)
    drafter.start([*PROMPT, 5])
    proposal = drafter.propose(6, SamplingParams(), None)
    assert proposal.num_drafted == 6
    assert set(np.array(proposal.draft_token_ids).tolist()) <= allowed
    del cache


def test_mtp_state_after_rejections_matches_fresh_prefill(target):
    """In-round states are dropped: the next round starts from the committed prefix only."""
    params = GenerationParams(max_tokens=30)
    drafter = MTPDrafter(target, random_mtp(target, seed=5), max_draft=8)
    stats = SpeculationStats()
    tokens = spec_tokens(target, drafter, DraftLengthTuner(fixed=4), params, stats=stats)
    assert stats.num_accepted < stats.num_drafted, "the test needs rejected proposals"
    assert drafter._token == tokens[-1]
    # The state must be the target's hidden state at the last committed
    # position before the newest token, as a fresh prefill computes it.
    committed = PROMPT + tokens[:-1]
    _, _ = fresh_prefill(target, committed, 10)
    expected = target.last_hidden
    assert drafter._state is not None
    np.testing.assert_allclose(np.array(drafter._state), np.array(expected), atol=2e-3, rtol=1e-3)


def test_mtp_long_context_matches_plain():
    model = tiny_model(seed=1, context_length=1024)
    prompt = TOKENIZER.encode("def long_function(a, b):\n    return a + b  # " * 14)
    assert len(prompt) > 300
    params = GenerationParams(max_tokens=40)
    reference = plain_tokens(model, params, prompt)
    drafter = MTPDrafter(model, random_mtp(model, seed=2), max_draft=8)
    assert spec_tokens(model, drafter, ForcedTuner([5, 8, 3]), params, prompt) == reference


def test_mtp_rejects_other_target(target):
    other = tiny_model(seed=1, hidden_size=32, intermediate_size=64)
    with pytest.raises(ValueError, match="does not fit target"):
        MTPDrafter(other, random_mtp(target))


@pytest.fixture(scope="module")
def digit_target():
    return tiny_model(seed=7, vocab_size=DIGIT_VOCAB, hidden_size=32, intermediate_size=64)


@pytest.mark.parametrize("candidates", [None, 4])
def test_mtp_sampling_matches_target_distribution(digit_target, candidates):
    sampling = SamplingParams(temperature=1.0)
    joint = exact_joint(digit_target, DIGIT_PROMPT, sampling, 3)
    weights = random_mtp(digit_target, candidates, seed=4)
    samples = []
    accepted = 0
    for seed in range(1000):
        params = GenerationParams(sampling=SamplingParams(1.0, seed=seed), max_tokens=3)
        drafter = MTPDrafter(digit_target, weights, max_draft=4)
        stats = SpeculationStats()
        chunks = generate_speculative(
            digit_target,
            drafter,
            DigitTokenizer(),
            DIGIT_PROMPT,
            params,
            DraftLengthTuner(fixed=2),
            stats,
        )
        samples.append(tuple(t for c in chunks for t in c.token_ids))
        accepted += stats.num_accepted
    assert accepted > 0, "no proposal was ever accepted: the test would not exercise acceptance"
    assert chi_square_p_value(samples, joint) > 0.01

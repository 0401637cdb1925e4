"""Speculative sampling must follow exactly the target's distribution."""

from __future__ import annotations

import itertools

import mlx.core as mx
import numpy as np
import pytest
from fakes import tiny_model
from scipy import stats as scipy_stats

from draftwise.runtime.drafters.adaptive import COMBINED, AdaptiveDrafter
from draftwise.runtime.drafters.draft_model import DraftModelDrafter
from draftwise.runtime.drafters.ngram import NgramDrafter
from draftwise.runtime.generate import GenerationParams, generate_plain
from draftwise.runtime.sampling import SamplingParams, filtered_logprobs
from draftwise.runtime.speculative import generate_speculative
from draftwise.runtime.tuner import DraftLengthTuner

VOCAB = 6
PROMPT = [1, 4, 2, 0, 3]


class DigitTokenizer:
    eos_token_ids: frozenset[int] = frozenset()

    def decode(self, token_ids):
        return "".join(str(t) for t in token_ids)


def exact_joint(model, prompt, params, length):
    """Return {sequence: probability} over every continuation of ``length`` tokens."""
    joint = {}
    for sequence in itertools.product(range(VOCAB), repeat=length):
        probability = 1.0
        for i in range(length):
            cache = model.make_cache()
            logits = model(mx.array(prompt + list(sequence[:i]), dtype=mx.uint32), cache).logits
            probs = mx.exp(filtered_logprobs(logits[-1:], params))[0]
            probability *= float(probs[sequence[i]].item())
        joint[sequence] = probability
    return joint


def chi_square_p_value(samples, joint):
    counts = {seq: 0 for seq in joint}
    for seq in samples:
        counts[seq] += 1
    total = len(samples)
    observed, expected = [], []
    rare_observed, rare_expected = 0, 0.0
    for seq, probability in joint.items():
        if probability * total < 5:
            rare_observed += counts[seq]
            rare_expected += probability * total
        else:
            observed.append(counts[seq])
            expected.append(probability * total)
    impossible = sum(counts[seq] for seq, probability in joint.items() if probability == 0.0)
    assert impossible == 0, f"{impossible} samples have probability 0 under the target"
    if rare_expected > 0:
        observed.append(rare_observed)
        expected.append(rare_expected)
    expected_array = np.array(expected) * total / sum(expected)
    return scipy_stats.chisquare(observed, expected_array).pvalue


@pytest.fixture(scope="module")
def models():
    target = tiny_model(seed=7, vocab_size=VOCAB, hidden_size=32, intermediate_size=64)
    draft = tiny_model(seed=8, vocab_size=VOCAB, hidden_size=32, intermediate_size=64)
    return target, draft


@pytest.mark.parametrize(
    "sampling",
    [SamplingParams(temperature=1.0), SamplingParams(temperature=0.8, top_k=4, top_p=0.9)],
    ids=["t1", "topk_topp"],
)
def test_speculative_sampling_matches_target_distribution(models, sampling):
    target, draft = models
    joint = exact_joint(target, PROMPT, sampling, 3)
    tokenizer = DigitTokenizer()
    samples = []
    drafter = DraftModelDrafter(draft)
    accepted = 0
    for seed in range(1000):
        params = GenerationParams(
            sampling=SamplingParams(sampling.temperature, sampling.top_k, sampling.top_p, seed),
            max_tokens=3,
        )
        chunks = generate_speculative(
            target, drafter, tokenizer, PROMPT, params, DraftLengthTuner(fixed=2)
        )
        tokens = tuple(t for c in chunks for t in c.token_ids)
        accepted += len(tokens) == 3
        samples.append(tokens)
    assert chi_square_p_value(samples, joint) > 0.01


def test_plain_sampling_matches_target_distribution(models):
    target, _ = models
    sampling = SamplingParams(temperature=1.0)
    joint = exact_joint(target, PROMPT, sampling, 2)
    tokenizer = DigitTokenizer()
    samples = []
    for seed in range(800):
        params = GenerationParams(sampling=SamplingParams(1.0, seed=seed), max_tokens=2)
        samples.append(
            tuple(t for c in generate_plain(target, tokenizer, PROMPT, params) for t in c.token_ids)
        )
    assert chi_square_p_value(samples, joint) > 0.01


def test_seeded_speculative_run_reproducible(models):
    target, draft = models
    params = GenerationParams(sampling=SamplingParams(temperature=1.0, seed=42), max_tokens=24)

    def run():
        chunks = generate_speculative(
            target,
            DraftModelDrafter(draft),
            DigitTokenizer(),
            PROMPT,
            params,
            DraftLengthTuner(fixed=3),
        )
        return [t for c in chunks for t in c.token_ids]

    first = run()
    assert run() == first
    other = GenerationParams(sampling=SamplingParams(temperature=1.0, seed=43), max_tokens=24)
    different = generate_speculative(
        target, DraftModelDrafter(draft), DigitTokenizer(), PROMPT, other, DraftLengthTuner(fixed=3)
    )
    assert [t for c in different for t in c.token_ids] != first


def test_speculative_sampling_with_limited_draft_head(models):
    target, draft = models
    sampling = SamplingParams(temperature=1.0)
    joint = exact_joint(target, PROMPT, sampling, 3)
    samples = []
    for seed in range(1000):
        params = GenerationParams(sampling=SamplingParams(1.0, seed=seed), max_tokens=3)
        drafter = DraftModelDrafter(draft, head_rows=4)  # never proposes tokens 4 and 5
        chunks = generate_speculative(
            target, drafter, DigitTokenizer(), PROMPT, params, DraftLengthTuner(fixed=2)
        )
        samples.append(tuple(t for c in chunks for t in c.token_ids))
    assert chi_square_p_value(samples, joint) > 0.01


class FirstTokenNgram(NgramDrafter):
    """An n-gram drafter whose matches stop after one token."""

    def peek(self, num_tokens: int) -> list[int]:
        return super().peek(min(num_tokens, 1))


class CombinedTuner(DraftLengthTuner):
    """Draft 3 tokens with the n-gram + draft model option whenever it is available."""

    def __init__(self, drafter: AdaptiveDrafter) -> None:
        super().__init__(max_draft=3)
        self.drafter = drafter
        self.combined_rounds = 0

    def choose(self, limit: int | None = None) -> int:
        cap = 3 if limit is None else min(3, limit)
        combined = self.drafter.available(COMBINED, cap) > 0
        self.drafter.active = COMBINED if combined else "draft_model"
        self.combined_rounds += combined
        return cap


def test_ngram_extended_sampling_matches_target_distribution(models):
    target, draft = models
    sampling = SamplingParams(temperature=1.0)
    prompt = [*PROMPT, *PROMPT]  # every prompt token recurs, so most rounds find a match
    joint = exact_joint(target, prompt, sampling, 3)
    samples = []
    combined_rounds = 0
    for seed in range(1000):
        # 5 tokens, so the first round may draft 3 (one fewer than remain); the test
        # compares the distribution of the first 3.
        params = GenerationParams(sampling=SamplingParams(1.0, seed=seed), max_tokens=5)
        drafter = AdaptiveDrafter([FirstTokenNgram(min_n=1), DraftModelDrafter(draft)])
        tuner = CombinedTuner(drafter)
        chunks = generate_speculative(target, drafter, DigitTokenizer(), prompt, params, tuner)
        samples.append(tuple(t for c in chunks for t in c.token_ids)[:3])
        combined_rounds += tuner.combined_rounds
    assert combined_rounds >= 500
    assert chi_square_p_value(samples, joint) > 0.01

"""The draft length tuner climbs on good drafts, backs off on bad ones, and probes."""

from __future__ import annotations

from draftwise.runtime.tuner import MAX_PROBE_INTERVAL, DraftLengthTuner

STEP_S = 0.05  # a k = 0 round
DRAFT_TOKEN_S = 0.01  # each extra proposal


def simulate(tuner: DraftLengthTuner, accept, rounds: int) -> list[int]:
    """Drive the tuner with a synthetic cost model; ``accept(k)`` returns the accepted count."""
    chosen = []
    for _ in range(rounds):
        k = tuner.choose()
        tuner.record(k, accept(k), STEP_S + DRAFT_TOKEN_S * k)
        chosen.append(k)
    return chosen


def test_tuner_oracle_climbs_to_max():
    tuner = DraftLengthTuner(max_draft=8)
    chosen = simulate(tuner, lambda k: k, 40)
    assert chosen[-1] == 8
    assert chosen[-10:] == [8] * 10


def test_tuner_adversary_falls_back_to_plain():
    tuner = DraftLengthTuner(max_draft=8)
    chosen = simulate(tuner, lambda k: 0, 300)
    drafting_rounds = sum(1 for k in chosen[20:] if k > 0)
    assert chosen[-1] == 0
    assert drafting_rounds <= 280 // 16 + 1  # only probes


def test_tuner_backs_off_when_text_turns_random():
    tuner = DraftLengthTuner(max_draft=8)
    simulate(tuner, lambda k: k, 40)
    after = simulate(tuner, lambda k: 0, 40)
    first_plain = after.index(0)
    assert first_plain <= 12
    assert all(k == 0 for k in after[first_plain : first_plain + 10])


def test_tuner_probe_interval_backs_off_exponentially():
    tuner = DraftLengthTuner(max_draft=8)
    chosen = simulate(tuner, lambda k: 0, 2000)
    gaps = []
    last = None
    for index, k in enumerate(chosen):
        if k > 0:
            if last is not None:
                gaps.append(index - last)
            last = index
    assert gaps[-1] >= MAX_PROBE_INTERVAL
    assert tuner.probe_interval == MAX_PROBE_INTERVAL


def test_fit_keeps_slope_after_plain_stretch():
    from draftwise.runtime.tuner import _LinearFit

    fit = _LinearFit()
    for _ in range(5):
        fit.add(0, STEP_S)
        fit.add(2, 3 * STEP_S)
    # Enough plain rounds to decay the drafted ones out of the fit.
    for _ in range(60):
        fit.add(0, STEP_S)
    # Measured: each proposal costs one plain round, not the prior's 0.35.
    assert abs(fit.predict(0) - STEP_S) < 1e-3
    assert abs(fit.predict(2) - 3 * STEP_S) < 1e-3


def test_tuner_losing_probes_back_off():
    tuner = DraftLengthTuner(max_draft=8)
    # Every probe's first proposal is accepted, but each proposal costs two
    # plain rounds, so no probe pays for itself.
    for _ in range(2000):
        k = tuner.choose()
        tuner.record(k, min(k, 1), STEP_S * (1 + 2 * k))
    assert tuner.probe_interval == MAX_PROBE_INTERVAL


def test_tuner_resumes_after_successful_probe():
    tuner = DraftLengthTuner(max_draft=8)
    simulate(tuner, lambda k: 0, 200)
    chosen = simulate(tuner, lambda k: k, 300)
    assert chosen[-1] >= 4


def test_tuner_prefers_short_drafts_when_acceptance_is_middling():
    tuner = DraftLengthTuner(max_draft=8)
    # Accept the first proposal, reject the rest: k = 1 is optimal.
    chosen = simulate(tuner, lambda k: min(k, 1), 100)
    assert chosen[-1] == 1


def test_tuner_fixed_length_respected_and_clamped():
    tuner = DraftLengthTuner(max_draft=8, fixed=5)
    assert tuner.choose() == 5
    assert tuner.choose(limit=2) == 2
    assert tuner.choose(limit=0) == 0


def test_shared_pass_skips_model_drafts():
    from fakes import tiny_model

    from draftwise.runtime.drafters.adaptive import COMBINED, AdaptiveDrafter
    from draftwise.runtime.drafters.draft_model import DraftModelDrafter
    from draftwise.runtime.drafters.ngram import NgramDrafter

    ngram = NgramDrafter(min_n=1)
    drafter = AdaptiveDrafter([ngram, DraftModelDrafter(tiny_model(seed=0))])
    ngram.start([1, 2, 3])  # no repeats: the n-gram drafter has nothing to propose
    tuner = drafter.tuner
    # Alone, the prior favours drafting with the draft model.
    assert tuner.choose(8) > 0
    assert drafter.active == "draft_model"
    # Sharing a pass, only the n-gram drafter (or plain decoding) may run.
    tuner.allow_model_drafts = False
    for _ in range(40):
        assert tuner.choose(8) == 0
        assert drafter.active not in ("draft_model", COMBINED)
        tuner.record(0, 0, 0.1)


def test_shared_pass_ngram_needs_high_acceptance():
    from draftwise.runtime.drafters.adaptive import SHARED_MIN_ACCEPTANCE, AdaptiveDrafter
    from draftwise.runtime.drafters.ngram import NgramDrafter

    ngram = NgramDrafter(min_n=1)
    drafter = AdaptiveDrafter([ngram])
    ngram.start([5, 6, 7, 8, 5, 6, 7, 8, 5])  # "5" is followed by 6, 7, 8
    tuner = drafter.tuner
    tuner.allow_model_drafts = False
    # The prior acceptance (0.6) is below the bar: no drafting while sharing.
    assert tuner.drafter.options["ngram"].tuner.acceptance()[0] < SHARED_MIN_ACCEPTANCE
    assert tuner.choose(8) == 0
    # After rounds where every n-gram proposal was accepted, it may draft.
    option = tuner.drafter.options["ngram"].tuner
    for _ in range(10):
        option.record(3, 3, 0.1)
    assert option.acceptance()[0] >= SHARED_MIN_ACCEPTANCE
    assert tuner.choose(8) > 0
    assert drafter.active == "ngram"


def _lagging_draft_model(drafted_first: bool):
    """An adaptive drafter whose draft model lags more than the backlog limit."""
    from fakes import tiny_model

    from draftwise.runtime.drafters.adaptive import MAX_DRAFT_MODEL_BACKLOG, AdaptiveDrafter
    from draftwise.runtime.drafters.draft_model import DraftModelDrafter
    from draftwise.runtime.drafters.ngram import NgramDrafter
    from draftwise.runtime.generate import fresh_prefill
    from draftwise.runtime.sampling import SamplingParams

    model = DraftModelDrafter(tiny_model(seed=0))
    drafter = AdaptiveDrafter([NgramDrafter(min_n=1), model])
    drafter.start([1, 2, 3], fresh_prefill)
    tuner = drafter.tuner
    token = 10
    if drafted_first:
        # Alone, the prior favours drafting with the draft model.
        k = tuner.choose(8)
        assert k > 0
        assert drafter.active == "draft_model"
        drafter.propose(k, SamplingParams(), None)
        drafter.commit(0, [token])
        tuner.record(k, 0, 0.3)
        token += 1
    assert drafter.available("draft_model", 8) == 8
    # Plain rounds: every committed token waits in the draft model's backlog.
    while model.backlog <= MAX_DRAFT_MODEL_BACKLOG:
        drafter.active = None
        drafter.propose(0, SamplingParams(), None)
        drafter.commit(0, [token])
        tuner.record(0, 0, 0.1)
        token += 1
    return drafter


def test_draft_model_sits_out_once_it_lags_behind():
    from draftwise.runtime.drafters.adaptive import COMBINED

    drafter = _lagging_draft_model(drafted_first=True)
    assert drafter.available("draft_model", 8) == 0
    assert drafter.available(COMBINED, 8) == 0
    # However long plain decoding runs, probes never pick the lagging model.
    for _ in range(300):
        drafter.tuner.choose(8)
        assert drafter.active not in ("draft_model", COMBINED)
        drafter.tuner.record(0, 0, 0.1)


def test_untried_draft_model_catches_up_once():
    drafter = _lagging_draft_model(drafted_first=False)
    assert drafter.available("draft_model", 8) == 8


def test_ngram_match_classes_learn_apart():
    from draftwise.runtime.drafters.adaptive import AdaptiveDrafter, match_class
    from draftwise.runtime.drafters.ngram import NgramDrafter

    ngram = NgramDrafter(min_n=2, max_n=8)
    drafter = AdaptiveDrafter([ngram])
    option = drafter.options["ngram"]
    short = [1, 2, 3, 9, 1, 2]  # the suffix "1 2" matches: length 2
    long = [*range(10, 20), 99, *range(10, 19)]  # an 8-token match
    ngram.start(short)
    assert match_class(ngram.match_length()) == 0
    # Every short-match draft is rejected: short matches stop drafting.
    for _ in range(30):
        k = drafter.tuner.choose(8)
        drafter.tuner.record(k, 0, 0.05 + 0.01 * k)
    assert drafter.tuner.choose(8) == 0
    # A long match keeps the prior acceptance, so it drafts.
    ngram.start(long)
    assert match_class(ngram.match_length()) == 2
    assert drafter.tuner.choose(8) > 0
    assert drafter.active == "ngram"
    assert option.tuner is option.classes[2]


def test_ngram_match_classes_share_round_timings():
    from draftwise.runtime.drafters.adaptive import AdaptiveDrafter
    from draftwise.runtime.drafters.ngram import NgramDrafter

    classes = AdaptiveDrafter([NgramDrafter()]).options["ngram"].classes
    assert classes is not None
    assert all(tuner.timing is classes[0].timing for tuner in classes)

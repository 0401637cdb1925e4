"""Choose the draft length k that maximizes committed tokens per second.

Per sequence, the tuner keeps decayed counts of acceptance at each draft
position and a decayed linear fit of round time against k. The expected
tokens of a round with k proposals is ``1 + sum_{j<=k} prod_{i<=j} a_i``
(``a_i``: acceptance at position i given the earlier ones were accepted);
it picks the k with the most expected tokens per expected second, k = 0
(plain decoding) included. While it sits at k = 0 it learns nothing about
acceptance, so it probes a short draft now and then, backing off
exponentially while probes keep losing against plain decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Every recorded round multiplies the weight of all earlier ones by DECAY,
# so about the last 1 / (1 - DECAY) rounds dominate the estimates.
DECAY = 0.85
PRIOR_ACCEPTANCE = 0.6
PRIOR_WEIGHT = 1.0
# Assumed extra round time per proposal, as a share of a k = 0 round, until
# rounds at two different k have been timed.
PRIOR_COST_PER_TOKEN = 0.35
UNOBSERVED_WEIGHT = 0.5
PROBE_LENGTH = 2
FIRST_PROBE_INTERVAL = 16
MAX_PROBE_INTERVAL = 256


@dataclass
class _LinearFit:
    """Decayed least squares of ``seconds = intercept + slope * k``."""

    weight: float = 0.0
    sum_k: float = 0.0
    sum_t: float = 0.0
    sum_kk: float = 0.0
    sum_kt: float = 0.0
    # The newest slope fitted while rounds at different k were in view. A
    # long stretch of plain rounds decays the drafted ones out of the fit,
    # and the cost per proposal is then still this one, not the prior's.
    known_slope: float | None = None

    def add(self, k: int, seconds: float) -> None:
        for name in ("weight", "sum_k", "sum_t", "sum_kk", "sum_kt"):
            setattr(self, name, getattr(self, name) * DECAY)
        self.weight += 1.0
        self.sum_k += k
        self.sum_t += seconds
        self.sum_kk += k * k
        self.sum_kt += k * seconds
        slope = self._fitted_slope()
        if slope is not None:
            self.known_slope = slope

    def _fitted_slope(self) -> float | None:
        mean_k = self.sum_k / self.weight
        mean_t = self.sum_t / self.weight
        variance = self.sum_kk / self.weight - mean_k * mean_k
        if variance < 0.05:
            return None
        return max((self.sum_kt / self.weight - mean_k * mean_t) / variance, 0.0)

    def predict(self, k: int) -> float:
        """Return the expected round time at ``k``, in seconds or, before any timing, in rounds."""
        if self.weight == 0.0:
            return 1.0 + PRIOR_COST_PER_TOKEN * k
        mean_k = self.sum_k / self.weight
        mean_t = self.sum_t / self.weight
        slope = self._fitted_slope()
        if slope is None:
            slope = self.known_slope
        if slope is None:  # no slope measured yet, so assume the prior one
            base = mean_t / (1.0 + PRIOR_COST_PER_TOKEN * mean_k)
            return base * (1.0 + PRIOR_COST_PER_TOKEN * k)
        return max(mean_t + slope * (k - mean_k), 1e-6)


@dataclass
class DraftLengthTuner:
    """Per-sequence draft length decisions; ``fixed`` pins k (for benchmarks)."""

    max_draft: int = 8
    fixed: int | None = None
    accepted: list[float] = field(default_factory=list)
    attempted: list[float] = field(default_factory=list)
    timing: _LinearFit = field(default_factory=_LinearFit)
    rounds_since_draft: int = 0
    probe_interval: int = FIRST_PROBE_INTERVAL
    last_choice: int = 0

    def __post_init__(self) -> None:
        self.accepted = [PRIOR_ACCEPTANCE * PRIOR_WEIGHT] * self.max_draft
        self.attempted = [PRIOR_WEIGHT] * self.max_draft

    def sibling(self) -> DraftLengthTuner:
        """Return a fresh tuner that shares this one's round timings, not its acceptance."""
        return DraftLengthTuner(max_draft=self.max_draft, timing=self.timing)

    def acceptance(self) -> list[float]:
        """Return the estimated acceptance rate at each draft position 1..max_draft."""
        return [a / t if t > 0 else 0.0 for a, t in zip(self.accepted, self.attempted, strict=True)]

    def expected_tokens(self, k: int) -> float:
        total, survive = 1.0, 1.0
        for rate in self.acceptance()[:k]:
            survive *= rate
            total += survive
        return total

    def best(self, cap: int) -> tuple[int, float]:
        """Return the draft length up to ``cap`` with the most expected tokens per second.

        The rate is in tokens per predicted second (or per round before any
        round was timed). This has no side effects.
        """
        best_k, best_rate = 0, 0.0
        for k in range(max(cap, 0) + 1):
            rate = self.expected_tokens(k) / self.timing.predict(k)
            if rate > best_rate * 1.0001:
                best_k, best_rate = k, rate
        return best_k, best_rate

    def wants_probe(self, cap: int) -> bool:
        """Return whether it is time to try a short draft again after a stretch of k = 0."""
        return cap > 0 and self.rounds_since_draft >= self.probe_interval

    def choose(self, limit: int | None = None) -> int:
        """Return the draft length for the next round, at most ``limit``."""
        cap = self.max_draft if limit is None else max(0, min(self.max_draft, limit))
        if self.fixed is not None:
            self.last_choice = min(self.fixed, cap)
            return self.last_choice
        best_k, _ = self.best(cap)
        if best_k == 0 and self.wants_probe(cap):
            best_k = min(PROBE_LENGTH, cap)
        self.last_choice = best_k
        return best_k

    def record(self, num_drafted: int, num_accepted: int, seconds: float) -> None:
        """Learn from one round: its draft length, accepted count and duration."""
        self.timing.add(num_drafted, seconds)
        if num_drafted == 0:
            self.rounds_since_draft += 1
            return
        was_probe = self.rounds_since_draft >= self.probe_interval
        self.rounds_since_draft = 0

        for position in range(self.max_draft):
            self.accepted[position] *= DECAY
            self.attempted[position] *= DECAY
        for position in range(min(num_accepted + 1, num_drafted)):
            self.attempted[position] += 1.0
            if position < num_accepted:
                self.accepted[position] += 1.0

        # Positions after a rejection go unobserved. The rejection counts as
        # weak evidence against them too, so estimates for long drafts do not
        # stay optimistic after the text changes. Likewise a fully accepted
        # draft is weak evidence for the next position, so k can grow past
        # lengths it has never tried.
        if num_accepted < num_drafted:
            for position in range(num_accepted + 1, self.max_draft):
                self.attempted[position] += UNOBSERVED_WEIGHT
        elif num_drafted < self.max_draft:
            self.attempted[num_drafted] += UNOBSERVED_WEIGHT
            self.accepted[num_drafted] += UNOBSERVED_WEIGHT

        if was_probe:
            # A probe that accepted something can still be slower than plain
            # decoding, so only a probe that reaches plain decoding's tokens
            # per second resets the interval.
            plain_rate = 1.0 / self.timing.predict(0)
            if (num_accepted + 1) / max(seconds, 1e-9) >= plain_rate:
                self.probe_interval = FIRST_PROBE_INTERVAL
            else:
                self.probe_interval = min(self.probe_interval * 2, MAX_PROBE_INTERVAL)

"""Gateway counters and their Prometheus text exposition (format 0.0.4).

The gateway counts requests, tokens and speculation per finished generation
and keeps a time-to-first-token histogram. Gauges that describe the runtime
now (active requests and sessions, cache bytes, draft length per model) are
read from `Runtime.stats()` at scrape time.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from draftwise.actors.http.generation import Generation

TTFT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot: above every bound
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        rows = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            rows.append((_number(bound), running))
        rows.append(("+Inf", self.count))
        return rows


class GatewayMetrics:
    """Counters since the gateway started; updated on the event-loop thread only."""

    def __init__(self) -> None:
        self.http_requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status)
        self.generations: Counter[tuple[str, str, str]] = Counter()  # (model, endpoint, outcome)
        self.prompt_tokens: Counter[str] = Counter()
        self.cached_tokens: Counter[str] = Counter()
        self.generated_tokens: Counter[str] = Counter()
        self.drafted_tokens: Counter[str] = Counter()
        self.accepted_tokens: Counter[str] = Counter()
        self.generation_seconds: defaultdict[str, float] = defaultdict(float)
        self.ttft = Histogram(TTFT_BUCKETS_S)

    def record_http(self, endpoint: str, status: int) -> None:
        self.http_requests[(endpoint, status)] += 1

    def record_generation(self, generation: Generation, endpoint: str, outcome: str) -> None:
        model = generation.model
        self.generations[(model, endpoint, outcome)] += 1
        prompt, completion, cached = generation.usage_counts()
        self.prompt_tokens[model] += prompt
        self.cached_tokens[model] += cached
        self.generated_tokens[model] += completion
        self.generation_seconds[model] += generation.total_s
        if generation.done is not None:
            self.drafted_tokens[model] += generation.done.speculation.num_drafted
            self.accepted_tokens[model] += generation.done.speculation.num_accepted
        if generation.ttft_s is not None:
            self.ttft.observe(generation.ttft_s)

    def render(self, runtime_stats: dict[str, Any]) -> str:
        """Return the exposition text: gateway counters, then runtime gauges."""
        lines: list[str] = []
        _family(lines, "draftwise_http_requests_total", "counter", "HTTP requests by status")
        for (endpoint, status), value in sorted(self.http_requests.items()):
            lines.append(
                _sample(
                    "draftwise_http_requests_total", value, endpoint=endpoint, status=str(status)
                )
            )
        _family(
            lines,
            "draftwise_generations_total",
            "counter",
            "generations by model, endpoint and outcome (ok, error, cancelled)",
        )
        for (model, endpoint, outcome), value in sorted(self.generations.items()):
            lines.append(
                _sample(
                    "draftwise_generations_total",
                    value,
                    model=model,
                    endpoint=endpoint,
                    outcome=outcome,
                )
            )
        token_counters: tuple[tuple[str, str, Mapping[str, float]], ...] = (
            ("draftwise_prompt_tokens_total", "prompt tokens", self.prompt_tokens),
            (
                "draftwise_cached_prompt_tokens_total",
                "prompt tokens reused from the KV cache",
                self.cached_tokens,
            ),
            ("draftwise_generated_tokens_total", "generated tokens", self.generated_tokens),
            ("draftwise_drafted_tokens_total", "draft tokens proposed", self.drafted_tokens),
            ("draftwise_accepted_tokens_total", "draft tokens accepted", self.accepted_tokens),
            (
                "draftwise_generation_seconds_total",
                "wall time of generations, prefill included",
                self.generation_seconds,
            ),
        )
        for name, help_text, counter in token_counters:
            _family(lines, name, "counter", help_text)
            for model, amount in sorted(counter.items()):
                lines.append(_sample(name, amount, model=model))
        self._render_ttft(lines)
        _render_runtime(lines, runtime_stats)
        return "\n".join(lines) + "\n"

    def _render_ttft(self, lines: list[str]) -> None:
        name = "draftwise_time_to_first_token_seconds"
        _family(lines, name, "histogram", "time from request to first generated token")
        for bound, count in self.ttft.cumulative():
            lines.append(_sample(name + "_bucket", count, le=bound))
        lines.append(_sample(name + "_sum", self.ttft.total))
        lines.append(_sample(name + "_count", self.ttft.count))


_RUNTIME_GAUGES = (
    ("active_requests", "draftwise_active_requests", "generate requests running now"),
    ("active_sessions", "draftwise_sessions", "sessions holding a KV cache"),
    ("cache_bytes", "draftwise_cache_bytes", "KV cache bytes held by all sessions"),
    ("cache_budget_bytes", "draftwise_cache_budget_bytes", "KV cache budget in bytes"),
    ("uptime_s", "draftwise_uptime_seconds", "seconds since the runtime started"),
    ("acceptance_rate", "draftwise_acceptance_rate", "accepted / drafted tokens since start"),
    (
        "prefill_tokens_per_s",
        "draftwise_prefill_tokens_per_second",
        "mean prefill throughput over finished requests",
    ),
    (
        "decode_tokens_per_s",
        "draftwise_decode_tokens_per_second",
        "mean decode throughput over finished requests",
    ),
)


def _render_runtime(lines: list[str], stats: dict[str, Any]) -> None:
    for key, name, help_text in _RUNTIME_GAUGES:
        if key in stats:
            _family(lines, name, "gauge", help_text)
            lines.append(_sample(name, stats[key]))
    draft_length = stats.get("draft_length") or {}
    if isinstance(draft_length, dict):
        name = "draftwise_draft_length"
        _family(lines, name, "gauge", "current draft length per model (tokens per round)")
        for model, value in sorted(draft_length.items()):
            if isinstance(value, int | float):
                lines.append(_sample(name, value, model=str(model)))


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def _sample(name: str, value: float, **labels: str) -> str:
    if labels:
        pairs = ",".join(f'{key}="{_escape(text)}"' for key, text in labels.items())
        return f"{name}{{{pairs}}} {_number(value)}"
    return f"{name} {_number(value)}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))

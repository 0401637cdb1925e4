"""The workload benchmark: identity checks and divergence diagnosis on a tiny model."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))

from test_engine import language_model

from draftwise.actors.bench_workload import diagnose_divergence, run_workload
from draftwise.runtime.engine import Engine
from draftwise.runtime.generate import fresh_prefill


def test_run_workload_reports_identical_outputs():
    engine = Engine(language_model(1), language_model(1))
    rows = [{"id": "r1", "category": "chat", "messages": [{"role": "user", "content": "abcab"}]}]
    result = run_workload(engine, rows, ["plain", "auto", "3"], max_tokens=12, log=io.StringIO())
    runs = result["runs"]
    assert [r["mode"] for r in runs] == ["plain", "auto", "3"]
    assert all(r["identical_to_plain"] for r in runs[1:])
    assert all("divergence" not in r for r in runs)
    assert len({tuple(r["token_ids"]) for r in runs}) == 1


def test_diagnose_divergence_flags_a_wrong_token():
    engine = Engine(language_model(1))
    prompt = engine.target.encode_messages([{"role": "user", "content": "hello"}])
    _, logits = fresh_prefill(engine.target.model, prompt, 2)
    row = logits.reshape(-1)
    best = int(mx.argmax(row).item())
    worst = int(mx.argmin(row).item())
    report = diagnose_divergence(engine, prompt, [best, 1], [worst, 1], 0)
    assert report["plain_token"] == best
    assert report["speculative_token"] == worst
    assert report["logit_gap"] > 0.01
    assert report["cause"] == "computation_differs"
    assert report["top2_logits"][0] == report["logits"]["plain"]


def test_diagnose_divergence_reports_a_shorter_output():
    engine = Engine(language_model(1))
    prompt = engine.target.encode_messages([{"role": "user", "content": "hello"}])
    report = diagnose_divergence(engine, prompt, [5, 6, 7], [5, 6], 2)
    assert report["cause"] == "length"
    assert report["speculative_token"] is None

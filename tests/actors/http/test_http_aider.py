"""aider on one polyglot exercise through the gateway, speculation auto against off.

This is a benchmark run more than a test. It needs aider (DRAFTWISE_AIDER, else
`aider` on PATH, installed in its own virtualenv), the workload file
(DRAFTWISE_WORKLOAD, a JSONL of prompts in aider's whole-file edit format) and
the real Qwen pair. It skips, naming what is missing, without them. It prints the
session's decode speed per mode and asserts that both modes edit the files
identically, because greedy speculative decoding must not change the output.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import trio
from http_fakes import DRAFT, TARGET, get, in_thread, load_or_skip
from prometheus_client.parser import text_string_to_metric_families

from draftwise.actors.cli_launch import ServerInfo, aider_command
from draftwise.actors.http import serve_http
from draftwise.actors.runtime import Runtime, RuntimeConfig

# Skipped at collection, so the reason shows in the summary: a skip raised
# inside a trio test reaches pytest without its message.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.environ.get("DRAFTWISE_AIDER") or shutil.which("aider")),
        reason="aider not found: set DRAFTWISE_AIDER or put aider on PATH",
    ),
]

EXERCISE = os.environ.get("DRAFTWISE_AIDER_EXERCISE", "polyglot-python-poker")
MAX_TOKENS = int(os.environ.get("DRAFTWISE_AIDER_MAX_TOKENS", "200"))
FILE_LISTING = re.compile(r"^(\S+)\n```\n(.*?)\n```$", re.MULTILINE | re.DOTALL)


def find_aider() -> str:
    aider = os.environ.get("DRAFTWISE_AIDER") or shutil.which("aider")
    if aider is None:
        pytest.skip("aider not found: set DRAFTWISE_AIDER or put aider on PATH")
    return aider


def load_exercise() -> tuple[dict[str, str], str]:
    """Return the exercise's files and its instructions, from the workload's user message."""
    path = os.environ.get("DRAFTWISE_WORKLOAD")
    if not path or not Path(path).exists():
        pytest.skip("set DRAFTWISE_WORKLOAD to the workload JSONL file")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    row = next((r for r in rows if r["id"] == EXERCISE), None)
    if row is None:
        pytest.skip(f"exercise {EXERCISE} is not in {path}")
    user = row["messages"][-1]["content"]
    files = {match[1]: match[2] + "\n" for match in FILE_LISTING.finditer(user)}
    instructions = user[user.index("# Instructions") :]
    return files, instructions


def metric_totals(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


async def run_aider(models, aider: str, workdir: Path, instructions: str, mode: str) -> dict:
    settings = workdir.parent / f"settings-{mode}.yml"
    settings.write_text(
        f"- name: openai/{TARGET}\n  edit_format: whole\n"
        f"  extra_params:\n    max_tokens: {MAX_TOKENS}\n"
    )
    config = RuntimeConfig(model=TARGET, draft=DRAFT)
    async with Runtime.open(config, models=models) as runtime:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(serve_http, runtime, port=0, speculation=mode)
            base_url = (await nursery.start(serve))[0]
            info = ServerInfo(base_url, [TARGET], runtime.context_length())
            command = aider_command(aider, info, TARGET, [
                "--model-settings-file", str(settings), "--yes-always", "--no-git",
                "--no-auto-commits", "--no-show-model-warnings", "--no-check-update",
                "--no-analytics", "--map-tokens", "0", "--no-pretty",
                "--message", instructions, *sorted(p.name for p in workdir.iterdir()),
            ])  # fmt: skip
            env = {**os.environ, "OPENAI_API_KEY": "draftwise-local"}
            started = trio.current_time()
            result = await trio.run_process(
                command, cwd=workdir, env=env, capture_stdout=True, capture_stderr=True,
                check=False,
            )  # fmt: skip
            wall_s = trio.current_time() - started
            metrics = metric_totals((await in_thread(get, base_url + "/metrics"))[1].decode())
            nursery.cancel_scope.cancel()
    return {"result": result, "wall_s": wall_s, "metrics": metrics}


async def test_aider_exercise_speculation_auto_equals_off(tmp_path):
    aider = find_aider()
    files, instructions = load_exercise()
    models = {TARGET: load_or_skip(TARGET), DRAFT: load_or_skip(DRAFT)}
    runs = {}
    for mode in ("auto", "off"):
        workdir = tmp_path / mode
        workdir.mkdir()
        for name, text in files.items():
            (workdir / name).write_text(text)
        runs[mode] = await run_aider(models, aider, workdir, instructions, mode)

    for mode, run in runs.items():
        m = run["metrics"]
        requests = m["draftwise_time_to_first_token_seconds_count"]
        decode_s = (
            m["draftwise_generation_seconds_total"] - m["draftwise_time_to_first_token_seconds_sum"]
        )
        decode_tokens = m["draftwise_generated_tokens_total"] - requests
        print(
            f"\naider {EXERCISE} speculation={mode}: exit {run['result'].returncode}, "
            f"wall {run['wall_s']:.1f} s, requests {requests:.0f}, "
            f"prompt {m['draftwise_prompt_tokens_total']:.0f} tokens, "
            f"generated {m['draftwise_generated_tokens_total']:.0f} tokens, "
            f"ttft sum {m['draftwise_time_to_first_token_seconds_sum']:.1f} s, "
            f"decode {decode_tokens / decode_s if decode_s > 0 else 0:.2f} tokens/s, "
            f"drafted {m['draftwise_drafted_tokens_total']:.0f}, "
            f"accepted {m['draftwise_accepted_tokens_total']:.0f}"
        )
    for mode, run in runs.items():
        assert run["result"].returncode == 0, run["result"].stderr.decode()[-2000:]
        assert runs[mode]["metrics"]["draftwise_generated_tokens_total"] > 0
    for name in files:
        auto_text = (tmp_path / "auto" / name).read_text()
        off_text = (tmp_path / "off" / name).read_text()
        print(f"--- {name} after aider (auto) ---\n{auto_text}")
        assert auto_text == off_text
    assert runs["off"]["metrics"]["draftwise_drafted_tokens_total"] == 0
    assert runs["auto"]["metrics"]["draftwise_drafted_tokens_total"] > 0

"""The generate command end to end, through a subprocess, on the smallest real model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from draftwise.runtime.errors import ModelNotFoundError
from draftwise.runtime.store import resolve_model

SMALL = "smollm2:135m"


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "draftwise.actors.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def small_model() -> str:
    try:
        resolve_model(SMALL)
    except ModelNotFoundError:
        pytest.skip(f"{SMALL} is not in the store; run `draftwise pull {SMALL}`")
    return SMALL


def test_generate_json_fields(small_model):
    result = run_cli("generate", "--model", small_model, "--max-tokens", "8", "--json", "Hi")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert len(output["token_ids"]) <= 8
    assert output["finish_reason"] in ("length", "eos", "stop")
    assert output["prompt_tokens"] > 1
    for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "total_s"):
        assert key in output["timings"]
    assert isinstance(output["text"], str)


def test_generate_raw_matches_messages_from_stdin(small_model):
    messages = json.dumps([{"role": "user", "content": "Say hello."}])
    from_stdin = run_cli(
        "generate",
        "--model",
        small_model,
        "--max-tokens",
        "6",
        "--json",
        "--messages",
        "-",
        stdin=messages,
    )
    from_prompt = run_cli(
        "generate", "--model", small_model, "--max-tokens", "6", "--json", "Say hello."
    )
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert json.loads(from_stdin.stdout)["token_ids"] == json.loads(from_prompt.stdout)["token_ids"]


def test_generate_stop_string_cuts_text(small_model):
    result = run_cli(
        "generate",
        "--model",
        small_model,
        "--raw",
        "--max-tokens",
        "24",
        "--json",
        "--stop",
        "\n",
        "def add(a, b):\n    return",
    )
    output = json.loads(result.stdout)
    assert "\n" not in output["text"]


def test_generate_unknown_model_one_line_error():
    result = run_cli("generate", "--model", "nosuchmodel:7b", "hello")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "nosuchmodel:7b" in lines[0]
    assert "Traceback" not in result.stderr


def test_generate_truncated_gguf_one_line_error(tmp_path: Path, small_model):
    source = resolve_model(small_model).path
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(source.read_bytes()[: 4 * 1024 * 1024])
    result = run_cli("generate", "--model", str(truncated), "hello")
    assert result.returncode == 1
    assert "truncated.gguf" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_generate_bad_messages_file_rejected(tmp_path: Path):
    bad = tmp_path / "messages.json"
    bad.write_text('{"role": "user"}')
    result = run_cli("generate", "--messages", str(bad))
    assert result.returncode == 2
    assert "JSON list" in result.stderr


def test_generate_negative_temperature_rejected(small_model):
    result = run_cli("generate", "--model", small_model, "--temperature", "-1", "hi")
    assert result.returncode == 1
    assert "temperature -1.0" in result.stderr


def test_compare_names_mtp_drafter():
    try:
        resolve_model("qwen2.5-coder:1.5b")
    except ModelNotFoundError:
        pytest.skip("qwen2.5-coder:1.5b is not in the store; run `draftwise pull` for it")
    result = run_cli("compare", "--draft", "qwen2.5-coder:1.5b-mtp", "--max-tokens", "4", "Hi")
    assert result.returncode == 0, result.stderr
    assert "speculative decoding (draft qwen2.5-coder:1.5b-mtp, auto)" in result.stdout
    assert "outputs identical: yes" in result.stdout

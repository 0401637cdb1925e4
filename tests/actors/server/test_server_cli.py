"""`draftwise serve`, `generate --socket` and `stats` as subprocesses on a tiny GGUF model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "runtime" / "loading"))

from loading_builders import TinyModelSpec, byte_level_vocab, write_tiny_gguf

from draftwise.protocol import Chunk, Client, Done

STARTUP_TIMEOUT_S = 120


def _cli(
    *args: str, timeout: float = 300, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "draftwise.actors.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("model") / "tiny-qwen2.gguf"
    write_tiny_gguf(path, TinyModelSpec(), byte_level_vocab())
    return str(path)


def _wait_for_socket(process: subprocess.Popen[str], path: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not os.path.exists(path):
        if process.poll() is not None:
            raise AssertionError(f"draftwise serve exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"draftwise serve did not create {path}")
        time.sleep(0.05)


@pytest.fixture
def served(tiny_gguf: str, socket_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    socket_path = str(socket_dir / "cli.sock")
    process = subprocess.Popen(
        [sys.executable, "-m", "draftwise.actors.cli", "--log-level", "info", "serve",
         "--socket", socket_path, "--model", tiny_gguf, "--drain-timeout", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        _wait_for_socket(process, socket_path)
        yield process, socket_path
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=60)


def test_cli_generate_and_stats_over_socket(served):
    _, socket_path = served
    result = _cli("generate", "--socket", socket_path, "--raw", "--max-tokens", "5", "--json",
                  "def add(a, b):")  # fmt: skip
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert len(output["token_ids"]) == output["usage"]["completion_tokens"]
    assert 1 <= output["usage"]["completion_tokens"] <= 5
    assert output["finish_reason"] in ("length", "eos")
    assert output["session_id"]

    chat = _cli("generate", "--socket", socket_path, "--max-tokens", "3", "hello")
    assert chat.returncode == 0, chat.stderr

    stats = _cli("stats", "--socket", socket_path, "--json")
    assert stats.returncode == 0, stats.stderr
    counters = json.loads(stats.stdout)
    assert counters["finished_requests"] >= 2
    assert counters["active_requests"] == 0


def test_cli_chat_over_socket_reuses_session(served):
    _, socket_path = served
    result = _cli("chat", "--socket", socket_path, "--max-tokens", "4",
                  stdin="first turn\nsecond turn\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") >= 2

    stats = json.loads(_cli("stats", "--socket", socket_path, "--json").stdout)
    assert stats["finished_requests"] == 2
    assert stats["active_sessions"] == 1
    assert stats["cached_tokens"] > 0


def test_cli_generate_bad_request_exit_code(served):
    _, socket_path = served
    result = _cli("generate", "--socket", socket_path, "--model", "no-such-model", "hi")
    assert result.returncode == 1
    assert "unknown_model" in result.stderr


def test_cli_drafter_option_reaches_server(served):
    # The server has no draft model, so asking for its drafter fails there.
    _, socket_path = served
    result = _cli("generate", "--socket", socket_path, "--drafter", "draft_model", "hi")
    assert result.returncode == 1
    assert "needs a draft model" in result.stderr

    ngram = _cli("generate", "--socket", socket_path, "--drafter", "ngram", "--max-tokens", "3",
                 "hi")  # fmt: skip
    assert ngram.returncode == 0, ngram.stderr


def test_cli_mtp_drafter_over_socket_rejected(socket_dir):
    missing = str(socket_dir / "missing.sock")
    for option in (["--drafter", "mtp"], ["--draft", "qwen2.5-coder:1.5b-mtp"]):
        result = _cli("generate", "--socket", missing, *option, "hi", timeout=60)
        assert result.returncode == 2
        assert "draftwise serve cannot host one" in result.stderr
        assert "without --socket" in result.stderr


def test_cli_sigterm_drains_and_removes_socket(served):
    process, socket_path = served
    with Client.connect(socket_path, timeout=30) as client:
        client.hello("sigterm-test", timeout=30)
        replies = client.generate(prompt="def f(x):", max_tokens=2000, timeout=60)
        assert isinstance(next(replies), Chunk)
        process.send_signal(signal.SIGTERM)
        rest = list(replies)
    last = rest[-1]
    assert isinstance(last, Done)
    assert last.finish_reason in ("cancelled", "length", "eos")
    assert process.wait(timeout=60) == 0
    assert not os.path.exists(socket_path)
    _, stderr = process.communicate(timeout=10)
    assert f"on {socket_path}; stop with Ctrl-C" in stderr
    assert "draftwise: serving " in stderr
    assert "server_draining" in stderr
    assert "server_stopped" in stderr


def test_cli_second_server_on_live_socket_refused(served, tiny_gguf):
    _, socket_path = served
    result = _cli("serve", "--socket", socket_path, "--model", tiny_gguf)
    assert result.returncode == 1
    assert "already listening" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_no_server_exit_code(socket_dir):
    missing = str(socket_dir / "missing.sock")
    result = _cli("generate", "--socket", missing, "hi", timeout=60)
    assert result.returncode == 3
    assert "no server at" in result.stderr
    stats = _cli("stats", "--socket", missing, timeout=60)
    assert stats.returncode == 3


def test_cli_config_unknown_key_named(tmp_path):
    config = tmp_path / "draftwise.toml"
    config.write_text('[runtime]\nmodel = "tiny"\n\n[server]\nsokcet = "/tmp/x.sock"\n')
    result = _cli("serve", "--config", str(config), timeout=60)
    assert result.returncode == 2
    assert "sokcet" in result.stderr
    assert "$.server" in result.stderr


def test_cli_example_config_decodes():
    from draftwise.actors.server_config import load_serve_config, parse_size

    example = Path(__file__).parents[3] / "deploy" / "draftwise.toml"
    config = load_serve_config(example)
    assert config.runtime.model
    assert config.server.socket_mode == 0o660
    assert parse_size(config.runtime.cache_budget, "cache_budget") > 0
    assert config.runtime.batch_sessions == 8


def test_config_batch_sessions_reaches_runtime(tmp_path):
    from draftwise.actors.server_config import load_serve_config, runtime_config

    config = tmp_path / "draftwise.toml"
    config.write_text('[runtime]\nmodel = "tiny"\nbatch_sessions = 1\n')
    assert runtime_config(load_serve_config(config).runtime).batch_sessions == 1


def test_config_batch_sessions_zero_rejected(tmp_path):
    from draftwise.actors.server_config import ConfigError, load_serve_config

    config = tmp_path / "draftwise.toml"
    config.write_text('[runtime]\nmodel = "tiny"\nbatch_sessions = 0\n')
    with pytest.raises(ConfigError, match="batch_sessions"):
        load_serve_config(config)

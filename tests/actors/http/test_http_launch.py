"""`draftwise launch aider`: reuse a running gateway and hand aider its address and model."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from http_fakes import MODEL, running_gateway

from draftwise.actors.cli_launch import LaunchError, add_launch_commands

# Runs the launch command in a child process, because reusing a server execs aider.
LAUNCH = textwrap.dedent(
    """
    import argparse, sys
    from draftwise.actors.cli_launch import add_launch_commands
    parser = argparse.ArgumentParser(prog="draftwise")
    add_launch_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(sys.argv[1:])
    sys.exit(args.func(args))
    """
)


def fake_aider(folder: Path) -> Path:
    """An executable that records its arguments and OpenAI variables as JSON."""
    record = folder / "aider-call.json"
    script = folder / "aider"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'base': os.environ.get('OPENAI_API_BASE'), "
        f"'key': os.environ.get('OPENAI_API_KEY')}}, open({str(record)!r}, 'w'))\n"
    )
    script.chmod(0o755)
    return script


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="draftwise")
    add_launch_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def test_launch_aider_reuses_running_server(tmp_path):
    aider = fake_aider(tmp_path)
    async with running_gateway() as gateway:
        port = gateway.base_url.rsplit(":", 1)[1]
        argv = ["launch", "aider", "--port", port, "--aider", str(aider), "--", "--yes", "x.py"]
        result = await trio.run_process(
            [sys.executable, "-c", LAUNCH, *argv], capture_stderr=True, check=False
        )

    assert result.returncode == 0, result.stderr.decode()
    call = json.loads((tmp_path / "aider-call.json").read_text())
    argv_seen = call["argv"]
    assert argv_seen[:4] == ["--model", f"openai/{MODEL}", "--openai-api-base", gateway.v1]
    assert argv_seen[-2:] == ["--yes", "x.py"]
    metadata_path = argv_seen[argv_seen.index("--model-metadata-file") + 1]
    metadata = json.loads(Path(metadata_path).read_text())
    assert metadata[f"openai/{MODEL}"]["max_input_tokens"] == 512
    assert call["base"] == gateway.v1
    assert call["key"]


def test_launch_aider_missing_aider_names_fix(tmp_path):
    args = parse(["launch", "aider", "--aider", str(tmp_path / "absent")])

    with pytest.raises(LaunchError, match="--aider"):
        args.func(args)


def test_launch_aider_reports_server_that_exits(tmp_path):
    aider = fake_aider(tmp_path)
    log = tmp_path / "server.log"
    argv = [
        "launch", "aider", "--port", "1", "--aider", str(aider),
        "--model", str(tmp_path / "no-such-model.gguf"), "--draft", "none",
        "--server-log", str(log), "--start-timeout", "120",
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH, *argv], capture_output=True, check=False, timeout=180
    )

    assert result.returncode != 0
    assert "exited with status" in result.stderr.decode()
    assert str(log) in result.stderr.decode()
    assert not (tmp_path / "aider-call.json").exists()

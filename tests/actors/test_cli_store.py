"""Tests of the pull, list and rm subcommands, on a store of fake part packages."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from draftwise.actors.cli_store import add_store_commands
from draftwise.runtime.errors import StoreError
from draftwise.runtime.store import (
    CatalogueEntry,
    LocatedPart,
    ModelStore,
    NullProgress,
    PackagePin,
    PartFile,
)

MODEL = "fake:tiny"
CONTENT = b"GGUF\x03\x00\x00\x00" + bytes(range(200))


class FolderPackages:
    """A PackageSource with one part file per package, all in one folder."""

    def __init__(self, files: dict[str, Path], installed: bool) -> None:
        self.files = files
        self.installed = installed
        self.install_calls = 0

    def is_installed(self, pin: PackagePin) -> bool:
        return self.installed

    def install(self, pins: Sequence[PackagePin]) -> None:
        self.install_calls += 1
        self.installed = True

    def locate(self, part: PartFile) -> LocatedPart:
        if not self.installed:
            raise StoreError(f"package {part.package.name} is not installed")
        path = self.files[part.path]
        content = path.read_bytes()
        return LocatedPart(part, path, len(content), hashlib.sha256(content).hexdigest())


class Harness:
    """A parser with the store commands, whose stores use a fake one-model catalogue."""

    def __init__(self, tmp_path: Path, *, installed: bool = True) -> None:
        folder = tmp_path / "packages"
        folder.mkdir()
        files = {}
        parts = []
        for index, chunk in enumerate((CONTENT[:100], CONTENT[100:]), start=1):
            relative = f"fake_part{index}/data/part{index}.bin"
            files[relative] = folder / f"part{index}.bin"
            files[relative].write_bytes(chunk)
            parts.append(PartFile(PackagePin(f"fake-part{index}", "1.0"), relative))
        self.entry = CatalogueEntry(name=MODEL, description="test model", parts=tuple(parts))
        self.packages = FolderPackages(files, installed)
        self.default_store = tmp_path / "default-store"
        self.opened: list[Path | None] = []

        self.parser = argparse.ArgumentParser(prog="draftwise")
        subparsers = self.parser.add_subparsers(required=True)
        add_store_commands(subparsers, store_opener=self.open_store)

    def open_store(self, store_dir: Path | None) -> ModelStore:
        self.opened.append(store_dir)
        root = store_dir if store_dir is not None else self.default_store
        return ModelStore(root, catalogue={MODEL: self.entry}, packages=self.packages)

    def run(self, *argv: str) -> int:
        args = self.parser.parse_args(argv)
        code: int = args.func(args)
        return code


def assert_one_line_error(stderr: str, fragment: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("draftwise: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in stderr


def test_cli_pull_prints_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    harness = Harness(tmp_path)

    code = harness.run("pull", MODEL)

    out = capsys.readouterr().out
    path = harness.default_store / "fake-tiny.gguf"
    assert code == 0
    assert out.strip() == str(path)
    assert path.read_bytes() == CONTENT


def test_cli_pull_store_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    harness = Harness(tmp_path)
    store_dir = tmp_path / "chosen"

    code = harness.run("pull", MODEL, "--store", str(store_dir))

    assert code == 0
    assert harness.opened == [store_dir]
    assert (store_dir / "fake-tiny.gguf").read_bytes() == CONTENT
    assert not harness.default_store.exists()


def test_cli_pull_twice_says_already_pulled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = Harness(tmp_path)
    harness.run("pull", MODEL)
    capsys.readouterr()

    code = harness.run("pull", MODEL)

    captured = capsys.readouterr()
    assert code == 0
    assert "already pulled" in captured.err
    assert captured.out.strip() == str(harness.default_store / "fake-tiny.gguf")


def test_cli_pull_no_install_missing_packages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = Harness(tmp_path, installed=False)

    code = harness.run("pull", MODEL, "--no-install")

    captured = capsys.readouterr()
    assert code == 1
    assert harness.packages.install_calls == 0
    assert captured.out == ""
    assert_one_line_error(captured.err, "fake-part1==1.0")


def test_cli_pull_installs_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    harness = Harness(tmp_path, installed=False)

    code = harness.run("pull", MODEL)

    assert code == 0
    assert harness.packages.install_calls == 1


def test_cli_pull_unknown_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    harness = Harness(tmp_path)

    code = harness.run("pull", "llama:70b")

    assert code == 1
    assert_one_line_error(capsys.readouterr().err, "known models: fake:tiny")


def test_cli_pull_interrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = Harness(tmp_path)

    def interrupt(self: NullProgress, num_bytes: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("draftwise.runtime.store.progress.StreamProgress.advance", interrupt)
    code = harness.run("pull", MODEL)

    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(harness.default_store.glob("*.gguf")) == []


def test_cli_list_prints_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    harness = Harness(tmp_path)
    harness.run("pull", MODEL)
    capsys.readouterr()

    code = harness.run("list")

    header, row = capsys.readouterr().out.strip().splitlines()[:2]
    assert code == 0
    assert header.split() == ["NAME", "SIZE", "SHA256", "STATUS", "PATH"]
    assert row.split()[0] == MODEL
    assert hashlib.sha256(CONTENT).hexdigest()[:12] in row
    assert "size ok" in row
    assert str(harness.default_store / "fake-tiny.gguf") in row


def test_cli_list_verify_reports_damage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    harness = Harness(tmp_path)
    harness.run("pull", MODEL)
    path = harness.default_store / "fake-tiny.gguf"
    path.write_bytes(CONTENT[:-1] + b"\x00")
    capsys.readouterr()

    plain_code = harness.run("list")
    verify_code = harness.run("list", "--verify")

    out = capsys.readouterr().out
    assert plain_code == 0
    assert verify_code == 1
    assert "sha256 mismatch" in out


def test_cli_list_shows_shipped_drafters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = Harness(tmp_path)
    harness.run("pull", MODEL)
    capsys.readouterr()

    plain_code = harness.run("list")
    plain = capsys.readouterr().out
    verify_code = harness.run("list", "--verify")
    verified = capsys.readouterr().out

    assert plain_code == 0
    assert verify_code == 0
    assert "use them as --draft NAME" in plain
    drafter_row = next(line for line in plain.splitlines() if "1.5b-mtp" in line)
    assert "shipped" in drafter_row
    assert "sha256 ok" in next(line for line in verified.splitlines() if "1.5b-mtp" in line)


def test_cli_list_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    harness = Harness(tmp_path)

    code = harness.run("list", "--store", str(tmp_path / "empty"))

    assert code == 0
    assert "no models in" in capsys.readouterr().out


def test_cli_list_uses_environment_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRAFTWISE_HOME", str(tmp_path / "home"))
    harness = Harness(tmp_path)
    harness.run("pull", MODEL, "--store", str(tmp_path / "home" / "models"))
    capsys.readouterr()
    parser = argparse.ArgumentParser(prog="draftwise")
    add_store_commands(parser.add_subparsers(required=True))

    args = parser.parse_args(["list"])
    code = args.func(args)

    out = capsys.readouterr().out
    assert code == 0
    assert MODEL in out
    assert str(tmp_path / "home" / "models" / "fake-tiny.gguf") in out


def test_cli_rm_removes_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    harness = Harness(tmp_path)
    harness.run("pull", MODEL)
    capsys.readouterr()

    code = harness.run("rm", MODEL)

    assert code == 0
    assert f"removed {MODEL}" in capsys.readouterr().out
    assert list(harness.default_store.glob("fake-tiny*")) == []


def test_cli_rm_unknown_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    harness = Harness(tmp_path)

    code = harness.run("rm", "llama:70b")

    assert code == 1
    assert_one_line_error(capsys.readouterr().err, "unknown model 'llama:70b'")


def test_cli_list_invalid_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    harness = Harness(tmp_path)
    harness.run("pull", MODEL)
    manifest_path = harness.default_store / "fake-tiny.manifest.json"
    manifest_path.write_text(json.dumps({"format": 99}))
    capsys.readouterr()

    code = harness.run("list")

    captured = capsys.readouterr()
    assert code == 1
    assert "invalid manifest" in captured.out
    assert "format 99" in captured.err


@pytest.mark.parametrize(
    ("command", "fragments"),
    [
        ("pull", ["--store DIR", "DRAFTWISE_HOME", "--no-install", "pip"]),
        ("list", ["--store DIR", "--verify", "sha256"]),
        ("rm", ["--store DIR", "NAME"]),
    ],
)
def test_cli_help_describes_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, fragments: list[str]
) -> None:
    harness = Harness(tmp_path)

    with pytest.raises(SystemExit):
        harness.run(command, "--help")

    text = " ".join(capsys.readouterr().out.split())
    for fragment in fragments:
        assert fragment in text


def test_cli_pull_progress_goes_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = Harness(tmp_path)

    harness.run("pull", MODEL)

    captured = capsys.readouterr()
    assert "100%" in captured.err
    assert "%" not in captured.out

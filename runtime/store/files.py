"""File helpers of the store: temporary files, digests and the GGUF magic."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO

GGUF_MAGIC = b"GGUF"
BLOCK_BYTES = 4 * 1024 * 1024


def create_temporary_file(folder: Path, prefix: str, suffix: str) -> tuple[Path, BinaryIO]:
    """Create and open a new file ``<prefix><random><suffix>`` in ``folder`` for writing.

    Unlike ``tempfile.mkstemp``, which always uses mode 0600, the file gets the
    permissions the umask allows, as the final file should after its rename.
    """
    while True:
        path = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return path, path.open("xb")
        except FileExistsError:
            continue


def fsync_folder(folder: Path) -> None:
    """Flush the folder entry so renames inside it survive a power loss."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def has_gguf_magic(path: Path) -> bool:
    """Return whether the file at ``path`` starts with the GGUF magic bytes."""
    with path.open("rb") as file:
        return file.read(len(GGUF_MAGIC)) == GGUF_MAGIC


def sha256_of_file(path: Path) -> str:
    """Return the hex sha256 of the file at ``path``, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK_BYTES)
    view = memoryview(buffer)
    with path.open("rb") as file:
        while count := file.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()

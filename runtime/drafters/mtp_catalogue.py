"""MTP drafters shipped inside the package, by catalogue name.

A shipped drafter is one small safetensors file under
``draftwise/runtime/drafters/data/``, pinned by its sha256, so a new user
drafts with it without training or network access.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from draftwise.runtime.drafters.mtp import MTPWeights
from draftwise.runtime.drafters.mtp_io import FORMAT, load_mtp
from draftwise.runtime.errors import ModelNotFoundError
from draftwise.runtime.store.files import sha256_of_file

DATA_DIR = Path(__file__).parent / "data"


@dataclass(frozen=True)
class ShippedDrafter:
    """A drafter file in ``DATA_DIR`` and the target it was trained for."""

    name: str
    target: str
    filename: str
    sha256: str

    @property
    def path(self) -> Path:
        return DATA_DIR / self.filename


SHIPPED = {
    drafter.name: drafter
    for drafter in (
        ShippedDrafter(
            name="qwen2.5-coder:1.5b-mtp",
            target="qwen2.5-coder:1.5b",
            filename="qwen2.5-coder-1.5b-mtp.safetensors",
            # Digest of the file trained as docs/mtp.md records.
            sha256="0838b1c0ac85cf1195ba3d65bf62a4ac2c9709242c90cd584a256f803f91ef0a",
        ),
    )
}


def is_mtp_drafter(name_or_path: str | Path) -> bool:
    """Return whether ``name_or_path`` names a shipped MTP drafter or an MTP drafter file."""
    text = str(name_or_path)
    if text in SHIPPED:
        return True
    path = Path(text).expanduser()
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    with path.open("rb") as handle:
        header = handle.read(8 + 65536)
    return FORMAT.encode() in header


def load_mtp_drafter(name_or_path: str | Path, *, verify: bool = True) -> MTPWeights:
    """Load a shipped drafter by name (checking its sha256) or a drafter file by path."""
    text = str(name_or_path)
    shipped = SHIPPED.get(text)
    if shipped is None:
        return load_mtp(Path(text).expanduser())
    if not shipped.path.is_file():
        raise ModelNotFoundError(
            f"MTP drafter {text!r} is missing its file {shipped.path}; reinstall draftwise"
        )
    if verify and shipped.sha256:
        digest = sha256_of_file(shipped.path)
        if digest != shipped.sha256:
            raise ModelNotFoundError(
                f"MTP drafter file {shipped.path} has sha256 {digest}, expected "
                f"{shipped.sha256}; reinstall draftwise"
            )
    return load_mtp(shipped.path)

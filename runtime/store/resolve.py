"""Turning what a user typed (a catalogue name or a path) into a model file or folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from draftwise.runtime.errors import ModelFormatError, ModelNotFoundError
from draftwise.runtime.store.files import has_gguf_magic
from draftwise.runtime.store.store import ModelStore, open_store

ModelKind = Literal["gguf", "folder"]


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: a GGUF file or a safetensors folder.

    ``sha256`` is the digest the store recorded at pull time; it is None for
    paths given directly, which are not hashed here.
    """

    name: str
    path: Path
    kind: ModelKind
    sha256: str | None


def resolve_model(name_or_path: str | Path, store_dir: str | Path | None = None) -> ResolvedModel:
    """Resolve a catalogue name in the store at ``store_dir``, or a path; see ``resolve_in``."""
    return resolve_in(open_store(store_dir), name_or_path)


def resolve_in(store: ModelStore, name_or_path: str | Path) -> ResolvedModel:
    """Resolve ``name_or_path`` against ``store``.

    A catalogue name resolves to its pulled file, whose size is checked
    against the manifest (the sha256 is not recomputed). Otherwise the value
    is a path: a file starting with the GGUF magic, or a folder containing
    ``config.json`` and at least one ``*.safetensors`` file.

    Raises:
        ModelNotFoundError: the name is not pulled, its stored file is missing
            or truncated, or the value is neither a known name nor a model path.
        ModelFormatError: a ``.gguf`` file that does not start with the GGUF magic.
        StoreError: the model's manifest is invalid.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, str) and text in store.catalogue:
        return _resolve_pulled(store, text)

    path = Path(text).expanduser()
    if path.is_file():
        return _resolve_file(store, path)
    if path.is_dir():
        return _resolve_folder(path)
    raise ModelNotFoundError(_not_a_model_message(store, text))


def _not_a_model_message(store: ModelStore, text: str) -> str:
    # Imported here: the drafter modules import the store.
    from draftwise.runtime.drafters.mtp_catalogue import SHIPPED

    if text in SHIPPED:
        return (
            f"{text!r} is an MTP drafter, not a language model; pass it as a draft, "
            f"for example `draftwise generate --draft {text}`"
        )
    return (
        f"{text!r} is neither a known model name nor an existing path; known models: "
        f"{', '.join(sorted(store.catalogue))}; MTP drafters for --draft: "
        f"{', '.join(sorted(SHIPPED))}; a path must be a GGUF file or a folder "
        "containing config.json and *.safetensors files"
    )


def _resolve_pulled(store: ModelStore, name: str) -> ResolvedModel:
    manifest = store.read_manifest(name)
    if manifest is None:
        raise ModelNotFoundError(
            f"model {name!r} is not pulled into the store {store.root}; "
            f"run `draftwise pull {name}` first"
        )
    status = store.check(manifest, full=False)
    path = store.model_path(name)
    if not status.is_usable:
        raise ModelNotFoundError(
            f"stored file {path} of model {name!r} failed its check ({status}); "
            f"run `draftwise pull {name}` to assemble it again"
        )
    return ResolvedModel(name=name, path=path, kind="gguf", sha256=manifest.sha256)


def _resolve_file(store: ModelStore, path: Path) -> ResolvedModel:
    if has_gguf_magic(path):
        return ResolvedModel(name=path.stem, path=path.absolute(), kind="gguf", sha256=None)
    if path.suffix.lower() == ".gguf":
        raise ModelFormatError(
            f"{path} does not start with the GGUF magic bytes b'GGUF'; the file is damaged "
            "or not a GGUF file, so download or pull it again"
        )
    raise ModelNotFoundError(_not_a_model_message(store, str(path)))


def _resolve_folder(path: Path) -> ResolvedModel:
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any(path.glob("*.safetensors")):
        missing.append("*.safetensors files")
    if missing:
        raise ModelNotFoundError(
            f"folder {path} is not a model folder: it has no {' and no '.join(missing)}; "
            "a model folder needs config.json and *.safetensors weights"
        )
    return ResolvedModel(name=path.name, path=path.absolute(), kind="folder", sha256=None)

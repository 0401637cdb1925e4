"""The offline text an MTP drafter trains on: source files and workload prompts.

Every document is a token window. Source files come from this machine (the
Python standard library, installed packages' sources, C headers and
JavaScript where present); workload prompts are rendered with the target's
chat template. Every fourth workload prompt is held out for evaluation.
"""

from __future__ import annotations

import json
import random
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCE_SUFFIXES = (".py", ".c", ".h", ".js", ".sh", ".cpp", ".go", ".ts")
# Documentation files. The target's responses mix prose and code, and source
# files alone contain little prose.
DOC_SUFFIXES = (".md", ".rst")
HELD_OUT_EVERY = 4


@dataclass(frozen=True)
class Document:
    """One training or evaluation window: ``name`` is unique, ``split`` "train" or "eval"."""

    name: str
    split: str
    category: str
    token_ids: list[int]


def source_roots() -> list[Path]:
    """Folders whose source files serve as training text."""
    paths = sysconfig.get_paths()
    roots = [Path(paths["stdlib"]), Path(paths["purelib"]), Path("/usr/include"), Path("/usr/lib")]
    return [root for root in roots if root.is_dir()]


def list_source_files(
    max_files: int, seed: int, suffixes: tuple[str, ...] = SOURCE_SUFFIXES
) -> list[Path]:
    """Return up to ``max_files`` files over 2 kB, a seeded sample over ``suffixes``."""
    by_suffix: dict[str, list[Path]] = {suffix: [] for suffix in suffixes}
    for root in source_roots():
        for path in root.rglob("*"):
            suffix = path.suffix
            if suffix in by_suffix and len(by_suffix[suffix]) < 20000 and _usable(path):
                by_suffix[suffix].append(path)
    rng = random.Random(seed)
    for files in by_suffix.values():
        files.sort()
        rng.shuffle(files)
    # Python first in weight, other languages interleaved so every one appears.
    chosen: list[Path] = []
    queues = [files for files in by_suffix.values() if files]
    while len(chosen) < max_files and any(queues):
        for files in queues:
            take = 3 if files and files[0].suffix == ".py" else 1
            for _ in range(take):
                if files and len(chosen) < max_files:
                    chosen.append(files.pop())
    return chosen


def _usable(path: Path) -> bool:
    try:
        return path.is_file() and 2048 <= path.stat().st_size <= 400_000
    except OSError:
        return False


def workload_prompts(path: Path | None) -> list[dict[str, Any]]:
    """Read JSON-lines prompts ``{id, category, messages}``; none without a path."""
    if path is None:
        return []
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def iter_documents(
    language_model: Any,
    window: int,
    max_sources: int,
    seed: int,
    workload: Path | None,
    suffixes: tuple[str, ...] = SOURCE_SUFFIXES,
) -> Iterator[Document]:
    """Yield training prompts, source windows and held-out prompts interleaved.

    Interleaving keeps every kind present however early extraction stops.
    """
    prompts = workload_prompts(workload)
    held_out = [p for i, p in enumerate(prompts) if i % HELD_OUT_EVERY == 0]
    training = [p for i, p in enumerate(prompts) if i % HELD_OUT_EVERY != 0]
    sources = list_source_files(max_sources, seed, suffixes)
    rng = random.Random(seed)
    for index in range(max(len(training), len(sources), len(held_out))):
        if index < len(training):
            yield _prompt_document(language_model, training[index], window, "train")
        if index < len(sources):
            document = _source_document(language_model, sources[index], window, rng)
            if document is not None:
                yield document
        if index % 2 == 0 and index // 2 < len(held_out):
            yield _prompt_document(language_model, held_out[index // 2], window, "eval")


def _prompt_document(
    language_model: Any, prompt: dict[str, Any], window: int, split: str
) -> Document:
    ids = language_model.encode_messages(prompt["messages"])
    # The newest tokens of a prompt are what generation continues from.
    return Document(f"prompt-{prompt['id']}", split, prompt["category"], ids[-window:])


def _source_document(
    language_model: Any, path: Path, window: int, rng: random.Random
) -> Document | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    ids = language_model.tokenizer.encode(text)
    if len(ids) < window // 2:
        return None
    start = rng.randrange(0, max(1, len(ids) - window))
    name = "source-" + str(path).strip("/").replace("/", "_")
    return Document(name, "train", path.suffix.lstrip("."), ids[start : start + window])

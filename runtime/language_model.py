"""Load a model by catalogue name or path: weights, architecture and tokenizer together."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from draftwise.runtime.errors import TokenizerMismatchError
from draftwise.runtime.models.registry import build_model
from draftwise.runtime.models.transformer import Transformer

log = structlog.get_logger("draftwise.runtime")


class Tokenizer(Protocol):
    @property
    def vocab_size(self) -> int: ...

    @property
    def eos_token_ids(self) -> frozenset[int]: ...

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]: ...

    def decode(self, token_ids: Any) -> str: ...

    def apply_chat_template(
        self,
        messages: list[dict[str, str]],
        *,
        add_generation_prompt: bool = True,
        system: str | None = None,
    ) -> str: ...


@dataclass
class LanguageModel:
    """A built model with its tokenizer; ``name`` is what the user asked for."""

    name: str
    model: Transformer
    tokenizer: Tokenizer
    path: Path
    source_sha256: str
    load_s: float

    def encode_messages(
        self, messages: list[dict[str, str]], system: str | None = None
    ) -> list[int]:
        """Render ``messages`` with the model's chat template and tokenize the result."""
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, system=system
        )
        return self.tokenizer.encode(text, add_special_tokens=False)


def load_language_model(
    name_or_path: str | Path,
    *,
    store_dir: str | Path | None = None,
    policy: str = "auto",
    cache_dir: str | Path | None = None,
) -> LanguageModel:
    """Resolve, load and build a model; raise a DraftwiseError with the fix on failure."""
    from draftwise.runtime.loading import load_gguf
    from draftwise.runtime.loading.tokenizer import load_tokenizer
    from draftwise.runtime.store import resolve_model

    started = time.perf_counter()
    resolved = resolve_model(name_or_path, store_dir)
    if resolved.kind == "folder":
        from draftwise.runtime.loading import load_safetensors_folder

        loaded = load_safetensors_folder(resolved.path, cache_dir=cache_dir)
    else:
        loaded = load_gguf(resolved.path, policy=policy, cache_dir=cache_dir)
    model = build_model(loaded.architecture, loaded.metadata, loaded.weights, str(name_or_path))
    tokenizer = load_tokenizer(loaded)
    elapsed = time.perf_counter() - started
    log.info(
        "model_loaded",
        actor="runtime",
        model=str(name_or_path),
        architecture=loaded.architecture,
        weight_bytes=model.nbytes,
        load_ms=round(elapsed * 1000, 1),
    )
    return LanguageModel(
        name=str(name_or_path),
        model=model,
        tokenizer=tokenizer,
        path=loaded.path,
        source_sha256=loaded.source_sha256,
        load_s=elapsed,
    )


def check_draft_compatible(target: LanguageModel, draft: LanguageModel) -> None:
    """Raise TokenizerMismatchError unless ``draft`` tokenizes exactly like ``target``.

    Vocabularies may differ only by padding rows of the embedding table: the
    tokenizers themselves must agree on every token and on the EOS tokens.
    """
    target_vocab = target.tokenizer.vocab_size
    draft_vocab = draft.tokenizer.vocab_size
    problem = None
    if target_vocab != draft_vocab:
        problem = f"vocab {draft_vocab} vs {target_vocab}"
    elif target.tokenizer.eos_token_ids != draft.tokenizer.eos_token_ids:
        problem = (
            f"EOS tokens {sorted(draft.tokenizer.eos_token_ids)} vs "
            f"{sorted(target.tokenizer.eos_token_ids)}"
        )
    else:
        probe = "def f(x):\n    return x  # ünïcødé 🐍 <|im_start|><|im_end|>"
        if target.tokenizer.encode(probe) != draft.tokenizer.encode(probe):
            problem = "the same text encodes to different token ids"
    if problem is not None:
        raise TokenizerMismatchError(
            f"draft model '{draft.name}' uses a different tokenizer than target "
            f"'{target.name}' ({problem}); pick a draft from the same model family"
        )
    if (
        draft.model.config.vocab_size < target_vocab
        or target.model.config.vocab_size < target_vocab
    ):
        raise TokenizerMismatchError(
            f"draft model '{draft.name}' has {draft.model.config.vocab_size} embedding rows "
            f"but its tokenizer has {draft_vocab} tokens; the file is inconsistent"
        )

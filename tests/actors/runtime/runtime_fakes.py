"""Tiny models wrapped as LanguageModels, reference outputs and fault-injecting wrappers."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from fakes import CharTokenizer, tiny_model

from draftwise.actors.runtime import Runtime, RuntimeConfig
from draftwise.protocol import Chunk, Done, GenerateRequest
from draftwise.runtime.engine import Engine
from draftwise.runtime.generate import GenerationParams
from draftwise.runtime.language_model import LanguageModel

PROMPTS = [
    "def add(a, b): return a + b",
    "hello world, hello world, hello",
    "for i in range(10): print(i)",
    "abcabcabcabcabc",
    "The quick brown fox",
    "x = [1, 2, 3]; y = x[::-1]",
    "SELECT name FROM users WHERE id = 1",
    "print('draftwise')",
]


def language_model(name: str, model: Any = None, seed: int = 0) -> LanguageModel:
    return LanguageModel(
        name=name,
        model=model if model is not None else tiny_model(seed=seed),
        tokenizer=CharTokenizer(),  # type: ignore[arg-type]
        path=Path("."),
        source_sha256="0" * 64,
        load_s=0.0,
    )


def tiny_models() -> dict[str, LanguageModel]:
    """A target and a draft with the same weights, so drafts are often accepted."""
    target = tiny_model(seed=0)
    return {
        "tiny": language_model("tiny", target),
        "tiny-draft": language_model("tiny-draft", target),
    }


def open_runtime(models: dict[str, LanguageModel], **config: Any) -> Any:
    config.setdefault("model", "tiny")
    return Runtime.open(RuntimeConfig(**config), models=models)


def solo_ids(
    target: LanguageModel, prompt: str, max_tokens: int, stop: tuple[str, ...] = ()
) -> list[int]:
    """What plain greedy decoding produces for ``prompt`` alone, with the synchronous engine."""
    params = GenerationParams(max_tokens=max_tokens, stop=stop)
    prompt_ids = target.tokenizer.encode(prompt)
    return [
        t for chunk in Engine(target).generate(prompt_ids, params, "off") for t in chunk.token_ids
    ]


async def collect(rt: Any, request: GenerateRequest, **kw: Any) -> tuple[list[Chunk], Done]:
    chunks: list[Chunk] = []
    async for reply in rt.generate(request, **kw):
        if isinstance(reply, Chunk):
            chunks.append(reply)
        else:
            return chunks, reply
    raise AssertionError("generate ended without Done")


def output_ids(chunks: list[Chunk]) -> list[int]:
    return [t for chunk in chunks for t in chunk.token_ids]


class WrappedModel:
    """A Transformer stand-in that delegates everything to ``inner``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, inputs: Any, cache: Any, **kw: Any) -> Any:
        return self.inner(inputs, cache, **kw)


class PoisonedModel(WrappedModel):
    """Raise during decoding of any sequence whose prompt contained ``poison_id``."""

    def __init__(self, inner: Any, poison_id: int, after_tokens: int = 3) -> None:
        super().__init__(inner)
        self.poison_id = poison_id
        self.after_tokens = after_tokens
        # cache -> kv_offset at which to fail; weak keys, so a new cache that
        # reuses a freed one's id() is not mistaken for it.
        self._limits: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def __call__(self, inputs: Any, cache: Any, **kw: Any) -> Any:
        if kw.get("last_row_only") and self.poison_id in inputs.tolist():  # a prompt slice
            self._limits[cache] = cache.kv_offset + inputs.shape[0] + self.after_tokens
        self._check(cache)
        return self.inner(inputs, cache, **kw)

    def forward_many(self, inputs: list[Any], caches: list[Any]) -> Any:
        # A pass shared with the poisoned sequence fails as a whole.
        for cache in caches:
            self._check(cache)
        return self.inner.forward_many(inputs, caches)

    def _check(self, cache: Any) -> None:
        limit = self._limits.get(cache)
        if limit is not None and cache.kv_offset >= limit:
            raise RuntimeError("injected fault in the target's forward pass")


class BlockingModel(WrappedModel):
    """Block the first call with more than ``min_tokens`` inputs until ``release`` is set."""

    def __init__(self, inner: Any, min_tokens: int) -> None:
        super().__init__(inner)
        self.min_tokens = min_tokens
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, inputs: Any, cache: Any, **kw: Any) -> Any:
        if inputs.shape[0] >= self.min_tokens and not self.entered.is_set():
            self.entered.set()
            self.release.wait(timeout=60)
        return self.inner(inputs, cache, **kw)

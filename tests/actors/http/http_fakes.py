"""Tiny models with a chat template, a scripted model, and a gateway started on a free port."""

from __future__ import annotations

import functools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import trio
from fakes import EOS_ID, TINY_VOCAB, CharTokenizer, tiny_model

from draftwise.actors.http import serve_http
from draftwise.actors.runtime import Runtime, RuntimeConfig
from draftwise.runtime.engine import Engine
from draftwise.runtime.generate import GenerationParams
from draftwise.runtime.language_model import LanguageModel
from draftwise.runtime.loading.chat_template import render_chat_template

MODEL = "tiny"
TARGET = "qwen2.5-coder:1.5b"
DRAFT = "qwen2.5-coder:0.5b"

# A compact template in the shape of Qwen 2.5's: tools listed in a system turn,
# assistant tool calls as <tool_call> JSON, tool results as <tool_response>.
TEMPLATE = (
    "{%- if tools %}<|system|>tools:{% for t in tools %} {{ t.function.name }}{% endfor %}"
    "{% endif -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'tool' -%}<|tool|><tool_response>{{ m.content }}</tool_response>"
    "{%- elif m.tool_calls is defined and m.tool_calls -%}<|assistant|>{{ m.content }}"
    "{%- for c in m.tool_calls -%}<tool_call>"
    "{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}</tool_call>"
    "{%- endfor -%}"
    "{%- else -%}<|{{ m.role }}|>{{ m.content }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
ASSISTANT_MARKER = "<|assistant|>"


class TemplateTokenizer(CharTokenizer):
    """The character tokenizer with `TEMPLATE` as its chat template."""

    chat_template = TEMPLATE

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return super().encode(text)

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        system: str | None = None,
    ) -> str:
        if system is not None:
            messages = [{"role": "system", "content": system}, *messages]
        return render_chat_template(
            TEMPLATE,
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token="",
            eos_token="",
        )


def language_model(name: str, model: Any) -> LanguageModel:
    return LanguageModel(
        name=name,
        model=model,
        tokenizer=TemplateTokenizer(),  # type: ignore[arg-type]
        path=Path("."),
        source_sha256="0" * 64,
        load_s=0.0,
    )


class WrappedModel:
    """A Transformer stand-in that delegates to ``inner``; subclasses change one thing."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, token_ids: Any, cache: Any, **kw: Any) -> Any:
        return self.inner(token_ids, cache, **kw)


class SlowModel(WrappedModel):
    """Sleep ``delay_s`` on the device thread in every forward pass, so streams last."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        super().__init__(inner)
        self.delay_s = delay_s
        self.calls = 0

    def __call__(self, token_ids: Any, cache: Any, **kw: Any) -> Any:
        self.calls += 1
        time.sleep(self.delay_s)
        return self.inner(token_ids, cache, **kw)


class ScriptedModel(WrappedModel):
    """Greedy output after the last assistant marker is a chosen script, then EOS.

    ``choose_script`` gets the text before the generation point and returns
    the output. The real model still runs, so caches fill as usual; only the
    logits are replaced by a one-hot row per position.
    """

    def __init__(self, inner: Any, choose_script: Callable[[str], str]) -> None:
        super().__init__(inner)
        self.choose_script = choose_script
        self._history: dict[int, list[int]] = {}  # id(cache) -> token ids at positions 0..
        self._newest: list[int] = []

    def __call__(self, token_ids: Any, cache: Any, **kw: Any) -> Any:
        start = cache.kv_offset
        history = self._history.setdefault(id(cache), [])
        if len(history) < start:
            # A cache that starts from another session's prefix (prefix reuse
            # copies caches): that prefix is the newest history seen.
            history[:] = self._newest[:start]
        del history[start:]
        history.extend(int(t) for t in token_ids.tolist())
        self._newest = history
        output = self.inner(token_ids, cache, **kw)
        rows = len(history) - start
        positions = [len(history) - 1] if kw.get("last_row_only") else range(start, start + rows)
        logits = [self._one_hot(self._next_token(history, p)) for p in positions]
        return type(output)(logits=mx.array(logits), hidden=output.hidden)

    def _next_token(self, history: list[int], position: int) -> int:
        text = "".join(chr(32 + t) for t in history[: position + 1])
        marker = text.rfind(ASSISTANT_MARKER)
        if marker < 0:
            return 0
        prompt_end = marker + len(ASSISTANT_MARKER)
        script = CharTokenizer().encode(self.choose_script(text[:prompt_end]))
        index = position + 1 - prompt_end
        return script[index] if index < len(script) else EOS_ID

    @staticmethod
    def _one_hot(token_id: int) -> list[float]:
        row = [0.0] * TINY_VOCAB
        row[token_id] = 10.0
        return row


def reference_text(target: LanguageModel, prompt_ids: list[int], max_tokens: int) -> str:
    """Plain greedy output of the synchronous engine, as `draftwise generate` prints it."""
    params = GenerationParams(max_tokens=max_tokens)
    return "".join(chunk.text for chunk in Engine(target).generate(prompt_ids, params, "off"))


@dataclass
class RunningGateway:
    runtime: Any
    base_url: str
    target: LanguageModel

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"


@asynccontextmanager
async def running_gateway(
    model: Any = None, *, api_key: str | None = None, **config: Any
) -> AsyncIterator[RunningGateway]:
    """A runtime on a tiny model and the gateway serving it on 127.0.0.1, a free port."""
    target = language_model(MODEL, model if model is not None else tiny_model(seed=0))
    runtime_config = RuntimeConfig(model=MODEL, **config)
    async with Runtime.open(runtime_config, models={MODEL: target}) as runtime:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(serve_http, runtime, port=0, api_key=api_key)
            urls = await nursery.start(serve)
            yield RunningGateway(runtime, urls[0], target)
            nursery.cancel_scope.cancel()


async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking client call off the event loop that serves it."""
    return await trio.to_thread.run_sync(functools.partial(function, *args, **kwargs))


class StreamReader(threading.Thread):
    """Read a streamed response in a thread; ``stop_after`` events, then hang up."""

    def __init__(self, open_stream: Callable[[], Any], stop_after: int | None = None) -> None:
        super().__init__(daemon=True)
        self.open_stream = open_stream
        self.stop_after = stop_after
        self.events: list[Any] = []
        self.error: BaseException | None = None
        self.first_event = threading.Event()

    def run(self) -> None:
        try:
            stream = self.open_stream()
            with stream:
                for event in stream:
                    self.events.append(event)
                    self.first_event.set()
                    if self.stop_after is not None and len(self.events) >= self.stop_after:
                        break
        except BaseException as error:
            self.error = error
        finally:
            self.first_event.set()


def post(url: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> tuple:
    """POST raw bytes or JSON; return (status, parsed JSON body)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"content-type": "application/json", **(headers or {})},
    )
    return _open(request)


def get(url: str, headers: dict[str, str] | None = None) -> tuple:
    return _open(urllib.request.Request(url, headers=headers or {}))


def _open(request: urllib.request.Request) -> tuple:
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


_loaded: dict[str, LanguageModel] = {}


def load_or_skip(name: str) -> LanguageModel:
    """Load a real model once per test session, or skip saying how to install it."""
    import pytest

    from draftwise.runtime.errors import ModelNotFoundError
    from draftwise.runtime.language_model import load_language_model

    if name not in _loaded:
        try:
            _loaded[name] = load_language_model(name)
        except ModelNotFoundError as error:
            pytest.skip(
                f"real model {name} is not installed ({error}); run `draftwise pull {name}`"
            )
    return _loaded[name]

"""The blocking facade of the runtime: trio runs in a background thread.

with SyncRuntime.open(RuntimeConfig(model="qwen2.5-coder:1.5b")) as rt:
    print(rt.chat([{"role": "user", "content": "Reverse a list in Python."}]))
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from draftwise.actors.device import settle_weights
from draftwise.actors.runtime import Runtime, RuntimeConfig
from draftwise.protocol import Chunk, Done, GenerateRequest, ModelInfo

_END = object()


class SyncRuntime:
    """A `Runtime` driven from plain code; get one from `SyncRuntime.open`."""

    def __init__(self, runtime: Runtime, token: trio.lowlevel.TrioToken, nursery: Any) -> None:
        self._runtime = runtime
        self._token = token
        self._nursery = nursery

    @classmethod
    @contextmanager
    def open(cls, config: RuntimeConfig, **kw: Any) -> Iterator[SyncRuntime]:
        """Start trio and the runtime in a thread; ``kw`` goes to `Runtime.open`."""
        settle_weights(kw.get("models", {}).values())
        started = threading.Event()
        box: dict[str, Any] = {}
        thread = threading.Thread(
            target=trio.run,
            args=(_serve, config, kw, box, started),
            name="draftwise-trio",
            daemon=True,
        )
        thread.start()
        started.wait()
        if "error" in box:
            thread.join()
            raise box["error"]
        try:
            yield cls(box["runtime"], box["token"], box["nursery"])
        finally:
            trio.from_thread.run_sync(box["stop"].set, trio_token=box["token"])
            thread.join()
        if "error" in box:
            raise box["error"]

    def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return trio.from_thread.run_sync(lambda: fn(*args, **kw), trio_token=self._token)

    def _await(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        async def call() -> Any:
            return await fn(*args, **kw)

        return trio.from_thread.run(call, trio_token=self._token)

    def generate(
        self, request: GenerateRequest, *, reuse_prefix: bool = False
    ) -> Iterator[Chunk | Done]:
        """Yield the replies of `Runtime.generate`; closing the iterator cancels the request."""
        replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
        scope = trio.CancelScope()
        pumped = threading.Event()

        async def pump() -> None:
            try:
                with scope:
                    async for reply in self._runtime.generate(request, reuse_prefix=reuse_prefix):
                        replies.put(reply)
                    replies.put(_END)
            except Exception as error:
                replies.put(error)
            finally:
                pumped.set()

        self._call(self._nursery.start_soon, pump)
        finished = False
        try:
            while True:
                item = replies.get()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:
                # Returns once the request stopped at a round boundary and released its session.
                self._call(scope.cancel)
                pumped.wait()

    def chat(self, messages: list[dict[str, str]], **options: Any) -> str:
        return str(self._await(self._runtime.chat, messages, **options))

    def cancel(self, request_id: str) -> bool:
        return bool(self._await(self._runtime.cancel, request_id))

    def close_session(self, session_id: str) -> int:
        return int(self._await(self._runtime.close_session, session_id))

    def stats(self) -> dict[str, Any]:
        return dict(self._call(self._runtime.stats))

    def models(self) -> list[ModelInfo]:
        return list(self._call(self._runtime.models))

    def health(self) -> tuple[str, str | None]:
        status, detail = self._call(self._runtime.health)
        return str(status), detail

    def render_chat(self, messages: list[dict[str, Any]], **kw: Any) -> str:
        return str(self._call(self._runtime.render_chat, messages, **kw))

    def count_tokens(self, text: str, **kw: Any) -> int:
        return int(self._call(self._runtime.count_tokens, text, **kw))

    def context_length(self, model: str | None = None) -> int:
        return int(self._call(self._runtime.context_length, model))


async def _serve(
    config: RuntimeConfig, kw: dict[str, Any], box: dict[str, Any], started: threading.Event
) -> None:
    try:
        async with Runtime.open(config, **kw) as runtime, trio.open_nursery() as nursery:
            box.update(
                runtime=runtime,
                token=trio.lowlevel.current_trio_token(),
                nursery=nursery,
                stop=trio.Event(),
            )
            started.set()
            await box["stop"].wait()
            nursery.cancel_scope.cancel()
    except Exception as error:
        box["error"] = error
    finally:
        started.set()

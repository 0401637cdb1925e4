"""The device thread: one OS thread that runs every MLX call of the runtime.

MLX work never runs on the trio event loop, so sockets and health checks
stay responsive during a long prefill, and one FIFO queue orders all
device work. A job that has started always runs to its end: awaiting
`DeviceThread.call` is shielded from cancellation, so a cancelled caller
leaves caches in the state the finished job produced, and the caller's
cancellation takes effect right after the job.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import mlx.core as mx
import outcome
import structlog
import trio

log = structlog.get_logger("draftwise.actors")

T = TypeVar("T")

_STOP = object()


class DeviceThread:
    """Run callables one at a time, in submission order, on a dedicated thread.

    Use as ``with DeviceThread() as device:`` from inside trio; leaving the
    block lets queued jobs finish and joins the thread.
    """

    def __init__(self, name: str = "draftwise-device") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.jobs_run = 0

    def __enter__(self) -> DeviceThread:
        self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
        self._thread.start()
        log.info("device_thread_started", actor="device", thread=self._name)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._jobs.put(_STOP)
        if self._thread is not None:
            self._thread.join()
        log.info("device_thread_stopped", actor="device", jobs_run=self.jobs_run)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the device thread and return its result or raise its error."""
        if not self.alive:
            raise RuntimeError("the device thread is not running; open the runtime first")
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[outcome.Outcome[T]] = []

        def finish(result: outcome.Outcome[T]) -> None:
            box.append(result)
            done.set()

        self._jobs.put((fn, args, token, finish))
        with trio.CancelScope(shield=True):
            await done.wait()
        return box[0].unwrap()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            fn, args, token, finish = job
            result = outcome.capture(fn, *args)
            self.jobs_run += 1
            try:
                token.run_sync_soon(finish, result)
            except trio.RunFinishedError:
                log.warning("device_result_dropped", actor="device", reason="trio run finished")


def settle_weights(models: Any) -> None:
    """Evaluate the weights of ``models`` (LanguageModels) on the calling thread.

    MLX ties a lazy array to a stream of the thread that created it, and
    another thread cannot evaluate it. Models loaded outside the device
    thread must therefore be settled on their own thread before the device
    thread uses them.
    """
    for lm in models:
        try:
            mx.eval(*lm.model.parameters())
        except RuntimeError as error:
            raise RuntimeError(
                f"model '{lm.name}' has lazy arrays from another thread, which this thread cannot "
                f"evaluate ({error}); "
                "call mx.eval(*model.parameters()) on the thread that loaded it, or let the "
                "runtime load it by name"
            ) from error

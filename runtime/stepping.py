"""Generation as step generators, so several sequences can share one target pass.

Plain and speculative generation are written as generators that yield three
kinds of item:

- `ForwardCall`: run the target over new tokens of one sequence; the driver
  sends back the `ForwardOutput` (lazy);
- `EvalCall`: evaluate these lazy arrays; the driver sends back None;
- `GenerationChunk`: output for the caller; the driver sends back None.

`drive` runs one generator alone and yields its chunks: that is the
ordinary synchronous API. `advance_together` runs one step (up to the next
chunk) of several generators at once. Their forward calls on the same model
become one `Transformer.forward_many` pass, and their evaluations one
`evaluate` call, so the weights are read once for every sequence in the
step. Each row computes the same bits either way (the kernel's batch
invariance), so a sequence's output does not depend on its company.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

import mlx.core as mx
import outcome

from draftwise.runtime.cache import ModelCache
from draftwise.runtime.models.transformer import ForwardOutput, Transformer

if TYPE_CHECKING:
    from draftwise.runtime.generate import GenerationChunk

T = TypeVar("T")

# The host waits for the device here and nowhere else in a round; tests
# replace it to count syncs.
evaluate = mx.eval


@dataclass
class ForwardCall:
    """Run ``model`` over ``token_ids`` at the end of ``cache``; the reply is its output."""

    model: Transformer
    token_ids: mx.array
    cache: ModelCache


@dataclass
class EvalCall:
    """Evaluate ``arrays``; the reply is None."""

    arrays: list[mx.array] = field(default_factory=list)


StepItem: TypeAlias = "ForwardCall | EvalCall | GenerationChunk"
StepGenerator: TypeAlias = Generator[StepItem, "ForwardOutput | None", None]


def drive(steps: StepGenerator) -> Iterator[GenerationChunk]:
    """Run ``steps`` alone: run each of its calls directly and yield its chunks."""
    reply: ForwardOutput | None = None
    while True:
        try:
            item = steps.send(reply)
        except StopIteration:
            return
        if isinstance(item, ForwardCall | EvalCall):
            reply = _answer(item)
        else:
            reply = None
            yield item


def drive_call(steps: Generator[StepItem, Any, T]) -> T:
    """Run a step generator that yields only calls, alone; return what it returns."""
    reply: ForwardOutput | None = None
    while True:
        try:
            item = steps.send(reply)
        except StopIteration as stop:
            return cast(T, stop.value)
        if not isinstance(item, ForwardCall | EvalCall):
            raise TypeError(f"expected a ForwardCall or EvalCall, got {type(item).__name__}")
        reply = _answer(item)


def _answer(item: ForwardCall | EvalCall) -> ForwardOutput | None:
    if isinstance(item, ForwardCall):
        return item.model(item.token_ids, item.cache, return_hidden=True)
    evaluate(*item.arrays)
    return None


@dataclass
class _Running:
    steps: StepGenerator
    item: StepItem | None = None
    result: outcome.Outcome[GenerationChunk | None] | None = None

    def send(self, reply: ForwardOutput | None) -> None:
        """Advance to the next call or chunk; record a chunk, the end, or an error."""
        try:
            item = self.steps.send(reply)
        except StopIteration:
            self.item, self.result = None, outcome.Value(None)
            return
        except Exception as error:  # that sequence's failure, not the batch's
            self.item, self.result = None, outcome.Error(error)
            return
        if isinstance(item, ForwardCall | EvalCall):
            self.item = item
        else:
            self.item, self.result = None, outcome.Value(item)

    def fail(self, error: BaseException) -> None:
        self.item, self.result = None, outcome.Error(error)
        self.steps.close()


def advance_together(
    generators: list[StepGenerator],
) -> list[outcome.Outcome[GenerationChunk | None]]:
    """Advance every generator to its next chunk, sharing forward passes and evaluations.

    Returns one outcome per generator, in order: its chunk, None when it
    ended without one, or the exception it raised. A failure of a shared
    forward pass fails every sequence in it; the others go on.
    """
    running = [_Running(steps) for steps in generators]
    for run in running:
        run.send(None)
    while True:
        forwards = [run for run in running if isinstance(run.item, ForwardCall)]
        if forwards:
            _forward_together(forwards)
            continue
        evaluations = [run for run in running if isinstance(run.item, EvalCall)]
        if not evaluations:
            break
        _evaluate_together(evaluations)
    results = []
    for run in running:
        assert run.result is not None
        results.append(run.result)
    return results


def _forward_together(runs: list[_Running]) -> None:
    by_model: dict[int, list[_Running]] = {}
    for run in runs:
        assert isinstance(run.item, ForwardCall)
        by_model.setdefault(id(run.item.model), []).append(run)
    for group in by_model.values():
        calls: list[Any] = [run.item for run in group]
        model = calls[0].model
        if len(calls) > 1:
            offsets = [call.cache.kv_offset for call in calls]
            try:
                outputs = model.forward_many(
                    [call.token_ids for call in calls], [call.cache for call in calls]
                )
            except Exception:
                # One sequence may be at fault: undo what the shared pass
                # appended and run each sequence alone, so only its own fails.
                for call, offset in zip(calls, offsets, strict=True):
                    _restore(call.cache, offset)
            else:
                for run, output in zip(group, outputs, strict=True):
                    run.send(output)
                continue
        for run, call in zip(group, calls, strict=True):
            try:
                output = model(call.token_ids, call.cache, return_hidden=True)
            except Exception as error:
                run.fail(error)
            else:
                run.send(output)


def _restore(cache: ModelCache, offset: int) -> None:
    """Trim every layer of ``cache`` back to ``offset`` positions (layers may differ)."""
    for layer in cache.layers:
        if layer.offset > offset:
            layer.trim(layer.offset - offset)


def _evaluate_together(runs: list[_Running]) -> None:
    arrays = [array for run in runs for array in run.item.arrays]  # type: ignore[union-attr]
    try:
        evaluate(*arrays)
    except Exception:
        # Find whose graph fails: evaluate each sequence's arrays on its own.
        for run in runs:
            try:
                evaluate(*run.item.arrays)  # type: ignore[union-attr]
            except Exception as error:
                run.fail(error)
    for run in runs:
        if isinstance(run.item, EvalCall):
            run.send(None)

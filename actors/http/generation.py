"""One gateway request's run on the runtime, independent of the API shape.

`prepare_generation` checks the model, counts the prompt's tokens against the
context and builds the `GenerateRequest`. `Generation.text_deltas` drives
`Runtime.generate` with prefix reuse, records time to first token and the
speculation counts, and feeds the gateway metrics.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import structlog

from draftwise.actors.http.errors import ApiError, from_runtime_error
from draftwise.actors.http.metrics import GatewayMetrics
from draftwise.protocol import Chunk, Done
from draftwise.protocol.request_messages import (
    MAX_MAX_TOKENS,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    GenerateRequest,
    SamplingParams,
    Speculation,
)
from draftwise.runtime.errors import DraftwiseError

log = structlog.get_logger("draftwise.http")


@dataclass(frozen=True)
class GenerationSpec:
    """A route's request to the runtime, translated from its API's body."""

    prompt: str
    model: str
    max_tokens: int | None
    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    speculation: Speculation | None = None
    """The request's draftwise extension field; None takes the gateway's default."""


def new_request_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def resolve_model(runtime: Any, name: str) -> str:
    """Return ``name`` if the runtime serves it as a target; raise `ApiError` 404 otherwise."""
    targets = [info.name for info in runtime.models() if info.role == "target"]
    if name in targets:
        return name
    raise ApiError(
        404,
        f"model '{name}' not found; this server serves {', '.join(targets) or 'no model'}",
        param="model",
        code="model_not_found",
    )


def prepare_generation(
    runtime: Any, spec: GenerationSpec, request_id: str, default_speculation: Speculation = "auto"
) -> Generation:
    """Check the request against the model and build its `Generation`.

    Raises `ApiError` 400 for a prompt that fills the context (naming both
    token counts) or for stop strings beyond the runtime's limits. A
    ``max_tokens`` that would overrun the context is lowered to what fits, and
    no ``max_tokens`` means the rest of the context.
    """
    context_length = runtime.context_length(spec.model)
    prompt_tokens = runtime.count_tokens(spec.prompt, model=spec.model)
    if prompt_tokens >= context_length:
        raise ApiError(
            400,
            f"the prompt has {prompt_tokens} tokens but model '{spec.model}' has a context of "
            f"{context_length} tokens; shorten the conversation",
            param="messages",
            code="context_length_exceeded",
        )
    _check_stop_strings(spec.stop)

    room = context_length - prompt_tokens
    max_tokens = min(spec.max_tokens or room, room, MAX_MAX_TOKENS)
    request = GenerateRequest(
        request_id=request_id,
        prompt=spec.prompt,
        model=spec.model,
        sampling=SamplingParams(
            temperature=spec.temperature, top_k=spec.top_k, top_p=spec.top_p, seed=spec.seed
        ),
        stop=list(spec.stop),
        max_tokens=max_tokens,
        speculation=default_speculation if spec.speculation is None else spec.speculation,
        stream=True,
    )
    return Generation(runtime, request, prompt_tokens)


def _check_stop_strings(stop: list[str]) -> None:
    if len(stop) > MAX_STOP_STRINGS:
        raise ApiError(
            400,
            f"{len(stop)} stop strings given; send at most {MAX_STOP_STRINGS}",
            param="stop",
        )
    for text in stop:
        if not text or len(text) > MAX_STOP_CHARS:
            raise ApiError(
                400,
                f"stop string of {len(text)} characters; each must have 1 to {MAX_STOP_CHARS}",
                param="stop",
            )


class Generation:
    """One run of `Runtime.generate` for a gateway request.

    After `text_deltas` is exhausted, `done` contains the runtime's `Done`. An
    error before or during the run is raised as `ApiError`. Closing the
    iterator early (a client disconnect) cancels the runtime request.
    """

    def __init__(self, runtime: Any, request: GenerateRequest, prompt_tokens: int) -> None:
        self.runtime = runtime
        self.request = request
        self.prompt_tokens = prompt_tokens
        self.done: Done | None = None
        self.completion_tokens = 0
        self.ttft_s: float | None = None
        self.total_s = 0.0

    @property
    def model(self) -> str:
        assert self.request.model is not None
        return self.request.model

    async def text_deltas(
        self, metrics: GatewayMetrics, endpoint: str
    ) -> AsyncGenerator[str, None]:
        started = time.perf_counter()
        outcome = "cancelled"
        try:
            replies = self.runtime.generate(self.request, reuse_prefix=True)
            async with aclosing(replies):
                async for reply in replies:
                    if isinstance(reply, Chunk):
                        if reply.token_ids and self.ttft_s is None:
                            self.ttft_s = time.perf_counter() - started
                        self.completion_tokens += len(reply.token_ids)
                        if reply.text:
                            yield reply.text
                    elif isinstance(reply, Done):
                        self.done = reply
            outcome = "ok" if self.done is not None else "cancelled"
        except DraftwiseError as error:
            outcome = "error"
            raise from_runtime_error(error) from error
        finally:
            self.total_s = time.perf_counter() - started
            metrics.record_generation(self, endpoint, outcome)
            self._log_finished(endpoint, outcome)

    def stats(self) -> dict[str, Any]:
        """Return the request's `draftwise` object: tokens, cache reuse, speculation, timing."""
        done = self.done
        usage = done.usage if done else None
        speculation = done.speculation if done else None
        decode_s = self.total_s - (self.ttft_s or 0.0)
        return {
            "session_id": done.session_id if done else None,
            "finish_reason": done.finish_reason if done else "cancelled",
            "prompt_tokens": usage.prompt_tokens if usage else self.prompt_tokens,
            "cached_tokens": usage.cached_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else self.completion_tokens,
            "rounds": speculation.rounds if speculation else 0,
            "num_drafted": speculation.num_drafted if speculation else 0,
            "num_accepted": speculation.num_accepted if speculation else 0,
            "acceptance_rate": speculation.acceptance_rate if speculation else 0.0,
            "draft_length_histogram": (
                {str(k): v for k, v in speculation.draft_length_histogram.items()}
                if speculation
                else {}
            ),
            "speculation_off_reason": speculation.reason_off if speculation else None,
            "ttft_ms": round(self.ttft_s * 1000, 1) if self.ttft_s is not None else None,
            "total_ms": round(self.total_s * 1000, 1),
            "decode_tokens_per_s": (
                round(max(self.completion_tokens - 1, 0) / decode_s, 2) if decode_s > 0 else 0.0
            ),
        }

    def usage_counts(self) -> tuple[int, int, int]:
        """Return (prompt_tokens, completion_tokens, cached_tokens)."""
        if self.done is None:
            return self.prompt_tokens, self.completion_tokens, 0
        usage = self.done.usage
        return usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens

    def _log_finished(self, endpoint: str, outcome: str) -> None:
        stats = self.stats()
        log.info(
            "request_finished",
            actor="http",
            request_id=self.request.request_id,
            session_id=stats["session_id"],
            endpoint=endpoint,
            outcome=outcome,
            model=self.model,
            prompt_tokens=stats["prompt_tokens"],
            cached_tokens=stats["cached_tokens"],
            generated_tokens=stats["completion_tokens"],
            num_drafted=stats["num_drafted"],
            num_accepted=stats["num_accepted"],
            ttft_ms=stats["ttft_ms"],
            total_ms=stats["total_ms"],
            finish_reason=stats["finish_reason"],
        )

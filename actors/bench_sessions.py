"""Measure the runtime with concurrent sessions, and the first token of an extending turn.

    python -m draftwise.actors.bench_sessions --ids chat-mtbench-084-writing,... --max-tokens 32

For each `batch_sessions` setting, each speculation mode and each
concurrency level N, N sessions start at once on the first N prompts. The
result lists aggregate tokens per second (all completion tokens over the
wall time) and per-session time to first token and total latency.
`batch_sessions` 1 runs every round alone; larger values let concurrent
rounds share one target pass. A second part times the first token of a
second turn that extends the first, on the same session (prefix reused)
and on a new one (cold prefill).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import trio

from draftwise.actors.bench_workload import machine_info, read_workload
from draftwise.actors.runtime import Runtime, RuntimeConfig
from draftwise.protocol import Chunk, Done, GenerateRequest

DEFAULT_WORKLOAD = Path("/work/shared/workloads/dev.jsonl")
FOLLOW_UP = "Now explain your answer in one sentence."


async def _timed_request(rt: Runtime, request: GenerateRequest) -> dict[str, Any]:
    started = time.perf_counter()
    first = None
    tokens = 0
    text: list[str] = []
    done: Done | None = None
    async for reply in rt.generate(request):
        if isinstance(reply, Chunk):
            tokens += len(reply.token_ids)
            text.append(reply.text)
            if first is None and reply.token_ids:
                first = time.perf_counter() - started
        else:
            done = reply
    assert done is not None
    return {
        "request_id": request.request_id,
        "session_id": done.session_id,
        "ttft_s": first,
        "latency_s": time.perf_counter() - started,
        "completion_tokens": tokens,
        "cached_tokens": done.usage.cached_tokens,
        "prompt_tokens": done.usage.prompt_tokens,
        "acceptance_rate": done.speculation.acceptance_rate,
        "text": "".join(text),
    }


async def _concurrent(
    rt: Runtime, prompts: list[str], speculation: str, max_tokens: int
) -> dict[str, Any]:
    results: list[dict[str, Any]] = []

    async def one(index: int, prompt: str) -> None:
        request = GenerateRequest(
            request_id=f"{speculation}-{len(prompts)}-{index}",
            prompt=prompt,
            max_tokens=max_tokens,
            speculation=speculation,  # type: ignore[arg-type]
        )
        results.append(await _timed_request(rt, request))

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index, prompt in enumerate(prompts):
            nursery.start_soon(one, index, prompt)
    wall_s = time.perf_counter() - started
    for result in results:
        await rt.close_session(result["session_id"])
    tokens = sum(r["completion_tokens"] for r in results)
    return {
        "sessions": len(prompts),
        "speculation": speculation,
        "wall_s": round(wall_s, 2),
        "completion_tokens": tokens,
        "aggregate_tokens_per_s": round(tokens / wall_s, 3),
        "median_ttft_s": round(statistics.median(r["ttft_s"] for r in results), 2),
        "median_latency_s": round(statistics.median(r["latency_s"] for r in results), 2),
        "max_latency_s": round(max(r["latency_s"] for r in results), 2),
        "requests": results,
    }


async def _extending_turn(rt: Runtime, messages: list[dict[str, str]]) -> dict[str, Any]:
    first_prompt = rt.render_chat(messages)
    turn1 = await _timed_request(
        rt, GenerateRequest(request_id="turn1", prompt=first_prompt, max_tokens=16)
    )
    second = [
        *messages,
        {"role": "assistant", "content": turn1["text"]},
        {"role": "user", "content": FOLLOW_UP},
    ]
    second_prompt = rt.render_chat(second)
    reused = await _timed_request(
        rt,
        GenerateRequest(
            request_id="turn2-reused",
            session_id=turn1["session_id"],
            prompt=second_prompt,
            max_tokens=2,
        ),
    )
    cold = await _timed_request(
        rt, GenerateRequest(request_id="turn2-cold", prompt=second_prompt, max_tokens=2)
    )
    return {"turn1": turn1, "reused": reused, "cold": cold}


async def bench_sessions(
    config: RuntimeConfig,
    rows: list[dict[str, Any]],
    *,
    concurrency: tuple[int, ...] = (1, 2, 4),
    modes: tuple[str, ...] = ("auto", "off"),
    max_tokens: int = 32,
    turn_row: dict[str, Any] | None = None,
    batch_settings: tuple[int, ...] = (8, 1),
) -> dict[str, Any]:
    """Run the concurrency sweep over ``rows`` and the extending-turn timing on ``turn_row``."""
    results: dict[str, Any] = {"machine": machine_info(), "runs": []}
    for index, batch_sessions in enumerate(batch_settings):
        settings = msgspec.structs.replace(config, batch_sessions=batch_sessions)
        async with Runtime.open(settings) as rt:
            prompts = [rt.render_chat(row["messages"]) for row in rows]
            for speculation in modes:
                for count in concurrency:
                    run = await _concurrent(rt, prompts[:count], speculation, max_tokens)
                    run["batch_sessions"] = batch_sessions
                    print(json.dumps({k: v for k, v in run.items() if k != "requests"}), flush=True)
                    results["runs"].append(run)
            if turn_row is not None and index == 0:
                results["extending_turn"] = await _extending_turn(rt, turn_row["messages"])
                print(json.dumps(results["extending_turn"]), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder:1.5b", help="target model")
    parser.add_argument("--draft", default="qwen2.5-coder:0.5b", help="draft model, or 'none'")
    parser.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD, help="JSONL workload")
    parser.add_argument("--ids", required=True, help="comma-separated prompt ids, at least 4")
    parser.add_argument("--turn-id", help="prompt id for the extending-turn timing")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per request")
    parser.add_argument("--out", type=Path, help="write the full results as JSON here")
    parser.add_argument(
        "--modes", default="auto,off", help="comma-separated speculation modes (auto, off, K)"
    )
    parser.add_argument(
        "--batch-sessions",
        default="8,1",
        help="comma-separated RuntimeConfig.batch_sessions values to compare",
    )
    args = parser.parse_args(argv)

    by_id = {row["id"]: row for row in read_workload(args.workload, None, None)}
    missing = [i for i in [*args.ids.split(","), args.turn_id or ""] if i and i not in by_id]
    if missing:
        print(f"bench_sessions: unknown prompt ids {missing}; see {args.workload}", file=sys.stderr)
        return 2
    rows = [by_id[i] for i in args.ids.split(",")]
    draft = None if args.draft == "none" else args.draft
    config = RuntimeConfig(model=args.model, draft=draft)
    try:
        batch_settings = tuple(int(v) for v in args.batch_sessions.split(","))
    except ValueError:
        print(
            f"bench_sessions: --batch-sessions {args.batch_sessions!r} is not a comma-separated "
            "list of integers; use for example 8,1",
            file=sys.stderr,
        )
        return 2
    if any(v < 1 for v in batch_settings):
        print(
            f"bench_sessions: --batch-sessions {args.batch_sessions!r} has a value below 1",
            file=sys.stderr,
        )
        return 2
    modes = tuple(m for m in args.modes.split(",") if m)
    speculation_modes: tuple[Any, ...] = tuple(int(m) if m.isdigit() else m for m in modes)
    results = trio.run(
        lambda: bench_sessions(
            config,
            rows,
            concurrency=tuple(n for n in (1, 2, 4) if n <= len(rows)),
            modes=speculation_modes,
            max_tokens=args.max_tokens,
            turn_row=by_id.get(args.turn_id or ""),
            batch_settings=batch_settings,
        )
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

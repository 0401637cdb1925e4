"""Soak benchmark of the Unix-socket server; a script, so pytest does not collect it.

    python tests/actors/server/soak_server.py [--requests 1000] [--connections 8]

Starts `draftwise serve` in a subprocess on a tiny random GGUF model, then sends
the requests over the connections, up to four at a time per connection: a mix
of streamed and whole replies, stop strings, and cancels after the first chunk.
It checks that every request ends with exactly one `Done` (or the expected
error), that chunk token counts match `Done.usage`, and that the server's
counters moved by exactly the requests sent. It samples the server's resident
memory after each tenth of the requests and prints one JSON summary. Exit code
0 means every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parents[2] / "runtime" / "loading"))

from loading_builders import TinyModelSpec, byte_level_vocab, write_tiny_gguf

from draftwise.protocol import AsyncClient, Chunk, Done

PER_CONNECTION_CONCURRENCY = 4
WORDS = "def return class import for while print value index list dict".split()


@dataclass
class SoakResult:
    done_by_id: dict[str, list[Done]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    chunk_tokens: int = 0
    cancelled: int = 0
    rss_kib: list[int] = field(default_factory=list)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


async def _one_request(client: AsyncClient, index: int, result: SoakResult) -> None:
    rng = random.Random(index)
    prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))
    cancel = index % 10 == 3
    stream = await client.generate(
        prompt=prompt,
        max_tokens=rng.randint(1, 32),
        stream=index % 5 != 0,
        stop=["\n\n"] if index % 7 == 0 else [],
        request_id=f"soak-{index}",
        timeout=120,
    )
    tokens = 0
    async for reply in stream:
        if isinstance(reply, Chunk):
            tokens += len(reply.token_ids)
            if cancel:
                await client.cancel(stream.request_id, timeout=60)
                cancel = False
        else:
            result.done_by_id.setdefault(reply.request_id, []).append(reply)
            if reply.usage.completion_tokens != tokens:
                result.problems.append(
                    f"{reply.request_id}: chunks carried {tokens} tokens, "
                    f"Done.usage says {reply.usage.completion_tokens}"
                )
            result.cancelled += reply.finish_reason == "cancelled"
    result.chunk_tokens += tokens


async def _run_connection(
    socket_path: str, indexes: list[int], result: SoakResult, progress: trio.MemorySendChannel[int]
) -> None:
    async with progress, await AsyncClient.connect(socket_path, timeout=30) as client:
        await client.hello("soak", timeout=30)
        limiter = trio.Semaphore(PER_CONNECTION_CONCURRENCY)

        async def limited(index: int) -> None:
            async with limiter:
                await _one_request(client, index, result)
            await progress.send(index)

        async with trio.open_nursery() as nursery:
            for index in indexes:
                nursery.start_soon(limited, index)


async def _soak(socket_path: str, server_pid: int, args: argparse.Namespace) -> dict[str, object]:
    result = SoakResult()
    async with await AsyncClient.connect(socket_path) as client:
        await client.hello("soak-stats")
        before = await client.stats()
    result.rss_kib.append(_rss_kib(server_pid))

    send_progress, receive_progress = trio.open_memory_channel[int](args.requests)
    sample_every = max(1, args.requests // 10)
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for connection in range(args.connections):
            indexes = list(range(connection, args.requests, args.connections))
            nursery.start_soon(_run_connection, socket_path, indexes, result, send_progress.clone())
        send_progress.close()
        finished = 0
        async for _ in receive_progress:
            finished += 1
            if finished % sample_every == 0:
                result.rss_kib.append(_rss_kib(server_pid))
    elapsed_s = time.perf_counter() - started

    async with await AsyncClient.connect(socket_path) as client:
        await client.hello("soak-stats")
        after = await client.stats()
    return _summary(result, before, after, elapsed_s, args)


def _summary(result, before, after, elapsed_s, args) -> dict[str, object]:
    expected_ids = {f"soak-{index}" for index in range(args.requests)}
    missing = sorted(expected_ids - set(result.done_by_id))
    duplicated = sorted(rid for rid, dones in result.done_by_id.items() if len(dones) > 1)
    unexpected = sorted(set(result.done_by_id) - expected_ids)
    finished_delta = after.finished_requests - before.finished_requests
    completion_delta = after.completion_tokens - before.completion_tokens
    problems = list(result.problems)
    if missing or duplicated or unexpected:
        problems.append(
            f"missing {missing[:5]}, duplicated {duplicated[:5]}, extra {unexpected[:5]}"
        )
    if finished_delta != args.requests:
        problems.append(f"server finished {finished_delta} requests, {args.requests} were sent")
    if completion_delta != result.chunk_tokens:
        problems.append(
            f"server counted {completion_delta} completion tokens, clients received "
            f"{result.chunk_tokens}"
        )
    if after.active_requests != 0:
        problems.append(f"{after.active_requests} requests still active after the soak")
    warm_rss = result.rss_kib[1] if len(result.rss_kib) > 1 else result.rss_kib[0]
    return {
        "requests": args.requests,
        "connections": args.connections,
        "elapsed_s": round(elapsed_s, 1),
        "requests_per_s": round(args.requests / elapsed_s, 1),
        "completion_tokens": result.chunk_tokens,
        "cancelled": result.cancelled,
        "done_replies": sum(len(dones) for dones in result.done_by_id.values()),
        "rss_kib_samples": result.rss_kib,
        "rss_growth_after_first_tenth_kib": result.rss_kib[-1] - warm_rss,
        "problems": problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests in all")
    parser.add_argument("--connections", type=int, default=8, help="client connections")
    parser.add_argument("server_args", nargs="*", help="extra `draftwise serve` options, after --")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dw-soak-", dir="/tmp") as folder:
        model_path = Path(folder) / "tiny-qwen2.gguf"
        write_tiny_gguf(model_path, TinyModelSpec(), byte_level_vocab())
        socket_path = f"{folder}/soak.sock"
        server = subprocess.Popen(
            [sys.executable, "-m", "draftwise.actors.cli", "serve", "--socket", socket_path,
             "--model", str(model_path), *args.server_args],
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not os.path.exists(socket_path):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("draftwise serve did not start")
                time.sleep(0.05)
            summary = trio.run(_soak, socket_path, server.pid, args)
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(json.dumps(summary))
    return 0 if not summary["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""`draftwise bench models`: load time, memory, prefill and decode speed per model and policy.

Each measurement runs in a child process, so its resident memory and its
cold load (into an empty converted-weights cache) are not disturbed by
the others.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

PREFILL_TOKENS = 128
DECODE_TOKENS = 16


def measure(model: str, policy: str, cache_dir: str, decode_tokens: int) -> dict[str, Any]:
    """Load ``model`` with ``policy`` and time a prefill and a greedy decode (in this process)."""
    from draftwise.runtime.generate import GenerationParams, Timings, generate_plain
    from draftwise.runtime.language_model import load_language_model

    started = time.perf_counter()
    lm = load_language_model(model, policy=policy, cache_dir=cache_dir)
    load_s = time.perf_counter() - started
    # A prompt of code-like tokens drawn from the tokenizer itself.
    text = (
        "def process(items):\n    for index, item in enumerate(items):\n        yield item\n" * 40
    )
    prompt_ids = lm.tokenizer.encode(text)[:PREFILL_TOKENS]
    timings = Timings()
    params = GenerationParams(max_tokens=decode_tokens)
    tokens = sum(
        len(chunk.token_ids)
        for chunk in generate_plain(lm.model, lm.tokenizer, prompt_ids, params, timings)
    )
    max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model": model,
        "policy": policy,
        "load_s": round(load_s, 2),
        "weight_bytes": lm.model.nbytes,
        "max_rss_bytes": max_rss_kib * 1024,
        "prompt_tokens": len(prompt_ids),
        "generated_tokens": tokens,
        "prefill_tokens_per_s": round(timings.prefill_tokens_per_s, 2),
        "decode_tokens_per_s": round(timings.decode_tokens_per_s, 2),
    }


def run_models_bench(
    models: list[str], policies: list[str], decode_tokens: int = DECODE_TOKENS
) -> list[dict[str, Any]]:
    """Measure every model and policy twice: into an empty cache (cold), then from it (cached)."""
    results = []
    for model in models:
        for policy in policies:
            with tempfile.TemporaryDirectory(prefix="draftwise-bench-") as cache_dir:
                for phase in ("cold", "cached"):
                    entry = _run_child(model, policy, cache_dir, decode_tokens)
                    entry["phase"] = phase
                    results.append(entry)
                    print(json.dumps(entry), file=sys.stderr, flush=True)
    return results


def _run_child(model: str, policy: str, cache_dir: str, decode_tokens: int) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "draftwise.actors.bench_models",
        model,
        policy,
        cache_dir,
        str(decode_tokens),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        last = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"measuring {model} ({policy}) failed: {last[0]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    model_name, policy_name, cache, decode = sys.argv[1:5]
    print(json.dumps(measure(model_name, policy_name, cache, int(decode))))

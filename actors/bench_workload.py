"""Run a coding-agent workload in several decoding modes and compare them with plain decoding."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from draftwise.runtime.engine import Engine, GenerationRecord, parse_speculation
from draftwise.runtime.generate import GenerationParams, PrefixCachePrefiller, fresh_prefill

# A divergence whose two candidate logits lie closer than this is a near tie:
# float rounding that differs between the two runs can flip it. A wider gap
# means the speculative run computed something else, which is a bug.
NEAR_TIE_LOGIT_GAP = 1e-2


def read_workload(
    path: Path, limit: int | None, categories: list[str] | None
) -> list[dict[str, Any]]:
    """Read a JSONL workload of ``{"id", "category", "messages", "max_tokens"}`` rows."""
    try:
        text = path.read_text()
    except OSError as error:
        message = f"cannot read workload {path}: {error.strerror}; check the path"
        raise ValueError(message) from error
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not valid JSON: {error}") from error
        if not isinstance(row.get("messages"), list):
            raise ValueError(f"{path}:{number} has no 'messages' list; see the workload format")
        if categories and row.get("category") not in categories:
            continue
        rows.append(row)
    return rows[:limit] if limit else rows


def run_workload(
    engine: Engine,
    rows: list[dict[str, Any]],
    modes: list[str],
    max_tokens: int,
    log: Any = sys.stderr,
) -> dict[str, Any]:
    """Run every row in every mode (greedy); return per-run records and a summary."""
    prefiller = PrefixCachePrefiller(capacity=2)
    runs: list[dict[str, Any]] = []
    for index, row in enumerate(rows, start=1):
        prompt_ids = engine.target.encode_messages(row["messages"])
        budget = min(int(row.get("max_tokens") or max_tokens), max_tokens)
        params = GenerationParams(max_tokens=budget)
        plain_ids: list[int] | None = None
        for mode in modes:
            record = GenerationRecord()
            speculation = "off" if mode == "plain" else parse_speculation(mode)
            started = time.perf_counter()
            for _ in engine.generate(prompt_ids, params, speculation, record, prefiller):
                pass
            wall = time.perf_counter() - started
            if mode == "plain":
                plain_ids = record.token_ids
            run = _run_entry(row, mode, prompt_ids, record, wall, plain_ids)
            if run["first_divergence"] is not None and plain_ids is not None:
                run["divergence"] = diagnose_divergence(
                    engine, prompt_ids, plain_ids, record.token_ids, run["first_divergence"]
                )
            runs.append(run)
            print(
                f"[{index}/{len(rows)}] {row.get('id')} {mode}: "
                f"{run['decode_tokens_per_s']:.2f} tok/s, acceptance {run['acceptance_rate']:.2f}, "
                f"identical {run['identical_to_plain']}",
                file=log,
                flush=True,
            )
            if "divergence" in run:
                print(f"    divergence: {json.dumps(run['divergence'])}", file=log, flush=True)
    return {"runs": runs, "summary": summarize(runs, modes)}


def diagnose_divergence(
    engine: Engine,
    prompt_ids: list[int],
    plain_ids: list[int],
    other_ids: list[int],
    position: int,
) -> dict[str, Any]:
    """Explain why two greedy outputs part at ``position``.

    Prefills the prompt plus the common prefix and reads the target's logits
    for the two tokens chosen there. The prefill computes these logits in one
    block, so they can differ from either run's in the last bits. A gap far
    above that rounding points at a bug rather than at a near tie.
    """
    import mlx.core as mx

    from draftwise.runtime.arrays import float_list, scalar_float

    _, logits = fresh_prefill(engine.target.model, [*prompt_ids, *plain_ids[:position]], 2)
    row = logits.reshape(-1)
    plain_token = plain_ids[position] if position < len(plain_ids) else None
    other_token = other_ids[position] if position < len(other_ids) else None
    values = {
        name: scalar_float(row[token])
        for name, token in (("plain", plain_token), ("speculative", other_token))
        if token is not None
    }
    top2 = mx.topk(row, 2)
    gap = abs(values["plain"] - values["speculative"]) if len(values) == 2 else None
    cause = "length"  # one output ended earlier, at a stop rule
    if gap is not None:
        cause = "near_tie" if gap < NEAR_TIE_LOGIT_GAP else "computation_differs"
    return {
        "position": position,
        "plain_token": plain_token,
        "speculative_token": other_token,
        "logits": values,
        "logit_gap": gap,
        "top2_logits": sorted(float_list(top2), reverse=True),
        "cause": cause,
    }


def _run_entry(
    row: dict[str, Any],
    mode: str,
    prompt_ids: list[int],
    record: GenerationRecord,
    wall_s: float,
    plain_ids: list[int] | None,
) -> dict[str, Any]:
    spec = record.speculation
    identical = None if plain_ids is None else record.token_ids == plain_ids
    divergence = None
    if identical is False and plain_ids is not None:
        pairs = zip(record.token_ids, plain_ids, strict=False)
        divergence = next(
            (i for i, (mine, plain) in enumerate(pairs) if mine != plain),
            min(len(record.token_ids), len(plain_ids)),
        )
    return {
        "id": row.get("id"),
        "category": row.get("category"),
        "mode": mode,
        "prompt_tokens": len(prompt_ids),
        "generated_tokens": len(record.token_ids),
        "finish_reason": record.finish_reason,
        "prefill_tokens_per_s": record.timings.prefill_tokens_per_s,
        "decode_tokens_per_s": record.timings.decode_tokens_per_s,
        "decode_s": record.timings.decode_s,
        "wall_s": wall_s,
        "acceptance_rate": spec.acceptance_rate if spec else 0.0,
        "speculation": spec.as_dict() if spec else None,
        "draft_lengths": spec.draft_lengths if spec else [],
        "identical_to_plain": identical,
        "first_divergence": divergence,
        "token_ids": record.token_ids,
    }


def summarize(runs: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    """Summarize per category and mode: decode tokens/s, speedup and acceptance.

    Tokens/s is total decoded tokens over total decode time, so long runs weigh more.
    """
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[(run["category"], run["mode"])].append(run)
        grouped[("all", run["mode"])].append(run)
    summary: dict[str, Any] = {}
    for (category, mode), items in sorted(grouped.items()):
        tokens = sum(max(r["generated_tokens"] - 1, 0) for r in items)
        seconds = sum(r["decode_s"] for r in items)
        drafted = sum((r["speculation"] or {}).get("num_drafted", 0) for r in items)
        accepted = sum((r["speculation"] or {}).get("num_accepted", 0) for r in items)
        summary.setdefault(category, {})[mode] = {
            "prompts": len(items),
            "decode_tokens_per_s": tokens / seconds if seconds else 0.0,
            "acceptance_rate": accepted / drafted if drafted else 0.0,
            "identical": sum(1 for r in items if r["identical_to_plain"]),
            "median_prompt_tokens": statistics.median(r["prompt_tokens"] for r in items),
        }
    for modes_summary in summary.values():
        plain = modes_summary.get("plain", {}).get("decode_tokens_per_s")
        for entry in modes_summary.values():
            entry["speedup_vs_plain"] = entry["decode_tokens_per_s"] / plain if plain else None
    return summary


def machine_info() -> dict[str, Any]:
    from draftwise.runtime.blas import blas_status
    from draftwise.runtime.kernels import kernel_info

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "blas": blas_status().library,
        "kernel": kernel_info(),
    }


def write_plot(results: dict[str, Any], path: Path) -> bool:
    """Draw tokens/s and acceptance per mode and category, and k over time.

    Returns False, drawing nothing, when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = results["summary"]
    categories = [c for c in summary if c != "all"] + ["all"]
    modes = results["modes"]
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    width = 0.8 / max(len(modes), 1)
    for i, mode in enumerate(modes):
        speeds = [summary[c].get(mode, {}).get("decode_tokens_per_s", 0) for c in categories]
        accept = [summary[c].get(mode, {}).get("acceptance_rate", 0) for c in categories]
        xs = [x + i * width for x in range(len(categories))]
        axes[0].bar(xs, speeds, width, label=mode)
        axes[1].bar(xs, accept, width, label=mode)
    for axis, title in zip(axes[:2], ["decode tokens/s", "acceptance rate"], strict=True):
        axis.set_xticks([x + 0.4 - width / 2 for x in range(len(categories))], categories)
        axis.set_title(title)
        axis.legend(fontsize=7)
    for run in results["runs"]:
        if run["mode"] == "auto" and run["draft_lengths"]:
            axes[2].plot(run["draft_lengths"], alpha=0.6, linewidth=0.8)
    axes[2].set_title("auto: draft length k per round")
    axes[2].set_xlabel("round")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True

"""`draftwise bench`: the kernel micro-benchmark and workload runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def add_bench_command(subparsers: Any) -> None:
    bench = subparsers.add_parser("bench", help="benchmark the verify kernel or a workload")
    bench.add_argument(
        "what",
        nargs="?",
        choices=["kernel", "models", "tuner", "sessions", "accuracy"],
        help="kernel: time the quantized matmul and the target forward pass; "
        "models: load time, memory, prefill and decode speed per weight policy; "
        "tuner: plain decoding against auto speculation with a drafter the target "
        "always rejects, on the first prompt of --workload (or --ids); "
        "sessions: 1, 2 and 4 concurrent sessions on the --ids prompts and the time to "
        "first token of an extending turn (--turn-id); accuracy: top-1 agreement and "
        "logit error of each kernel arithmetic against float32 on --workload prompts",
    )
    bench.add_argument(
        "--models",
        default="qwen2.5-coder:1.5b,qwen2.5-coder:0.5b",
        metavar="LIST",
        help="comma-separated models for bench models",
    )
    bench.add_argument(
        "--policies",
        default="auto,float32",
        metavar="LIST",
        help="comma-separated weight policies for bench models: auto, exact, float32, float32-all",
    )
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument(
        "--model",
        default="qwen2.5-coder:1.5b",
        metavar="NAME",
        help="target model for the forward-pass timings",
    )
    bench.add_argument(
        "--draft",
        default="qwen2.5-coder:0.5b",
        metavar="NAME",
        help="draft model for the speculative modes",
    )
    bench.add_argument(
        "--drafter",
        default="auto",
        choices=["auto", "draft_model", "ngram", "mtp"],
        help="drafter for the speculative modes (default auto)",
    )
    bench.add_argument(
        "--draft-head-rows",
        type=int,
        default=None,
        metavar="N",
        help="limit the draft model's output head to token ids below N",
    )
    bench.add_argument("--store", metavar="DIR", help="model store folder")
    bench.add_argument(
        "--workload",
        metavar="FILE",
        type=Path,
        help="JSONL workload: one {id, category, messages, max_tokens} per line",
    )
    bench.add_argument("--ids", metavar="LIST", help="comma-separated prompt ids to run")
    bench.add_argument(
        "--turn-id", metavar="ID", help="prompt id for bench sessions' extending-turn timing"
    )
    bench.add_argument(
        "--math",
        choices=["auto", "f32", "bf16", "int8"],
        help="kernel arithmetic for this run (sets DRAFTWISE_KERNEL_MATH; default: as set, auto)",
    )
    bench.add_argument(
        "--batch-sessions",
        metavar="LIST",
        default="8,1",
        help="bench sessions: RuntimeConfig.batch_sessions values to compare (default 8,1)",
    )
    bench.add_argument("--limit", type=int, metavar="N", help="run only the first N prompts")
    bench.add_argument(
        "--categories", metavar="LIST", help="comma-separated categories to keep (default: all)"
    )
    bench.add_argument(
        "--modes",
        default="plain,auto",
        metavar="LIST",
        help="comma-separated modes: plain, auto, or draft lengths such as 1,2,4,8 "
        "(default plain,auto); plain always runs first",
    )
    bench.add_argument(
        "--max-tokens",
        type=int,
        default=128,
        metavar="N",
        help="maximum new tokens per prompt (default 128)",
    )
    bench.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=Path("bench-out"),
        help="folder for results.json and plot.png (default bench-out)",
    )
    bench.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    if args.math is not None:
        from draftwise.runtime.kernels import MATH_ENV

        os.environ[MATH_ENV] = args.math
    if args.what == "kernel":
        return _run_kernel_bench(args)
    if args.what == "models":
        return _run_models_bench(args)
    if args.what == "tuner":
        return _run_tuner_bench(args)
    if args.what == "sessions":
        return _run_sessions_bench(args)
    if args.what == "accuracy":
        return _run_accuracy_bench(args)
    if args.workload is None:
        raise ValueError("bench needs 'kernel' or --workload FILE")
    return _run_workload_bench(args)


def _run_workload_bench(args: argparse.Namespace) -> int:
    from draftwise.actors.bench_workload import (
        machine_info,
        read_workload,
        run_workload,
        write_plot,
    )
    from draftwise.actors.cli import load_engine
    from draftwise.runtime.language_model import load_language_model

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    modes = ["plain"] + [m for m in modes if m != "plain"]
    categories = args.categories.split(",") if args.categories else None
    ids = args.ids.split(",") if args.ids else None
    rows = read_workload(args.workload, args.limit, categories)
    if ids:
        rows = [row for row in rows if row.get("id") in ids]
        missing = sorted(set(ids) - {row.get("id") for row in rows})
        if missing:
            raise ValueError(f"--ids names prompts not in {args.workload}: {', '.join(missing)}")
    target = load_language_model(args.model, store_dir=args.store)
    engine = load_engine(target, args.draft, args.drafter, args.draft_head_rows, args.store)
    results = run_workload(engine, rows, modes, args.max_tokens)
    results.update(
        {
            "modes": modes,
            "model": args.model,
            "draft": args.draft,
            "workload": str(args.workload),
            "max_tokens": args.max_tokens,
            "command": " ".join(sys.argv),
            "machine": machine_info(),
        }
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    plotted = write_plot(results, args.out / "plot.png")
    _print_summary(results)
    differing = [r for r in results["runs"] if r["identical_to_plain"] is False]
    for run in differing:
        print(
            f"DIFFERENT from plain: {run['id']} mode {run['mode']} "
            f"at token {run['first_divergence']}"
        )
    print(
        f"wrote {args.out / 'results.json'}" + (f" and {args.out / 'plot.png'}" if plotted else "")
    )
    return 1 if differing else 0


def _run_accuracy_bench(args: argparse.Namespace) -> int:
    from draftwise.actors.bench_accuracy import compare_maths, usable_maths
    from draftwise.actors.bench_workload import machine_info, read_workload
    from draftwise.runtime.language_model import load_language_model

    if args.workload is None:
        raise ValueError("bench accuracy needs --workload FILE (for example dev.jsonl)")
    categories = args.categories.split(",") if args.categories else None
    rows = read_workload(args.workload, args.limit, categories)
    target = load_language_model(args.model, store_dir=args.store)
    results = compare_maths(target, rows, args.max_tokens, usable_maths())
    results.update(
        {
            "model": args.model,
            "max_tokens": args.max_tokens,
            "command": " ".join(sys.argv),
            "machine": machine_info(),
        }
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results["summary"], indent=1))
    return 0


def _run_sessions_bench(args: argparse.Namespace) -> int:
    from draftwise.actors.bench_sessions import main as sessions_main

    if not args.ids:
        raise ValueError("bench sessions needs --ids with at least 4 comma-separated prompt ids")
    argv = ["--model", args.model, "--draft", args.draft or "none", "--ids", args.ids]
    argv += ["--max-tokens", str(args.max_tokens), "--out", str(args.out / "sessions.json")]
    argv += ["--batch-sessions", args.batch_sessions]
    if args.workload is not None:
        argv += ["--workload", str(args.workload)]
    if args.turn_id:
        argv += ["--turn-id", args.turn_id]
    args.out.mkdir(parents=True, exist_ok=True)
    return sessions_main(argv)


def _run_tuner_bench(args: argparse.Namespace) -> int:
    from draftwise.actors.bench_tuner import bench_wrong_drafter
    from draftwise.actors.bench_workload import read_workload
    from draftwise.runtime.language_model import load_language_model

    if args.workload is None:
        raise ValueError("bench tuner needs --workload FILE to take its prompt from")
    rows = read_workload(args.workload, None, None)
    if args.ids:
        rows = [row for row in rows if row.get("id") in args.ids.split(",")]
    if not rows:
        raise ValueError(f"no prompt in {args.workload} matches --ids {args.ids}")
    target = load_language_model(args.model, store_dir=args.store)
    prompt_ids = target.encode_messages(rows[0]["messages"])
    result = bench_wrong_drafter(target, prompt_ids, args.max_tokens)
    result["prompt_id"] = rows[0].get("id")
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['prompt_id']}: plain {result['plain_tokens_per_s']} tok/s, "
        f"auto with a rejected drafter {result['auto_tokens_per_s']} tok/s, "
        f"ratio {result['ratio']:.3f}; {result['rounds']} rounds, "
        f"{result['num_drafted']} tokens drafted, identical {result['identical_to_plain']}"
    )
    return 0 if result["identical_to_plain"] else 1


def _print_summary(results: dict[str, Any]) -> None:
    print(
        f"{'category':<12} {'mode':<6} {'prompts':>7} {'tok/s':>8} {'speedup':>8} "
        f"{'accept':>7} {'identical':>9}"
    )
    for category, modes in results["summary"].items():
        for mode in results["modes"]:
            entry = modes.get(mode)
            if entry is None:
                continue
            speedup = entry["speedup_vs_plain"]
            print(
                f"{category:<12} {mode:<6} {entry['prompts']:>7} "
                f"{entry['decode_tokens_per_s']:>8.2f} {speedup or 0:>7.2f}x "
                f"{entry['acceptance_rate']:>7.2f} {entry['identical']:>9}"
            )


def _run_kernel_bench(args: argparse.Namespace) -> int:
    from draftwise.runtime.errors import ModelNotFoundError
    from draftwise.runtime.forward_bench import bench_forward
    from draftwise.runtime.kernels import kernel_info
    from draftwise.runtime.kernels.bench import bench_kernel
    from draftwise.runtime.language_model import load_language_model

    shapes = bench_kernel()
    forward: list[dict[str, float]] = []
    try:
        target = load_language_model(args.model, store_dir=args.store)
        forward = bench_forward(target.model)
    except ModelNotFoundError as error:
        print(f"draftwise: skipping the forward-pass timings: {error}", file=sys.stderr)
    report: dict[str, Any] = {"kernel": kernel_info(), "shapes": shapes, "forward": forward}
    if args.json:
        print(json.dumps(report))
    else:
        for shape in shapes:
            print(
                f"{shape['name']}: {shape['n']}x{shape['k']} "
                f"{shape['bits']}-bit g{shape['group_size']}"
            )
            for row in shape["rows"]:
                print(
                    f"  m={row['m']:>4}  kernel {row['kernel_ms']:8.3f} ms  "
                    f"mlx {row['mlx_quantized_ms']:8.3f} ms  float32 {row['float32_ms']:8.3f} ms"
                )
    return 0


def _ms(value: float | None) -> str:
    return "     n/a   " if value is None else f"{value:8.3f} ms"


def _run_models_bench(args: argparse.Namespace) -> int:
    from draftwise.actors.bench_models import run_models_bench

    results = run_models_bench(args.models.split(","), args.policies.split(","))
    if args.json:
        print(json.dumps(results))
        return 0
    print(
        f"{'model':<20} {'policy':<12} {'phase':<7} {'load s':>7} {'weights MB':>10} "
        f"{'max RSS MB':>10} {'prefill tok/s':>13} {'decode tok/s':>12}"
    )
    for r in results:
        print(
            f"{r['model']:<20} {r['policy']:<12} {r['phase']:<7} {r['load_s']:>7.1f} "
            f"{r['weight_bytes'] / 1e6:>10.0f} {r['max_rss_bytes'] / 1e6:>10.0f} "
            f"{r['prefill_tokens_per_s']:>13.1f} {r['decode_tokens_per_s']:>12.2f}"
        )
    return 0

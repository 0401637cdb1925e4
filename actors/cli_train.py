"""The ``train-drafter`` subcommand: train an MTP drafter for a target model.

Rerunning the same command resumes: stored features, the candidate
vocabulary and the newest training checkpoint in ``--out`` are reused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from draftwise.runtime.training.mtp_data import DOC_SUFFIXES, SOURCE_SUFFIXES


def add_train_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``train-drafter`` on ``subparsers``; its ``func`` returns the exit code."""
    parser = subparsers.add_parser(
        "train-drafter",
        help="train an MTP drafter on the target's own hidden states and choices",
        description="Run the target over source files installed on this machine and the "
        "workload prompts, cache its features, and train an MTP drafter on them "
        "(self-distillation). Resumable: rerun the same command after an interruption.",
    )
    parser.add_argument("--target", default="qwen2.5-coder:1.5b", help="target model name or path")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument(
        "--features", type=Path, metavar="DIR", help="feature folder (default OUT/features)"
    )
    parser.add_argument(
        "--extract-tokens",
        type=int,
        default=20000,
        metavar="N",
        help="target tokens to extract features for; 0 trains on what is stored (default 20000)",
    )
    parser.add_argument("--window", type=int, default=256, help="tokens per window (default 256)")
    parser.add_argument(
        "--workload",
        type=Path,
        metavar="FILE",
        help="JSONL prompts {id, category, messages}: three in four train, "
        "every fourth is held out to measure acceptance (default: none)",
    )
    parser.add_argument(
        "--source-suffixes",
        default=",".join(SOURCE_SUFFIXES),
        metavar="LIST",
        help="comma-separated file suffixes of the installed files to extract windows from "
        f"(default {','.join(SOURCE_SUFFIXES)}; {','.join(DOC_SUFFIXES)} adds documentation)",
    )
    parser.add_argument(
        "--candidates", type=int, default=4096, help="candidate vocabulary size (default 4096)"
    )
    parser.add_argument(
        "--intermediate-size", type=int, default=1536, help="drafter MLP width (default 1536)"
    )
    parser.add_argument("--layers", type=int, default=1, help="drafter decoder layers (default 1)")
    parser.add_argument(
        "--draft-steps",
        type=int,
        default=2,
        help="chained draft steps trained per origin (default 2)",
    )
    parser.add_argument("--epochs", type=int, default=5, help="passes over the windows (default 5)")
    parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for data order and init (default 0)"
    )
    parser.set_defaults(func=run_train_drafter)


def run_train_drafter(args: argparse.Namespace) -> int:
    from draftwise.runtime.training.mtp_pipeline import PipelineSettings, run_pipeline
    from draftwise.runtime.training.mtp_train import TrainSettings

    suffixes = tuple(part.strip() for part in args.source_suffixes.split(",") if part.strip())
    if not suffixes or any(not part.startswith(".") or len(part) < 2 for part in suffixes):
        print(
            f"draftwise: error: --source-suffixes {args.source_suffixes!r} is invalid. "
            "Give suffixes with their dot, separated by commas, such as .py,.md",
            file=sys.stderr,
        )
        return 1
    if args.window < 8 or args.draft_steps < 1 or args.draft_steps >= args.window:
        print(
            f"draftwise: error: --window {args.window} and --draft-steps {args.draft_steps} "
            "need 1 <= draft steps < window and window >= 8",
            file=sys.stderr,
        )
        return 1
    settings = PipelineSettings(
        target=args.target,
        out_dir=args.out,
        features_dir=args.features,
        extract_tokens=args.extract_tokens,
        window=args.window,
        source_suffixes=suffixes,
        candidates=args.candidates,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers,
        workload=args.workload,
        train=TrainSettings(
            draft_steps=args.draft_steps, epochs=args.epochs, learning_rate=args.lr, seed=args.seed
        ),
    )
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f}s] {message}", file=sys.stderr, flush=True)

    report = run_pipeline(settings, log)
    after = report["after"]["acceptance_by_position"].get("all")
    print(f"drafter: {args.out / 'drafter.safetensors'} sha256 {report['drafter_sha256']}")
    print(f"held-out acceptance by position: {after}")
    return 0

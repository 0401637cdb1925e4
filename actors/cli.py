"""The `draftwise` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from draftwise.actors.cli_store import add_store_commands
from draftwise.runtime.errors import DraftwiseError

DEFAULT_TARGET = "qwen2.5-coder:1.5b"
DEFAULT_DRAFT = "qwen2.5-coder:0.5b"
DEFAULT_PROMPT = "Write a Python function that checks whether a string is a palindrome."


def _add_model_options(parser: argparse.ArgumentParser, *, draft_default: str | None) -> None:
    parser.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="target model: catalogue name, GGUF file or safetensors folder "
        f"(default {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--draft",
        default=draft_default,
        metavar="NAME",
        help="draft model for speculative decoding, same tokenizer as the target, or an MTP "
        "drafter such as qwen2.5-coder:1.5b-mtp"
        + (f" (default {draft_default})" if draft_default else " (default: none)"),
    )
    parser.add_argument(
        "--drafter",
        default="auto",
        choices=["auto", "draft_model", "ngram", "mtp"],
        help="what proposes tokens: auto picks per round among n-gram drafts and the draft "
        "model or MTP drafter; draft_model, ngram or mtp use one of them (default auto)",
    )
    parser.add_argument(
        "--draft-head-rows",
        type=int,
        default=None,
        metavar="N",
        help="let the draft model propose only token ids below N, which makes each draft "
        "step cheaper (default: the whole vocabulary)",
    )
    parser.add_argument("--store", metavar="DIR", type=Path, help="model store folder")
    parser.add_argument(
        "--policy",
        default="auto",
        choices=["auto", "exact", "float32", "float32-all"],
        help="weight policy: auto keeps GGUF quantization (Q6_K becomes 8-bit) with float16 "
        "group scales, exact keeps them float32, float32 dequantizes tensors that MLX cannot "
        "hold exactly, float32-all dequantizes everything",
    )


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=256,
        metavar="N",
        help="maximum number of tokens to generate (default 256)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        metavar="T",
        help="sampling temperature; 0 selects greedy decoding (default 0)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=0,
        metavar="K",
        help="sample only among the K most likely tokens; 0 disables (default 0)",
    )
    parser.add_argument(
        "--top-p",
        type=float,
        default=1.0,
        metavar="P",
        help="sample from the smallest set of tokens whose probability reaches P "
        "(default 1.0: disabled)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="S",
        help="random seed for sampling (default: random)",
    )
    parser.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="stop before this text; repeat for several stop strings",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="draftwise",
        description="Speculative-decoding inference runtime for local coding models.",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        metavar="LEVEL",
        help="log level: debug, info, warning or error (default warning)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = subparsers.add_parser("generate", help="generate text from a prompt or messages")
    _add_model_options(generate, draft_default=None)
    _add_sampling_options(generate)
    generate.add_argument(
        "--speculation",
        default="auto",
        metavar="MODE",
        help="auto (tuned draft length), off, or a fixed draft length 0..16 (default auto); "
        "without --draft, drafts come only from the context (n-grams)",
    )
    generate.add_argument("--system", metavar="TEXT", help="system message for the chat template")
    generate.add_argument(
        "--messages",
        metavar="FILE",
        help="JSON list of {role, content} messages; - reads standard input",
    )
    generate.add_argument(
        "--raw", action="store_true", help="send the prompt as is, without the chat template"
    )
    generate.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object with text, token_ids, timings and statistics",
    )
    generate.add_argument("prompt", nargs="?", metavar="PROMPT", help="the user message")
    generate.set_defaults(func=_run_generate)
    from draftwise.actors.cli_serve import (
        EMBEDDED_SOCKET_HELP,
        add_serve_commands,
        add_socket_option,
    )

    add_socket_option(
        generate, EMBEDDED_SOCKET_HELP + " (with --socket, the model loading options are ignored)"
    )

    compare = subparsers.add_parser(
        "compare", help="run plain and speculative decoding on one prompt and compare them"
    )
    _add_model_options(compare, draft_default=DEFAULT_DRAFT)
    compare.add_argument(
        "--max-tokens",
        type=int,
        default=256,
        metavar="N",
        help="maximum number of tokens to generate (default 256)",
    )
    compare.add_argument(
        "--speculation",
        default="auto",
        metavar="MODE",
        help="auto or a fixed draft length 1..16 (default auto)",
    )
    compare.add_argument(
        "prompt",
        nargs="?",
        default=DEFAULT_PROMPT,
        metavar="PROMPT",
        help="the user message (default: a palindrome function)",
    )
    compare.set_defaults(func=_run_compare)

    add_store_commands(subparsers)
    add_serve_commands(subparsers)
    from draftwise.actors.bench_cli import add_bench_command

    add_bench_command(subparsers)
    from draftwise.actors.cli_launch import add_launch_commands
    from draftwise.actors.cli_train import add_train_commands

    add_launch_commands(subparsers)
    add_train_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    from draftwise.runtime.log import configure_logging

    try:
        configure_logging(args.log_level)
        _log_blas()
        code = args.func(args)
    except DraftwiseError as error:
        print(f"draftwise: error: {error}", file=sys.stderr)
        code = 1
    except ValueError as error:
        print(f"draftwise: error: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _log_blas() -> None:
    import structlog

    from draftwise.runtime.blas import blas_status

    status = blas_status()
    structlog.get_logger("draftwise").info(
        "blas_selected", actor="cli", library=status.library, path=status.path, reason=status.reason
    )


def _read_messages(args: argparse.Namespace) -> list[dict[str, str]]:
    if args.messages is None:
        if not args.prompt:
            raise ValueError("no prompt given; pass PROMPT or --messages FILE")
        return [{"role": "user", "content": args.prompt}]
    source = sys.stdin.read() if args.messages == "-" else Path(args.messages).read_text()
    try:
        messages = json.loads(source)
    except json.JSONDecodeError as error:
        raise ValueError(f"--messages {args.messages} is not valid JSON: {error}") from error
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise ValueError(
            f"--messages {args.messages} must be a JSON list of objects with string "
            "'role' and 'content' fields"
        )
    if args.prompt:
        messages.append({"role": "user", "content": args.prompt})
    return messages


def _params(args: argparse.Namespace) -> Any:
    from draftwise.runtime.generate import GenerationParams
    from draftwise.runtime.sampling import SamplingParams

    sampling = SamplingParams(args.temperature, args.top_k, args.top_p, args.seed)
    return GenerationParams(sampling=sampling, max_tokens=args.max_tokens, stop=tuple(args.stop))


def _load_engine(args: argparse.Namespace) -> Any:
    from draftwise.runtime.language_model import load_language_model

    model = args.model or DEFAULT_TARGET
    target = load_language_model(model, store_dir=args.store, policy=args.policy)
    return load_engine(
        target, args.draft, args.drafter, args.draft_head_rows, args.store, args.policy
    )


def load_engine(
    target: Any,
    draft: str | None,
    drafter: str,
    draft_head_rows: int | None,
    store: str | None,
    policy: str = "auto",
) -> Any:
    """Build an Engine whose ``draft`` is a draft model or an MTP drafter, by name or path."""
    from draftwise.runtime.drafters.mtp_catalogue import is_mtp_drafter, load_mtp_drafter
    from draftwise.runtime.engine import Engine
    from draftwise.runtime.language_model import load_language_model

    if draft and is_mtp_drafter(draft):
        return Engine(target, None, drafter, draft_head_rows, mtp=load_mtp_drafter(draft))
    draft_model = None
    if draft:
        draft_model = load_language_model(draft, store_dir=store, policy=policy)
    return Engine(target, draft_model, drafter, draft_head_rows)


def _run_generate(args: argparse.Namespace) -> int:
    from draftwise.runtime.engine import GenerationRecord, parse_speculation

    if args.socket:
        from draftwise.actors.cli_serve import run_generate_over_socket

        return run_generate_over_socket(args)
    params = _params(args)
    speculation = parse_speculation(args.speculation)
    if args.raw:
        if not args.prompt:
            raise ValueError("--raw needs a PROMPT")
        if args.messages or args.system:
            raise ValueError("--raw sends PROMPT as is; drop --messages and --system")
    messages = None if args.raw else _read_messages(args)
    engine = _load_engine(args)
    tokenizer = engine.target.tokenizer
    if messages is None:
        prompt_ids = tokenizer.encode(args.prompt, add_special_tokens=False)
    else:
        prompt_ids = engine.target.encode_messages(messages, system=args.system)
    record = GenerationRecord()
    for chunk in engine.generate(prompt_ids, params, speculation, record):
        if not args.json and chunk.text:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
    if args.json:
        print(json.dumps(record.as_dict()))
    else:
        sys.stdout.write("\n")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from draftwise.runtime.engine import GenerationRecord
    from draftwise.runtime.generate import GenerationParams

    engine = _load_engine(args)
    prompt_ids = engine.target.encode_messages([{"role": "user", "content": args.prompt}])
    params = GenerationParams(max_tokens=args.max_tokens)
    print(f"prompt: {args.prompt}\n")
    plain = GenerationRecord()
    print(f"--- plain decoding ({engine.target.name}) ---", flush=True)
    for chunk in engine.generate(prompt_ids, params, "off", plain):
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
    print()
    spec = GenerationRecord()
    if engine.draft is not None:
        draft_name = engine.draft.name
    else:
        draft_name = args.draft if engine.mtp is not None else "none"
    print(f"\n--- speculative decoding (draft {draft_name}, {args.speculation}) ---", flush=True)
    for chunk in engine.generate(prompt_ids, params, args.speculation, spec):
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
    print("\n")
    plain_speed = plain.timings.decode_tokens_per_s
    spec_speed = spec.timings.decode_tokens_per_s
    print(
        f"plain:       {len(plain.token_ids)} tokens, decode {plain_speed:.2f} tok/s, "
        f"prefill {plain.timings.prefill_tokens_per_s:.1f} tok/s"
    )
    acceptance = spec.speculation.acceptance_rate if spec.speculation else 0.0
    print(
        f"speculative: {len(spec.token_ids)} tokens, decode {spec_speed:.2f} tok/s "
        f"({spec_speed / plain_speed if plain_speed else 0:.2f}x), acceptance {acceptance:.0%}"
    )
    identical = plain.token_ids == spec.token_ids
    print(f"outputs identical: {'yes' if identical else 'NO'}")
    return 0 if identical else 1


if __name__ == "__main__":
    main()

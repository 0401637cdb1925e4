"""`draftwise bench`: the kernel micro-benchmark and workload runs."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_bench_command(subparsers: Any) -> None:
    bench = subparsers.add_parser("bench", help="benchmark the verify kernel or a workload")
    bench.add_argument("what", nargs="?", choices=["kernel"],
                       help="kernel: time the quantized matmul and the target forward pass")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--model", default="qwen2.5-coder:1.5b", metavar="NAME",
                       help="target model for the forward-pass timings")
    bench.add_argument("--store", metavar="DIR", help="model store folder")
    bench.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    if args.what == "kernel":
        return _run_kernel_bench(args)
    raise ValueError("bench needs 'kernel' or --workload FILE")


def _run_kernel_bench(args: argparse.Namespace) -> int:
    from draftwise.runtime.kernels.bench import bench_kernel

    shapes = bench_kernel()
    report: dict[str, Any] = {"shapes": shapes, "forward": []}
    if args.json:
        print(json.dumps(report))
    else:
        for shape in shapes:
            print(f"{shape['name']}: {shape['n']}x{shape['k']} {shape['bits']}-bit g{shape['group_size']}")
            for row in shape["rows"]:
                print(f"  m={row['m']:>4}  kernel {row['kernel_ms']:8.3f} ms  "
                      f"mlx {row['mlx_quantized_ms']:8.3f} ms  float32 {row['float32_ms']:8.3f} ms")
    return 0

"""Benchmark of the quantized matmul against MLX's own and a float32 matmul.

The float32 matmul runs on the BLAS that `draftwise.runtime` loads (Debian's
OpenBLAS when installed, else the mlx wheel's reference BLAS).

Weights stream from memory as in decoding: each timed call uses the next of
several distinct weight copies, enough of them to exceed the CPU caches, so
no call finds its weights cached by the previous one.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import mlx.core as mx

from draftwise.runtime.kernels.qmm import _EXTENSION
from draftwise.runtime.weights import QuantizedTensor


class LayerShape(NamedTuple):
    """A linear layer's weight shape: ``n`` outputs by ``k`` inputs."""

    name: str
    n: int
    k: int


# Qwen2.5-Coder-1.5B: hidden 1536, intermediate 8960, 12 query heads and 2 KV
# heads of dim 128, vocabulary 151936 with the output head tied to the embedding.
QWEN_1_5B_SHAPES: tuple[LayerShape, ...] = (
    LayerShape("q_proj", 1536, 1536),
    LayerShape("k_proj", 256, 1536),
    LayerShape("v_proj", 256, 1536),
    LayerShape("o_proj", 1536, 1536),
    LayerShape("gate_proj", 8960, 1536),
    LayerShape("up_proj", 8960, 1536),
    LayerShape("down_proj", 1536, 8960),
    LayerShape("lm_head", 151936, 1536),
)

# (bits, group_size): the loader's layout for Q4_K, and 8-bit.
DEFAULT_FORMATS: tuple[tuple[int, int], ...] = ((4, 32), (8, 32))

# Weight bytes each rotation covers: several times the largest last-level
# caches of current server CPUs (32 MiB per CCD on AMD Zen 4 and Zen 5).
STREAM_BYTES = 256 * 2**20

# The baselines are skipped (None) above this many multiply-adds per call:
# MLX's single-threaded CPU quantized matmul takes about 1 ns per multiply-add
# on a 2-core AMD EPYC (Zen 1) VM, so each call would take seconds.
MAX_BASELINE_MACS = 2 * 10**9


def _quantized_copies(shape: LayerShape, bits: int, group_size: int) -> list[QuantizedTensor]:
    copies: list[QuantizedTensor] = []
    copy_bytes = 0
    while copy_bytes * len(copies) < STREAM_BYTES:
        dense = mx.random.normal((shape.n, shape.k))
        weight, scales, biases = mx.quantize(dense, group_size=group_size, bits=bits)
        mx.eval(weight, scales, biases)
        copies.append(QuantizedTensor(weight, scales, biases, bits, group_size, (shape.n, shape.k)))
        copy_bytes = copies[0].nbytes
    return copies


def _dense_copies(quantized: list[QuantizedTensor]) -> list[mx.array]:
    copies: list[mx.array] = []
    for source in quantized:
        dense = source.dequantize().T  # [k, n], as a plain float32 matmul reads it
        dense = mx.contiguous(dense)
        mx.eval(dense)
        copies.append(dense)
        if dense.nbytes * len(copies) >= STREAM_BYTES:
            break
    return copies


def _median_ms(
    call: Callable[[int], mx.array], copies: int, repeats: int, budget_s: float
) -> float:
    """Median wall time of `call(i)`, i rotating over the copies, after one warm-up."""
    mx.eval(call(0))
    times: list[float] = []
    started = time.perf_counter()
    for i in range(repeats):
        begin = time.perf_counter()
        mx.eval(call((i + 1) % copies))
        times.append((time.perf_counter() - begin) * 1e3)
        if i >= 2 and time.perf_counter() - started > budget_s:
            break
    return statistics.median(times)


def _bench_rows(
    shape: LayerShape,
    quantized: list[QuantizedTensor],
    dense: list[mx.array],
    m: int,
    repeats: int,
    budget_s: float,
    math: str,
) -> dict[str, Any]:
    x = mx.random.normal((m, shape.k))
    mx.eval(x)
    row: dict[str, Any] = {"m": m, "kernel_ms": None, "mlx_quantized_ms": None, "float32_ms": None}
    if _EXTENSION is not None:

        def kernel(i: int) -> mx.array:
            w = quantized[i]
            out: mx.array = _EXTENSION.quantized_matmul(
                x, w.weight, w.scales, w.biases, w.bits, w.group_size, math=math
            )
            return out

        row["kernel_ms"] = _median_ms(kernel, len(quantized), repeats, budget_s)
    if m * shape.n * shape.k > MAX_BASELINE_MACS:
        return row

    def mlx_quantized(i: int) -> mx.array:
        w = quantized[i]
        return mx.quantized_matmul(
            x, w.weight, w.scales, w.biases, transpose=True, group_size=w.group_size, bits=w.bits
        )

    row["mlx_quantized_ms"] = _median_ms(mlx_quantized, len(quantized), repeats, budget_s)
    row["float32_ms"] = _median_ms(lambda i: x @ dense[i], len(dense), repeats, budget_s)
    return row


def bench_kernel(
    shapes: Sequence[LayerShape] = QWEN_1_5B_SHAPES,
    rows: Sequence[int] = (1, 2, 4, 8, 16, 64, 512),
    formats: Sequence[tuple[int, int]] = DEFAULT_FORMATS,
    repeats: int = 7,
    budget_s: float = 2.0,
    math: str | None = None,
) -> list[dict[str, Any]]:
    """Time one matmul per (format, shape, row count) with weights streamed from memory.

    Returns ``[{"name", "n", "k", "bits", "group_size", "rows": [{"m",
    "kernel_ms", "mlx_quantized_ms", "float32_ms"}]}]`` with the median of
    up to ``repeats`` calls (at least three, then until ``budget_s`` is
    spent). ``kernel_ms`` is None when the extension is not built, and the
    baselines are None above MAX_BASELINE_MACS multiply-adds per call.
    ``math`` ("f32", "bf16" or "int8"; None: what the runtime uses, see
    `kernel_math`) selects the kernel's arithmetic and is recorded in each
    entry.
    """
    if math is None:
        from draftwise.runtime.kernels.qmm import kernel_math

        math = kernel_math()
    results: list[dict[str, Any]] = []
    for bits, group_size in formats:
        for shape in shapes:
            quantized = _quantized_copies(shape, bits, group_size)
            dense = _dense_copies(quantized)
            measured = [
                _bench_rows(shape, quantized, dense, m, repeats, budget_s, math) for m in rows
            ]
            del quantized, dense
            results.append(
                {
                    "name": shape.name,
                    "n": shape.n,
                    "k": shape.k,
                    "bits": bits,
                    "group_size": group_size,
                    "math": math,
                    "rows": measured,
                }
            )
    return results


def format_table(results: list[dict[str, Any]]) -> str:
    """Render bench_kernel's results as a Markdown table."""

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        "| layer | n x k | bits/group | m | kernel ms | mlx quantized ms | float32 ms |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for entry in results:
        for row in entry["rows"]:
            lines.append(
                f"| {entry['name']} | {entry['n']}x{entry['k']} | "
                f"{entry['bits']}/{entry['group_size']} | {row['m']} | "
                f"{cell(row['kernel_ms'])} | {cell(row['mlx_quantized_ms'])} | "
                f"{cell(row['float32_ms'])} |"
            )
    return "\n".join(lines)

"""Kernels: the batch-invariant CPU quantized matmul and its fallback."""

from draftwise.runtime.kernels.qmm import (
    KERNEL_ENV,
    MATH_ENV,
    attention_rows,
    kernel_info,
    kernel_math,
    quantized_matmul,
    reads_half_groups,
    silu_mul,
)

__all__ = [
    "KERNEL_ENV",
    "MATH_ENV",
    "attention_rows",
    "kernel_info",
    "kernel_math",
    "quantized_matmul",
    "reads_half_groups",
    "silu_mul",
]

"""Kernels: the batch-invariant CPU quantized matmul and its fallback."""

from draftwise.runtime.kernels.qmm import (
    HUGE_PAGES_ENV,
    KERNEL_ENV,
    MATH_ENV,
    attention_rows,
    huge_pages_enabled,
    kernel_info,
    kernel_math,
    on_huge_pages,
    quantized_matmul,
    reads_half_groups,
    rms_norm_rows,
    rope_rows,
    silu_mul,
)

__all__ = [
    "HUGE_PAGES_ENV",
    "KERNEL_ENV",
    "MATH_ENV",
    "attention_rows",
    "huge_pages_enabled",
    "kernel_info",
    "kernel_math",
    "on_huge_pages",
    "quantized_matmul",
    "reads_half_groups",
    "rms_norm_rows",
    "rope_rows",
    "silu_mul",
]

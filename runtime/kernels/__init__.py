"""Kernels: the batch-invariant CPU quantized matmul and its fallback."""

from draftwise.runtime.kernels.qmm import KERNEL_ENV, kernel_info, quantized_matmul

__all__ = ["KERNEL_ENV", "kernel_info", "quantized_matmul"]

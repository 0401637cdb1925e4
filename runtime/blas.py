"""Route MLX's float32 matmul to OpenBLAS when the system has it.

The Linux mlx wheel links a bundled reference BLAS whose matmul cost grows
with every row. Loading OpenBLAS with RTLD_GLOBAL before mlx is imported
puts its ``cblas_sgemm`` first in the global symbol scope, so libmlx binds
to it instead. This must run before the first ``import mlx``; draftwise's
runtime package does it on import. ``DRAFTWISE_OPENBLAS=off`` skips it.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

# Debian's libopenblas0-pthread; the generic name is tried last.
CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "libopenblas.so.0",
)


@dataclass(frozen=True)
class BlasStatus:
    """The BLAS library that float32 matmul uses, and the reason for the choice."""

    library: str  # "openblas", "bundled" or "accelerate"
    path: str | None
    reason: str


_status: BlasStatus | None = None


def preload_openblas() -> BlasStatus:
    """Load OpenBLAS globally if possible; safe to call more than once."""
    global _status
    if _status is not None:
        return _status
    if sys.platform == "darwin":
        _status = BlasStatus("accelerate", None, "macOS builds of mlx use Accelerate")
    elif os.environ.get("DRAFTWISE_OPENBLAS", "").lower() == "off":
        _status = BlasStatus("bundled", None, "DRAFTWISE_OPENBLAS=off")
    elif "mlx.core" in sys.modules:
        _status = BlasStatus(
            "bundled", None, "mlx was imported before draftwise, so OpenBLAS cannot take over"
        )
    else:
        _status = _load_first_candidate()
    return _status


def _load_first_candidate() -> BlasStatus:
    for candidate in CANDIDATES:
        if candidate.startswith("/") and not os.path.exists(candidate):
            continue
        try:
            ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        return BlasStatus("openblas", candidate, "loaded before mlx")
    return BlasStatus(
        "bundled",
        None,
        "OpenBLAS not found; install Debian's libopenblas0-pthread for fast float32 matmul",
    )


def blas_status() -> BlasStatus:
    return preload_openblas()

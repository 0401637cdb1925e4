"""Quantized matmul for decode, verify and prefill: the C++ kernel, or MLX's own.

The kernel (`draftwise.runtime.kernels._qmm`, built from csrc/) computes every
output row with the same float operations in the same order, whatever the
number of rows in the call. So verifying k draft tokens in one pass yields
bit-for-bit the logits of k single-token decode steps. MLX's own
`mx.quantized_matmul` is the fallback: it is also row-by-row on the CPU, but
far slower there, and its results differ from the kernel's in the last bits.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

import mlx.core as mx
import structlog

from draftwise.runtime.weights import QuantizedTensor

log = structlog.get_logger(__name__)

# "off" forces MLX's quantized matmul (tests and benchmarks compare both).
KERNEL_ENV = "DRAFTWISE_KERNEL"
# The kernel's arithmetic. "auto" (the default) is "int8" where the CPU has
# AVX-512 with VNNI, "bf16" where it has AVX512_BF16 without VNNI, and "f32"
# elsewhere.
# "int8" rounds each 32-element block of the activations to int8 with its own
# scale and multiplies 4- and 8-bit weights with integer dot products
# (vpdpbusd), adding each block's product in float32. On the Zen 4 machine of
# docs/benchmarks.md it decodes about 20% faster than "bf16" (one-row steps
# are memory-bound there, and its kernel reads the weights in address order)
# and verifies 9 rows at about the same speed. Its logits differ from float32
# by 2.7% of their spread (top-1 agreement 99.5%, `draftwise bench accuracy`);
# llama.cpp rounds activations to 8 bits for these weight formats too.
# "bf16" rounds activations and 4- and 8-bit weights to bfloat16 and sums the
# products in float32 (vdpbf16ps): logits within 0.4% of float32's spread and
# 100% top-1 agreement there, for about 20% slower decoding.
# Other weight widths keep float32 math in every mode.
MATH_ENV = "DRAFTWISE_KERNEL_MATH"
MATH_CHOICES = ("auto", "f32", "bf16", "int8")
# "on" (the default) copies large weights onto transparent huge pages, see
# `on_huge_pages`. "off" keeps them where the loader put them, on ordinary
# 4 KiB pages, so that benchmarks can compare both.
HUGE_PAGES_ENV = "DRAFTWISE_HUGE_PAGES"
# Arrays smaller than this stay where they are: they span less than one huge page.
HUGE_PAGE_BYTES = 2 << 20


def _import_extension() -> tuple[ModuleType | None, str | None]:
    try:
        from draftwise.runtime.kernels import _qmm  # type: ignore[attr-defined,unused-ignore]
    except ImportError as exc:
        return None, (
            f"the extension draftwise.runtime.kernels._qmm is not importable ({exc}); "
            "reinstall with `pip install -v .` and read the CMake output"
        )
    return _qmm, None


_EXTENSION, _IMPORT_ERROR = _import_extension()
_logged: set[str] = set()


def _unavailable_reason() -> str | None:
    if os.environ.get(KERNEL_ENV, "").strip().lower() == "off":
        return f"{KERNEL_ENV}=off"
    if mx.default_device() != mx.cpu:
        return "the default MLX device is a GPU, and the kernel runs on the CPU only"
    return _IMPORT_ERROR


def kernel_math() -> str:
    """Return the kernel's arithmetic: "f32", "bf16" or "int8".

    DRAFTWISE_KERNEL_MATH chooses it; unset or "auto" means "int8" where the
    CPU has AVX-512 VNNI, else "bf16" where it has AVX512_BF16, else "f32".
    Raises ValueError for any other value, naming it and the choices.
    """
    value = os.environ.get(MATH_ENV, "auto").strip().lower() or "auto"
    if value not in MATH_CHOICES:
        raise ValueError(
            f"{MATH_ENV}={value!r} is not supported; use one of {', '.join(MATH_CHOICES)}"
        )
    if value == "auto":
        if _vnni_int8_usable():
            return "int8"
        return "bf16" if _bf16_usable() else "f32"
    return value


def reads_half_groups() -> bool:
    """Return whether the kernel that runs now reads float16 group scales of 4-bit weights.

    False without the extension, or for arithmetics whose kernel widens them
    to float32 on every call instead (which makes float16 groups a loss).
    """
    if _unavailable_reason() is not None or _EXTENSION is None:
        return False
    return bool(_EXTENSION.reads_half_groups(math=kernel_math(), bits=4))


@functools.cache
def _vnni_int8_usable() -> bool:
    """Return whether math="int8" runs the AVX-512 VNNI kernel on this CPU."""
    if _EXTENSION is None:
        return False
    try:
        return bool(_EXTENSION.variant_name(math="int8") == "avx512_i8")
    except ValueError:
        return False


@functools.cache
def _bf16_usable() -> bool:
    """Return whether the extension runs bfloat16 math on this CPU."""
    if _EXTENSION is None:
        return False
    probe = mx.quantize(mx.zeros((8, 64)), group_size=32, bits=4)
    try:
        mx.eval(_EXTENSION.quantized_matmul(mx.zeros((1, 64)), *probe, 4, 32, math="bf16"))
    except ValueError:
        return False
    return True


def _log_once(key: str, level: str, event: str, **fields: Any) -> None:
    if key in _logged:
        return
    _logged.add(key)
    getattr(log, level)(event, **fields)


def kernel_info() -> dict[str, Any]:
    """Return which implementation `quantized_matmul` uses now.

    Keys: ``available`` (the C++ kernel is used), ``isa`` (``"avx512"``,
    ``"avx2"``, ``"scalar"``, or ``"mlx"`` for the fallback), ``threads``,
    ``math`` (``"f32"``, ``"bf16"`` or ``"int8"``), and ``reason`` when the kernel is
    not used.
    """
    reason = _unavailable_reason()
    if reason is not None or _EXTENSION is None:
        return {"available": False, "isa": "mlx", "threads": 1, "math": "f32", "reason": reason}
    return {
        "available": True,
        "isa": _EXTENSION.default_isa(),
        "threads": _EXTENSION.num_threads(),
        "math": kernel_math(),
    }


def quantized_matmul(x: mx.array, w: QuantizedTensor) -> mx.array:
    """Return ``x @ w.dequantize().T`` lazily: float32 ``[..., w.shape[0]]``.

    ``x`` is float32 ``[..., w.shape[1]]`` with any number of rows. With the
    kernel, each output row is bit-identical whatever the row count and the
    row's position in the batch. Raises ValueError naming the invalid value
    (dtype, K mismatch, bits outside 2, 3, 4, 5, 6, 8, group size outside 32,
    64, 128). Without the kernel, it logs ``verify_kernel_unavailable`` once
    and returns MLX's ``mx.quantized_matmul``. DRAFTWISE_KERNEL_MATH=int8
    selects int8 activations (see `kernel_math`).
    """
    reason = _unavailable_reason()
    if reason is None and _EXTENSION is not None:
        result: mx.array = _EXTENSION.quantized_matmul(
            x, w.weight, w.scales, w.biases, w.bits, w.group_size, math=kernel_math()
        )
        # Checked here: kernel_info costs several extension calls, and a
        # forward pass builds about 140 of these nodes.
        if "selected" not in _logged:
            _log_once("selected", "info", "verify_kernel_selected", **kernel_info())
        return result
    _log_once("unavailable", "warning", "verify_kernel_unavailable", reason=reason)
    # float32 groups, so that MLX computes in float32 as the kernel does.
    return mx.quantized_matmul(
        x,
        w.weight,
        w.scales.astype(mx.float32),
        w.biases.astype(mx.float32),
        transpose=True,
        group_size=w.group_size,
        bits=w.bits,
    )


def attention_rows(
    queries: mx.array,
    keys: mx.array,
    values: mx.array,
    query_start: int,
    key_start: int,
    scale: float,
    window: int,
) -> mx.array | None:
    """Return the extension's row-by-row attention (see `layers.attend`), or None without it.

    None also when an input is not float32; the caller then uses MLX ops.
    """
    if _unavailable_reason() is not None or _EXTENSION is None:
        return None
    if any(a.dtype != mx.float32 for a in (queries, keys, values)):
        return None
    result: mx.array = _EXTENSION.attention_rows(
        queries, keys, values, query_start, key_start, scale, window
    )
    return result


def rms_norm_rows(x: mx.array, weight: mx.array, eps: float) -> mx.array | None:
    """Return ``x * rsqrt(mean(x ** 2, axis=-1) + eps) * weight`` as one operation, or None.

    On the CPU, ``mx.fast.rms_norm`` expands into its reference graph of small
    MLX operations. None when the extension is not loaded or the arrays are not float32
    ``[rows, d]`` / ``[a, rows, d]`` with ``weight`` ``[d]``; the caller then
    uses ``mx.fast.rms_norm``.
    """
    if _unavailable_reason() is not None or _EXTENSION is None:
        return None
    if x.dtype != mx.float32 or weight.dtype != mx.float32 or x.ndim not in (2, 3):
        return None
    if weight.shape != (x.shape[-1],):
        return None
    result: mx.array = _EXTENSION.rms_norm_rows(x, weight, eps)
    return result


def rope_rows(
    x: mx.array, offset: int, base: float, scale: float, traditional: bool
) -> mx.array | None:
    """Return ``x`` ``[heads, rows, d]`` rotated for positions ``offset ..`` as one operation.

    The rotation of ``mx.fast.rope(x, d, ...)``, which expands into its
    reference graph on the CPU, with angles computed in double. None
    when the extension is not loaded or ``x`` is not float32 ``[heads, rows, d]``
    with an even ``d``; the caller then uses ``mx.fast.rope``.
    """
    if _unavailable_reason() is not None or _EXTENSION is None:
        return None
    if x.dtype != mx.float32 or x.ndim != 3 or x.shape[-1] % 2:
        return None
    result: mx.array = _EXTENSION.rope_rows(x, offset, base, scale, traditional)
    return result


def huge_pages_enabled() -> bool:
    """Return whether `on_huge_pages` moves arrays: DRAFTWISE_HUGE_PAGES is "on" (default) or "off".

    Raises ValueError for any other value, naming it and the choices.
    """
    value = os.environ.get(HUGE_PAGES_ENV, "on").strip().lower() or "on"
    if value not in ("on", "off"):
        raise ValueError(f"{HUGE_PAGES_ENV}={value!r} is not supported; use 'on' or 'off'")
    return value == "on" and _EXTENSION is not None and mx.default_device() == mx.cpu


def on_huge_pages(array: mx.array, min_bytes: int | None = None) -> mx.array:
    """Return ``array`` copied into memory advised for transparent huge pages, or itself.

    Decoding reads every weight once per token. On 4 KiB pages the CPU misses
    its TLB every 4 KiB, and hardware prefetchers usually stop at page
    boundaries. On 2 MiB pages neither happens. The copy has the same values, dtype and
    shape. ``array`` itself comes back when it is smaller than ``min_bytes``
    (default `HUGE_PAGE_BYTES`) or not contiguous, without the extension, off Linux, or with
    DRAFTWISE_HUGE_PAGES=off. Whether the kernel then backs the copy with huge
    pages depends on its THP setting ("always" or "madvise"; not "never").
    """
    if not huge_pages_enabled():
        return array
    assert _EXTENSION is not None
    threshold = HUGE_PAGE_BYTES if min_bytes is None else min_bytes
    if threshold < 0:
        raise ValueError(f"min_bytes {threshold} must be >= 0")
    result: mx.array = _EXTENSION.on_huge_pages(array, threshold)
    return result


def silu_mul(gate_up: mx.array) -> mx.array | None:
    """Return ``silu(gate) * up`` for ``gate_up = [gate | up]`` from the extension, or None.

    ``gate_up`` is ``[rows, 2 * f]``, and the result is ``[rows, f]``. None when
    the extension is not loaded or the input is not 2-D float32 with an even
    column count. The caller then uses MLX ops.
    """
    if _unavailable_reason() is not None or _EXTENSION is None:
        return None
    if gate_up.dtype != mx.float32 or gate_up.ndim != 2 or gate_up.shape[1] % 2:
        return None
    result: mx.array = _EXTENSION.silu_mul(gate_up)
    return result

"""Weights copied onto transparent huge pages: same values, fallbacks, and the model path."""

from __future__ import annotations

import sys

import mlx.core as mx
import numpy as np
import pytest
from conftest import _qmm, requires_extension
from fakes import tiny_model

from draftwise.runtime import kernels
from draftwise.runtime.kernels import qmm

# The copy exists on Linux only; elsewhere on_huge_pages returns its input.
pytestmark = [
    requires_extension,
    pytest.mark.skipif(sys.platform != "linux", reason="huge-page advice is Linux only"),
]

HUGE_PAGE = 2 << 20


def _address(a: mx.array) -> int:
    """Return the address of ``a``'s first element."""
    mx.eval(a)
    address: int = np.asarray(memoryview(a)).__array_interface__["data"][0]
    return address


def test_copy_keeps_values_dtype_shape() -> None:
    for dtype in (mx.float32, mx.float16, mx.uint32):
        a = (mx.random.normal((700, 1000)) * 100).astype(dtype)
        b = kernels.on_huge_pages(a, min_bytes=0)
        # The copy's data starts 64 bytes into a 2 MiB-aligned mapping.
        assert _address(b) != _address(a)
        assert _address(b) % HUGE_PAGE == 64
        assert b.dtype == a.dtype
        assert b.shape == a.shape
        assert mx.array_equal(a, b).item()
        # The copy works as an operand after the original is gone.
        del a
        assert mx.isfinite((b.astype(mx.float32) * 2).sum()).item()


def test_small_and_strided_arrays_stay() -> None:
    small = mx.arange(10)
    assert _address(kernels.on_huge_pages(small)) == _address(small)
    assert _address(_qmm.on_huge_pages(small, 1 << 30)) == _address(small)

    wide = mx.random.normal((64, 64))
    strided = wide.T
    mx.eval(strided)
    unmoved = kernels.on_huge_pages(strided, min_bytes=0)
    assert _address(unmoved) == _address(wide)
    np.testing.assert_array_equal(np.array(unmoved), np.array(strided))


def test_switch_off_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    a = mx.random.normal((600, 600))
    monkeypatch.setenv(kernels.HUGE_PAGES_ENV, "off")
    assert _address(kernels.on_huge_pages(a, min_bytes=0)) == _address(a)

    monkeypatch.setenv(kernels.HUGE_PAGES_ENV, "sometimes")
    with pytest.raises(ValueError, match=r"DRAFTWISE_HUGE_PAGES='sometimes'.*'on' or 'off'"):
        kernels.on_huge_pages(a)

    monkeypatch.setenv(kernels.HUGE_PAGES_ENV, "on")
    with pytest.raises(ValueError, match="min_bytes -1"):
        kernels.on_huge_pages(a, min_bytes=-1)


def test_moved_model_same_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = mx.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=mx.uint32)
    monkeypatch.setenv(kernels.HUGE_PAGES_ENV, "off")
    plain = tiny_model(seed=3)
    want = plain(tokens, plain.make_cache()).logits

    # Every array of the tiny model is below 2 MiB, so lower the threshold to move them all.
    monkeypatch.setenv(kernels.HUGE_PAGES_ENV, "on")
    monkeypatch.setattr(qmm, "HUGE_PAGE_BYTES", 0)
    moved = tiny_model(seed=3)
    got = moved(tokens, moved.make_cache()).logits
    np.testing.assert_array_equal(np.array(got), np.array(want))

    # The fused projections' views point into the moved arrays.
    fused, _, rows = moved._fused["blk.0.attn_qkv"]
    assert _address(fused.weight) % HUGE_PAGE == 64
    q = moved.weights["blk.0.attn_q.weight"]
    np.testing.assert_array_equal(np.array(q.weight), np.array(fused.weight[: rows[0]]))

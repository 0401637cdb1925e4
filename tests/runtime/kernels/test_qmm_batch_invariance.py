"""Every output row is bit-identical whatever the batch around it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import (
    BITS,
    GROUP_SIZES,
    _qmm,
    assert_rows_batch_invariant,
    make_weight,
    requires_extension,
    usable_isas,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = requires_extension


def run(x: np.ndarray, w, isa: str) -> np.ndarray:
    out = _qmm.quantized_matmul(
        mx.array(x), w.weight, w.scales, w.biases, w.bits, w.group_size, isa=isa
    )
    return np.array(out)


@st.composite
def batches(draw: st.DrawFn) -> tuple:
    bits = draw(st.sampled_from(BITS))
    group_size = draw(st.sampled_from(GROUP_SIZES))
    n = draw(st.integers(1, 60))
    k = group_size * draw(st.integers(1, 5))
    # Up to 140 rows crosses both the few-rows and the tiled paths and more
    # than one row block of the tiled path.
    rows = draw(st.integers(1, 140))
    seed = draw(st.integers(0, 2**32 - 1))
    isa = draw(st.sampled_from(usable_isas()))
    return bits, group_size, n, k, rows, seed, isa


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.data())
def test_qmm_rows_independent_of_batch(batch: tuple, data: st.DataObject) -> None:
    bits, group_size, n, k, rows, seed, isa = batch
    rng = np.random.default_rng(seed)
    w = make_weight(rng, n, k, bits, group_size)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    assert_rows_batch_invariant(lambda batch: run(batch, w, isa), x, data)


@pytest.mark.parametrize("isa", usable_isas())
@pytest.mark.parametrize("bits", [4, 5, 8])
def test_qmm_many_rows_equal_single_rows(isa: str, bits: int) -> None:
    rng = np.random.default_rng(bits)
    w = make_weight(rng, 45, 384, bits, 32)
    x = rng.standard_normal((200, 384)).astype(np.float32)
    full = run(x, w, isa)
    for row in range(200):
        np.testing.assert_array_equal(run(x[row : row + 1], w, isa)[0], full[row])


@pytest.mark.parametrize("isa", usable_isas())
@pytest.mark.parametrize("bits", [4, 8])
def test_qmm_each_row_count_equals_single_rows(isa: str, bits: int) -> None:
    # Row counts around the switch from the register path (up to 9 rows) to the tiled one.
    rng = np.random.default_rng(100 + bits)
    w = make_weight(rng, 70, 256, bits, 32)
    x = rng.standard_normal((12, 256)).astype(np.float32)
    singles = np.concatenate([run(x[row : row + 1], w, isa) for row in range(12)])
    for m in range(1, 13):
        np.testing.assert_array_equal(run(x[:m], w, isa), singles[:m], err_msg=f"m={m}")


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("rows", [1, 9, 70])
def test_qmm_rows_independent_of_thread_count(tmp_path: Path, rows: int, threads: int) -> None:
    rng = np.random.default_rng(rows)
    w = make_weight(rng, 97, 256, 4, 32)
    x = rng.standard_normal((rows, 256)).astype(np.float32)
    in_process = run(x, w, "")
    np.savez(
        tmp_path / "inputs.npz",
        x=x,
        weight=np.array(w.weight),
        scales=np.array(w.scales),
        biases=np.array(w.biases),
    )
    script = (
        "import sys, numpy as np, mlx.core as mx\n"
        "from draftwise.runtime.kernels import _qmm\n"
        "assert _qmm.num_threads() == int(sys.argv[3])\n"
        "d = np.load(sys.argv[1])\n"
        "a = {key: mx.array(d[key]) for key in d.files}\n"
        "y = _qmm.quantized_matmul(a['x'], a['weight'], a['scales'], a['biases'], 4, 32)\n"
        "np.save(sys.argv[2], np.array(y))\n"
    )
    env = dict(os.environ, DRAFTWISE_KERNEL_THREADS=str(threads))
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path / "inputs.npz"),
            str(tmp_path / "y.npy"),
            str(threads),
        ],
        check=True,
        env=env,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), in_process)

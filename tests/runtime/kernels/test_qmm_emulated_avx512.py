"""The AVX-512 variant's logic, on CPUs without AVX-512, through SIMDe emulation.

Skipped unless DRAFTWISE_QMM_EMULATED names a module built with
    apt-get install libsimde-dev
    cmake -S csrc -B /tmp/qmm_simde -DPython_EXECUTABLE=$(which python) \
        -DDRAFTWISE_AVX512_SIMDE=ON -DCMAKE_LIBRARY_OUTPUT_DIRECTORY=/tmp/qmm_simde/out
    cmake --build /tmp/qmm_simde
    DRAFTWISE_QMM_EMULATED=$(ls /tmp/qmm_simde/out/_qmm*.so) pytest tests/runtime/kernels
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import mlx.core as mx
import numpy as np
import pytest
from conftest import BITS, GROUP_SIZES, make_weight, reference, tolerance

EMULATED_PATH = os.environ.get("DRAFTWISE_QMM_EMULATED")

pytestmark = pytest.mark.skipif(
    EMULATED_PATH is None, reason="DRAFTWISE_QMM_EMULATED does not name an emulated build"
)


@pytest.fixture(scope="module")
def emulated() -> ModuleType:
    assert EMULATED_PATH is not None
    spec = importlib.util.spec_from_file_location("_qmm", EMULATED_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_emulated_avx512_accurate_and_invariant(
    emulated: ModuleType, bits: int, group_size: int
) -> None:
    rng = np.random.default_rng(bits * 1000 + group_size)
    for n, groups in [(1, 1), (7, 3), (37, 2)]:
        w = make_weight(rng, n, groups * group_size, bits, group_size)
        x = rng.standard_normal((80, groups * group_size)).astype(np.float32)

        def run(rows: np.ndarray, w=w) -> np.ndarray:
            out = emulated.quantized_matmul(
                mx.array(rows), w.weight, w.scales, w.biases, bits, group_size, isa="avx512"
            )
            return np.array(out)

        full = run(x)
        assert (np.abs(full - reference(x, w)) <= tolerance(x, w)).all()
        for m in (1, 2, 3, 4, 5, 9, 16):
            np.testing.assert_array_equal(run(x[3 : 3 + m]), full[3 : 3 + m])
        order = rng.permutation(80)
        np.testing.assert_array_equal(run(x[order]), full[order])


@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_emulated_avx512_int8_matches_simulated_math(emulated: ModuleType, group_size: int) -> None:
    from test_qmm_int8 import simulated_int8

    rng = np.random.default_rng(group_size)
    # Block counts that fill chunks of four blocks and ones that leave a tail.
    for n, groups in [(1, 1), (7, 3), (37, 2), (9, 5)]:
        w = make_weight(rng, n, groups * group_size, 4, group_size)
        x = rng.standard_normal((30, groups * group_size)).astype(np.float32)

        def run(rows: np.ndarray, w=w) -> np.ndarray:
            out = emulated.quantized_matmul(
                mx.array(rows),
                w.weight,
                w.scales,
                w.biases,
                4,
                group_size,
                isa="avx512",
                math="int8",
            )
            return np.array(out)

        full = run(x)
        bound = 1e-5 * (np.abs(x) @ np.abs(np.array(w.dequantize())).T) + 1e-5
        assert (np.abs(full - simulated_int8(x, w, "avx512")) <= bound).all()
        for m in (1, 2, 3, 4, 5, 7):
            np.testing.assert_array_equal(run(x[11 : 11 + m]), full[11 : 11 + m])
        order = rng.permutation(30)
        np.testing.assert_array_equal(run(x[order]), full[order])

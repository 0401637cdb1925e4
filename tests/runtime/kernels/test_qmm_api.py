"""The Python API: fallback, kernel_info, laziness and input errors."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import _qmm, make_weight, reference, requires_extension, tolerance
from structlog.testing import capture_logs

from draftwise.runtime import kernels
from draftwise.runtime.kernels import qmm
from draftwise.runtime.weights import QuantizedTensor


@pytest.fixture
def fresh_log_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qmm, "_logged", set())


def test_quantized_matmul_fallback_matches_reference(
    monkeypatch: pytest.MonkeyPatch, fresh_log_state: None
) -> None:
    monkeypatch.setenv(kernels.KERNEL_ENV, "off")
    rng = np.random.default_rng(0)
    w = make_weight(rng, 33, 256, 4, 32)
    x = rng.standard_normal((5, 256)).astype(np.float32)
    with capture_logs() as logs:
        got = np.array(kernels.quantized_matmul(mx.array(x), w))
        kernels.quantized_matmul(mx.array(x), w)
    assert (np.abs(got - reference(x, w)) <= tolerance(x, w)).all()
    warnings = [entry for entry in logs if entry["event"] == "verify_kernel_unavailable"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert "DRAFTWISE_KERNEL=off" in warnings[0]["reason"]


def test_kernel_info_forced_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernels.KERNEL_ENV, "off")
    info = kernels.kernel_info()
    assert info["available"] is False
    assert info["isa"] == "mlx"
    assert "DRAFTWISE_KERNEL=off" in info["reason"]


@requires_extension
def test_kernel_info_names_isa_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    info = kernels.kernel_info()
    assert info["available"] is True
    assert info["isa"] == _qmm.usable_isas()[0]
    assert info["threads"] >= 1
    assert "reason" not in info


@requires_extension
def test_quantized_matmul_logs_selected_isa(
    monkeypatch: pytest.MonkeyPatch, fresh_log_state: None
) -> None:
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    w = make_weight(np.random.default_rng(1), 8, 64, 4, 32)
    with capture_logs() as logs:
        kernels.quantized_matmul(mx.zeros((1, 64)), w)
    selected = [entry for entry in logs if entry["event"] == "verify_kernel_selected"]
    assert len(selected) == 1
    assert selected[0]["isa"] == _qmm.default_isa()


@requires_extension
def test_quantized_matmul_close_to_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(2)
    w = make_weight(rng, 40, 512, 5, 64)
    x = mx.array(rng.standard_normal((3, 512)).astype(np.float32))
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    with_kernel = np.array(kernels.quantized_matmul(x, w))
    monkeypatch.setenv(kernels.KERNEL_ENV, "off")
    without = np.array(kernels.quantized_matmul(x, w))
    assert np.allclose(with_kernel, without, rtol=1e-4, atol=1e-4)


@requires_extension
def test_quantized_matmul_lazy_in_larger_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    rng = np.random.default_rng(3)
    up = make_weight(rng, 96, 64, 4, 32)
    down = make_weight(rng, 64, 96, 8, 32)
    x_np = rng.standard_normal((4, 64)).astype(np.float32)

    x = mx.array(x_np)
    hidden = mx.maximum(kernels.quantized_matmul(x * 2.0, up), 0.0)
    out = kernels.quantized_matmul(hidden, down) + x
    mx.eval(out)

    hidden_ref = np.maximum(reference(x_np * 2.0, up), 0.0)
    expected = reference(hidden_ref, down) + x_np
    assert np.allclose(np.array(out), expected, rtol=1e-4, atol=1e-4)


@requires_extension
def test_quantized_matmul_inside_compiled_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    rng = np.random.default_rng(4)
    w = make_weight(rng, 32, 128, 4, 64)
    x = mx.array(rng.standard_normal((2, 128)).astype(np.float32))

    def step(x: mx.array) -> mx.array:
        return kernels.quantized_matmul(x, w).sum(axis=-1)

    compiled = mx.compile(step)
    np.testing.assert_array_equal(np.array(compiled(x)), np.array(step(x)))


def _bad(w: QuantizedTensor, **changes: object) -> QuantizedTensor:
    fields = {name: getattr(w, name) for name in w.__dataclass_fields__}
    fields.update(changes)
    return QuantizedTensor(**fields)  # type: ignore[arg-type]


@requires_extension
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("float16_x", "float16"),
        ("k_mismatch", "K=96"),
        ("bits_7", "bits=7"),
        ("group_size_16", "group_size=16"),
        ("scales_shape", "scales has shape"),
        ("float16_biases", r"scales \(float32\) and biases \(float16\) must have the same"),
        ("bfloat16_groups", "scales must be float32 or float16, got bfloat16"),
    ],
)
def test_quantized_matmul_rejects_bad_input(
    monkeypatch: pytest.MonkeyPatch, case: str, expected: str
) -> None:
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    w = make_weight(np.random.default_rng(5), 16, 128, 4, 32)
    x = mx.zeros((2, 128))
    if case == "float16_x":
        x = x.astype(mx.float16)
    elif case == "k_mismatch":
        x = mx.zeros((2, 96))
    elif case == "bits_7":
        w = _bad(w, bits=7)
    elif case == "group_size_16":
        w = _bad(w, group_size=16)
    elif case == "scales_shape":
        w = _bad(w, scales=w.scales[:, :2])
    elif case == "float16_biases":
        w = _bad(w, biases=w.biases.astype(mx.float16))
    elif case == "bfloat16_groups":
        w = _bad(w, scales=w.scales.astype(mx.bfloat16), biases=w.biases.astype(mx.bfloat16))
    with pytest.raises(ValueError, match=expected):
        kernels.quantized_matmul(x, w)


def test_auto_math_falls_back_to_float32_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qmm, "_vnni_int8_usable", lambda: False)
    monkeypatch.setattr(qmm, "_bf16_usable", lambda: False)
    monkeypatch.setenv(kernels.MATH_ENV, "auto")
    assert kernels.kernel_math() == "f32"
    monkeypatch.delenv(kernels.MATH_ENV)
    assert kernels.kernel_math() == "f32"


def test_auto_math_prefers_int8_then_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernels.MATH_ENV, raising=False)
    monkeypatch.setattr(qmm, "_vnni_int8_usable", lambda: True)
    monkeypatch.setattr(qmm, "_bf16_usable", lambda: True)
    assert kernels.kernel_math() == "int8"
    monkeypatch.setattr(qmm, "_vnni_int8_usable", lambda: False)
    assert kernels.kernel_math() == "bf16"
    monkeypatch.setenv(kernels.MATH_ENV, "bf16")
    monkeypatch.setattr(qmm, "_vnni_int8_usable", lambda: True)
    assert kernels.kernel_math() == "bf16"

"""load_gguf: hyper-parameters, weight policies, unsupported inputs and the cache."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize
from loading_builders import HALF_FIELDS, TinyModelSpec, TinyVocab, write_tiny_gguf

from draftwise.runtime import kernels
from draftwise.runtime.errors import ModelFormatError, UnsupportedArchitectureError
from draftwise.runtime.loading import gguf_loader, load_gguf
from draftwise.runtime.loading.converted_cache import DIGEST_MEMO, FORMAT_VERSION
from draftwise.runtime.loading.gguf_file import read_gguf
from draftwise.runtime.loading.gguf_tensors import convert_tensor, half_groups
from draftwise.runtime.weights import QuantizedTensor

Q = GGMLQuantizationType
EXACT = {Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q4_K, Q.Q5_K}


def dense(value: mx.array | QuantizedTensor) -> np.ndarray:
    if isinstance(value, QuantizedTensor):
        return np.array(value.dequantize())
    return np.array(value)


def reference_weights(path: Path) -> dict[str, tuple[np.ndarray, Q]]:
    header = read_gguf(path)
    return {
        name: (
            dequantize(np.asarray(header.tensor_data(info)), info.ggml_type).reshape(info.shape),
            info.ggml_type,
        )
        for name, info in header.tensors.items()
    }


def test_load_gguf_qwen2_config(qwen_gguf: Path, cache_dir: Path) -> None:
    model = load_gguf(qwen_gguf, cache_dir=cache_dir)
    config = model.config

    assert model.architecture == "qwen2"
    assert config["hidden_size"] == 256
    assert config["num_layers"] == 2
    assert config["num_heads"] == 4
    assert config["num_kv_heads"] == 2
    assert config["head_dim"] == 64
    assert config["intermediate_size"] == 512
    assert config["vocab_size"] == model.weights["token_embd.weight"].shape[0]
    assert config["rope_theta"] == 1000000.0
    assert config["rms_norm_eps"] == pytest.approx(1e-6)
    assert config["context_length"] == 2048
    assert config["tied_embeddings"] is True
    assert config["attention_bias"] is True
    assert config["rope_traditional"] is False
    assert config["sliding_window"] == 0


def test_load_gguf_gemma3_config(gemma_gguf: Path, cache_dir: Path) -> None:
    config = load_gguf(gemma_gguf, cache_dir=cache_dir).config

    assert config["architecture"] == "gemma3"
    assert config["sliding_window"] == 512
    assert config["global_layers"] == [5]
    assert config["rope_theta_local"] == 10000.0
    assert config["embedding_scale"] == pytest.approx(math.sqrt(256))
    assert config["qk_norm"] is True
    assert config["hidden_activation"] == "gelu_tanh"
    assert config["query_pre_attn_scalar"] == 64.0


def test_load_gguf_llama_rotates_adjacent_pairs(
    tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path
) -> None:
    path = tmp_path / "tiny-llama.gguf"
    write_tiny_gguf(path, TinyModelSpec(architecture="llama", tied=False), byte_vocab)
    model = load_gguf(path, cache_dir=cache_dir)

    assert model.config["rope_traditional"] is True
    assert model.config["tied_embeddings"] is False
    assert model.config["attention_bias"] is False


def test_load_gguf_half_precision_matrices(tmp_path: Path, cache_dir: Path) -> None:
    rng = np.random.default_rng(7)
    values = rng.standard_normal((4, 64)).astype(np.float32)
    bfloat16 = (values.view(np.uint32) >> 16).astype(np.uint16)
    path = tmp_path / "halves.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_tensor("f16.weight", values.astype(np.float16))
    writer.add_tensor("bf16.weight", bfloat16.view(np.uint8), raw_dtype=Q.BF16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = read_gguf(path)

    f16 = convert_tensor(header, header.tensors["f16.weight"], "auto")
    bf16 = convert_tensor(header, header.tensors["bf16.weight"], "auto")
    assert isinstance(f16, mx.array)
    assert isinstance(bf16, mx.array)
    assert f16.dtype == mx.float32
    assert bf16.dtype == mx.float32
    assert np.array_equal(np.array(f16), values.astype(np.float16).astype(np.float32))
    assert np.array_equal(np.array(bf16), (bfloat16.astype(np.uint32) << 16).view(np.float32))


def test_load_gguf_weights_match_gguf_dequantize(qwen_gguf: Path, cache_dir: Path) -> None:
    model = load_gguf(qwen_gguf, policy="exact", cache_dir=cache_dir)
    reference = reference_weights(qwen_gguf)

    assert set(model.weights) == set(reference)
    for name, (expected, ggml_type) in reference.items():
        value = model.weights[name]
        if ggml_type in EXACT:
            assert isinstance(value, QuantizedTensor), name
            assert np.array_equal(dense(value), expected), name
        elif ggml_type == Q.Q6_K:
            assert isinstance(value, QuantizedTensor), name
            assert value.bits == 8
            assert value.group_size == 32
            span = expected.max() - expected.min()
            assert np.max(np.abs(dense(value) - expected)) <= span / 255, name
        else:
            assert isinstance(value, mx.array), name
            assert value.dtype == mx.float32, name
            assert np.array_equal(dense(value), expected), name
        assert tuple(value.shape) == expected.shape, name


def test_load_gguf_auto_rounds_groups_to_float16(
    qwen_gguf: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernels, "reads_half_groups", lambda: True)
    auto = load_gguf(qwen_gguf, policy="auto", cache_dir=cache_dir)
    exact = load_gguf(qwen_gguf, policy="exact", cache_dir=cache_dir)

    for name, value in auto.weights.items():
        if not isinstance(value, QuantizedTensor):
            continue
        reference = exact.weights[name]
        assert isinstance(reference, QuantizedTensor), name
        assert np.array_equal(np.array(value.weight), np.array(reference.weight)), name
        expected_scales, expected_biases = half_groups(
            np.array(reference.scales), np.array(reference.biases)
        )
        assert np.array(value.scales).dtype == expected_scales.dtype, name
        assert np.array_equal(np.array(value.scales), expected_scales), name
        assert np.array_equal(np.array(value.biases), expected_biases), name


def test_load_gguf_auto_without_half_kernel(
    qwen_gguf: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernels, "reads_half_groups", lambda: False)
    model = load_gguf(qwen_gguf, policy="auto", cache_dir=cache_dir)
    quantized = [w for w in model.weights.values() if isinstance(w, QuantizedTensor)]
    assert quantized
    assert all(w.scales.dtype == mx.float32 for w in quantized)
    assert model.policy == "exact"


def test_half_groups_in_range_become_float16() -> None:
    scales = np.array([[0.0, 2.0**-14, 0.02, -3.0]], dtype=np.float32)
    biases = np.array([[1e-7, -0.5, 0.0, 65504.0]], dtype=np.float32)
    half_scales, half_biases = half_groups(scales, biases)
    assert half_scales.dtype == np.float16
    assert half_biases.dtype == np.float16
    assert np.array_equal(half_scales, scales.astype(np.float16))


@pytest.mark.parametrize(
    ("scale", "bias"),
    [(2.0**-15, 0.0), (70000.0, 0.0), (np.inf, 0.0), (0.5, np.nan), (0.5, -70000.0)],
)
def test_half_groups_out_of_range_stay_float32(scale: float, bias: float) -> None:
    scales = np.array([[0.25, scale]], dtype=np.float32)
    biases = np.array([[0.0, bias]], dtype=np.float32)
    kept_scales, kept_biases = half_groups(scales, biases)
    assert kept_scales.dtype == np.float32
    assert kept_biases.dtype == np.float32


def test_load_gguf_float32_policy_q6_k(qwen_gguf: Path, cache_dir: Path) -> None:
    model = load_gguf(qwen_gguf, policy="float32", cache_dir=cache_dir)
    reference = reference_weights(qwen_gguf)

    q6_names = [name for name, (_, kind) in reference.items() if kind == Q.Q6_K]
    exact_names = [name for name, (_, kind) in reference.items() if kind in EXACT]
    assert q6_names
    assert exact_names
    for name in q6_names:
        assert isinstance(model.weights[name], mx.array)
        assert np.array_equal(dense(model.weights[name]), reference[name][0])
    for name in exact_names:
        assert isinstance(model.weights[name], QuantizedTensor)


def test_load_gguf_policy_float32_all_dequantizes_everything(
    qwen_gguf: Path, cache_dir: Path
) -> None:
    model = load_gguf(qwen_gguf, policy="float32-all", cache_dir=cache_dir)
    for name, (expected, _) in reference_weights(qwen_gguf).items():
        value = model.weights[name]
        assert isinstance(value, mx.array), name
        assert value.dtype == mx.float32, name
        assert np.array_equal(np.array(value), expected), name


def test_load_gguf_unknown_policy(qwen_gguf: Path, cache_dir: Path) -> None:
    with pytest.raises(ValueError, match="float32-all"):
        load_gguf(qwen_gguf, policy="int4", cache_dir=cache_dir)


def test_load_gguf_unknown_architecture(
    tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path
) -> None:
    path = tmp_path / "mamba.gguf"
    write_tiny_gguf(path, TinyModelSpec(architecture="mamba"), byte_vocab)
    with pytest.raises(UnsupportedArchitectureError, match="'mamba'") as caught:
        load_gguf(path, cache_dir=cache_dir)
    message = str(caught.value)
    assert "gemma3, llama, qwen2" in message
    assert str(path) in message


def test_load_gguf_unsupported_tensor_type(
    tmp_path: Path, byte_vocab: TinyVocab, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "q2k.gguf"
    # Q2_K blocks end with the float16 d and dmin.
    monkeypatch.setitem(HALF_FIELDS, Q.Q2_K, (80, 82))
    write_tiny_gguf(path, TinyModelSpec(matrix_types=(Q.Q2_K,)), byte_vocab)
    with pytest.raises(ModelFormatError, match="Q2_K") as caught:
        load_gguf(path, cache_dir=cache_dir)
    message = str(caught.value)
    assert "blk.0.attn_q.weight" in message
    assert str(path) in message
    assert "\n" not in message


def test_load_gguf_metadata_is_plain(qwen_gguf: Path, cache_dir: Path) -> None:
    model = load_gguf(qwen_gguf, cache_dir=cache_dir)

    assert model.metadata["general.architecture"] == "qwen2"
    assert model.metadata["qwen2.block_count"] == 2
    assert "tokenizer.ggml.tokens" not in model.metadata
    assert "tokenizer.chat_template" in model.metadata
    json.dumps(model.metadata)
    json.dumps(model.config)


def test_load_gguf_cache_hit_skips_conversion(
    qwen_gguf: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cold = load_gguf(qwen_gguf, cache_dir=cache_dir)

    def fail(*args: object) -> None:
        raise AssertionError("converted again despite a cache entry")

    monkeypatch.setattr(gguf_loader, "_convert", fail)
    cached = load_gguf(qwen_gguf, cache_dir=cache_dir)

    assert cached.source_sha256 == cold.source_sha256
    assert cached.metadata == cold.metadata
    assert cached.config == cold.config
    assert cached.tokenizer_json == cold.tokenizer_json
    assert set(cached.weights) == set(cold.weights)
    for name, value in cold.weights.items():
        other = cached.weights[name]
        assert type(other) is type(value), name
        assert np.array_equal(dense(other), dense(value)), name
        if isinstance(value, QuantizedTensor):
            assert isinstance(other, QuantizedTensor)
            assert (other.bits, other.group_size, other.shape) == (
                value.bits,
                value.group_size,
                value.shape,
            )


def test_load_gguf_cache_keyed_by_policy(qwen_gguf: Path, cache_dir: Path) -> None:
    load_gguf(qwen_gguf, policy="exact", cache_dir=cache_dir)
    load_gguf(qwen_gguf, policy="float32", cache_dir=cache_dir)
    entries = sorted(path.name for path in cache_dir.iterdir() if path.is_dir())
    assert len(entries) == 2
    assert entries[0].endswith(f"-exact-v{FORMAT_VERSION}")
    assert entries[1].endswith(f"-float32-v{FORMAT_VERSION}")


def test_load_gguf_memoizes_source_digest(qwen_gguf: Path, cache_dir: Path) -> None:
    first = load_gguf(qwen_gguf, cache_dir=cache_dir)
    memo = json.loads((cache_dir / DIGEST_MEMO).read_text())
    assert memo[str(qwen_gguf.resolve())]["sha256"] == first.source_sha256

    # A changed file (new size and mtime) is hashed and converted again.
    data = bytearray(qwen_gguf.read_bytes())
    data.extend(b"\0" * 32)
    qwen_gguf.write_bytes(bytes(data))
    os.utime(qwen_gguf, ns=(1, 1))
    second = load_gguf(qwen_gguf, cache_dir=cache_dir)
    assert second.source_sha256 != first.source_sha256


def test_load_gguf_damaged_cache_entry_is_replaced(qwen_gguf: Path, cache_dir: Path) -> None:
    cold = load_gguf(qwen_gguf, cache_dir=cache_dir)
    (weights_file,) = cache_dir.glob("*/weights.safetensors")
    weights_file.write_bytes(weights_file.read_bytes()[:1000])

    reloaded = load_gguf(qwen_gguf, cache_dir=cache_dir)
    name = "blk.0.attn_q.weight"
    assert np.array_equal(dense(reloaded.weights[name]), dense(cold.weights[name]))
    assert weights_file.stat().st_size > 1000


def test_load_gguf_unwritable_cache_still_loads(qwen_gguf: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    model = load_gguf(qwen_gguf, cache_dir=blocker / "converted")
    assert "token_embd.weight" in model.weights
    assert len(model.source_sha256) == 64


def test_load_gguf_default_cache_dir_uses_draftwise_home(
    qwen_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRAFTWISE_HOME", str(tmp_path / "home"))
    load_gguf(qwen_gguf)
    assert list((tmp_path / "home" / "converted").glob(f"*-v{FORMAT_VERSION}/model.json"))

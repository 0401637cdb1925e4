"""Tokenizers and weights of the real GGUF files, when they are available.

A model is found in the draftwise store (`draftwise pull NAME`), else under
$DRAFTWISE_TEST_MODELS by file name; otherwise its tests are skipped with
the reason.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import pytest
from gguf.quants import dequantize

from draftwise.runtime.errors import DraftwiseError
from draftwise.runtime.loading import LoadedModel, Tokenizer, load_gguf, load_tokenizer
from draftwise.runtime.loading.gguf_file import read_gguf
from draftwise.runtime.loading.gguf_vocab import build_gguf_tokenizer
from draftwise.runtime.loading.loaded_model import plain_metadata
from draftwise.runtime.weights import QuantizedTensor

# Catalogue name -> file name under $DRAFTWISE_TEST_MODELS.
MODELS = {
    "qwen2.5-coder:1.5b": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    "qwen2.5-coder:0.5b": "qwen2.5-coder-0.5b-instruct.gguf",
    "gemma3:270m": "gemma-3-270m-q4_k_m.gguf",
    "smollm2:135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
}
QWEN = ("qwen2.5-coder:1.5b", "qwen2.5-coder:0.5b")

TEXTS = [
    "def fib(n: int) -> int:\n\treturn n if n < 2 else fib(n - 1) + fib(n - 2)  \r\n",
    "print('héllo wörld')  # 你好，世界 😀🎉👩‍💻 e\u0301 café\u0301\n\n\n    x = 12345678\n",
    "class Foo:\n    def __init__(self):\n        self.x = {'a': [1, 2, 3]}\n",
    "日本語のテキスト and emoji 😀😃😄 mixed 123 ４５６ ①② ß ﬁ",
    "  leading spaces and trailing   \t\t\n\n\n\n tabs\tand\tmore I'll we've THEY'RE",
    "<|im_start|>user\nWrite a loop<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nhi there<end_of_turn>\n<start_of_turn>model\n",
    'fn main() { println!("{}", "🦀"); }\r\n// ∀x∈ℝ: x² ≥ 0\n',
    "",
    " ",
]

_paths: dict[str, Path] = {}
_tokenizers: dict[str, Tokenizer] = {}


def model_path(name: str) -> Path:
    """Return the GGUF file of ``name`` or skip the test saying how to get it."""
    if name in _paths:
        return _paths[name]
    try:
        from draftwise.runtime.store import resolve_model

        resolved = resolve_model(name)
        _paths[name] = Path(resolved.path)
        return _paths[name]
    except (DraftwiseError, ImportError):
        pass
    folder = os.environ.get("DRAFTWISE_TEST_MODELS")
    if folder and (Path(folder) / MODELS[name]).is_file():
        _paths[name] = Path(folder) / MODELS[name]
        return _paths[name]
    pytest.skip(
        f"real model {name} is not available: run `draftwise pull {name}` or set "
        f"DRAFTWISE_TEST_MODELS to a folder holding {MODELS[name]}"
    )


def header_only(path: Path) -> LoadedModel:
    """A LoadedModel without weights: enough for the tokenizer, and fast."""
    header = read_gguf(path)
    return LoadedModel(
        architecture=str(header.metadata["general.architecture"]),
        metadata=plain_metadata(header.metadata),
        config={},
        weights={},
        source_sha256="",
        path=path,
        policy="auto",
        tokenizer_json=build_gguf_tokenizer(header.metadata, path).to_str(),
    )


def real_tokenizer(name: str) -> Tokenizer:
    if name not in _tokenizers:
        _tokenizers[name] = load_tokenizer(header_only(model_path(name)))
    return _tokenizers[name]


@pytest.mark.parametrize("name", list(MODELS))
def test_real_tokenizer_round_trip(name: str) -> None:
    tokenizer = real_tokenizer(name)
    for text in TEXTS:
        token_ids = tokenizer.encode(text)
        assert tokenizer.decode(token_ids) == text
        decoder = tokenizer.incremental_decoder()
        pieces = [decoder.feed(token_id) for token_id in token_ids]
        assert "".join(pieces) + decoder.flush() == text
        assert all("\ufffd" not in piece for piece in pieces)


@pytest.mark.parametrize("name", list(MODELS))
def test_real_tokenizer_matches_llama_cpp(name: str) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    tokenizer = real_tokenizer(name)
    reference = llama_cpp.Llama(model_path=str(model_path(name)), vocab_only=True, verbose=False)
    for text in TEXTS:
        expected = reference.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        assert tokenizer.encode(text) == expected, text


@pytest.mark.parametrize("name", QWEN)
def test_real_qwen_tokenizer_facts(name: str) -> None:
    tokenizer = real_tokenizer(name)
    assert tokenizer.vocab_size == 151936
    assert tokenizer.encode("<|im_start|>") == [151644]
    assert tokenizer.encode("<|im_end|>") == [151645]
    assert len(tokenizer.encode("def")) == 1
    assert len(tokenizer.encode(" return")) == 1
    assert tokenizer.bos_token_id == 151643
    assert {151643, 151645} <= tokenizer.eos_token_ids
    assert tokenizer.encode("hi", add_special_tokens=True) == tokenizer.encode("hi")


def test_real_gemma_tokenizer_facts() -> None:
    tokenizer = real_tokenizer("gemma3:270m")
    assert tokenizer.vocab_size == 262144
    assert tokenizer.bos_token_id == 2
    assert tokenizer.encode("hi", add_special_tokens=True)[0] == 2
    assert tokenizer.token_to_id("<end_of_turn>") in tokenizer.eos_token_ids
    assert len(tokenizer.encode("<start_of_turn>")) == 1


@pytest.mark.parametrize("name", list(MODELS))
def test_real_chat_template_renders(name: str) -> None:
    tokenizer = real_tokenizer(name)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a loop"}], system="Be brief."
    )
    assert "Write a loop" in prompt
    assert "Be brief." in prompt
    token_ids = tokenizer.encode(prompt)
    assert tokenizer.decode(token_ids) == prompt


@pytest.mark.parametrize("name", list(MODELS))
def test_real_incremental_emoji_across_tokens(name: str) -> None:
    tokenizer = real_tokenizer(name)
    # A hieroglyph is rare enough to need several byte tokens in every vocabulary.
    text = "ok 🦀🚀 then 👩‍👩‍👧‍👦 and 𓀀 done"
    assert len(tokenizer.encode("𓀀")) > 1
    token_ids = tokenizer.encode(text)
    decoder = tokenizer.incremental_decoder()
    pieces = [decoder.feed(token_id) for token_id in token_ids]
    assert "".join(pieces) + decoder.flush() == text
    assert "" in pieces, "the hieroglyph's first byte tokens should yield no text"


EXPECTED_TYPES = {
    "qwen2.5-coder:1.5b": {"Q4_K": 169, "F32": 141, "Q6_K": 29},
    "qwen2.5-coder:0.5b": {"Q5_0": 133, "F32": 121, "Q8_0": 13, "Q6_K": 12, "Q4_K": 12},
    "gemma3:270m": {"F32": 109, "Q5_0": 81, "Q4_K": 27, "Q8_0": 10, "Q6_K": 9},
    "smollm2:135m": {"Q4_1": 210, "F32": 61, "Q8_0": 1},
}


@pytest.mark.parametrize("name", list(MODELS))
def test_real_gguf_tensor_types(name: str) -> None:
    header = read_gguf(model_path(name))
    counts = collections.Counter(info.ggml_type.name for info in header.tensors.values())
    assert dict(counts) == EXPECTED_TYPES[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2:135m", "gemma3:270m"])
def test_real_load_matches_gguf_dequantize(name: str, tmp_path: Path) -> None:
    path = model_path(name)
    cold = load_gguf(path, cache_dir=tmp_path)
    cached = load_gguf(path, cache_dir=tmp_path)
    header = read_gguf(path)

    assert cold.config["vocab_size"] == cold.weights["token_embd.weight"].shape[0]
    for tensor_name in ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight"]:
        info = header.tensors[tensor_name]
        expected = dequantize(np.asarray(header.tensor_data(info)), info.ggml_type)
        for model in (cold, cached):
            value = model.weights[tensor_name]
            assert isinstance(value, QuantizedTensor)
            actual = np.array(value.dequantize())
            if info.ggml_type.name == "Q6_K":
                span = float(expected.max() - expected.min())
                assert np.max(np.abs(actual - expected)) <= span / 255
            else:
                assert np.array_equal(actual, expected), tensor_name

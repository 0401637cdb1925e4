"""Fixtures of the loading tests: tiny GGUF files and a private converted-weights cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as Q
from loading_builders import (
    TinyModelSpec,
    TinyVocab,
    byte_level_vocab,
    sentencepiece_vocab,
    write_tiny_gguf,
)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "converted"


@pytest.fixture(scope="session")
def byte_vocab() -> TinyVocab:
    return byte_level_vocab()


@pytest.fixture(scope="session")
def spm_vocab() -> TinyVocab:
    return sentencepiece_vocab()


@pytest.fixture
def qwen_gguf(tmp_path: Path, byte_vocab: TinyVocab) -> Path:
    """A tiny qwen2 model with Q4_K, Q6_K, Q8_0 and Q5_0 matrices."""
    path = tmp_path / "tiny-qwen2.gguf"
    write_tiny_gguf(path, TinyModelSpec(), byte_vocab)
    return path


@pytest.fixture
def gemma_gguf(tmp_path: Path, spm_vocab: TinyVocab) -> Path:
    """A tiny gemma3 model with a SentencePiece vocabulary and no chat template."""
    path = tmp_path / "tiny-gemma3.gguf"
    spec = TinyModelSpec(
        architecture="gemma3",
        num_layers=7,
        num_kv_heads=1,
        matrix_types=(Q.Q5_0, Q.Q4_K, Q.Q6_K),
        embedding_type=Q.Q8_0,
        extra_metadata={"gemma3.attention.sliding_window": 512},
    )
    write_tiny_gguf(path, spec, spm_vocab, chat_template=None)
    return path

"""Small GGUF files, tokenizers and safetensors folders written by the loading tests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

Q = GGMLQuantizationType

# Byte offsets of the float16 fields (d, and dmin or m) inside one block.
HALF_FIELDS: dict[GGMLQuantizationType, tuple[int, ...]] = {
    Q.Q4_0: (0,),
    Q.Q4_1: (0, 2),
    Q.Q5_0: (0,),
    Q.Q5_1: (0, 2),
    Q.Q8_0: (0,),
    Q.Q4_K: (0, 2),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (208,),
}
# Types gguf 0.19 can quantize from float32 itself.
GGUF_QUANTIZABLE = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0)

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n\tprint(i)  \r\n",
    "class Point:\n    x: int = 0\n    y: int = 0\n",
    "héllo wörld café naïve — 你好 世界 😀🎉",
    "if x == 1 and y != 2: pass  # comment\n",
]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def random_blocks(
    ggml_type: GGMLQuantizationType, rows: int, columns: int, rng: np.random.Generator
) -> np.ndarray:
    """Return valid raw blocks [rows, row_bytes]: random bytes with sane float16 scales.

    Scales are signed and some are zero, so sign-of-zero and zero-scale
    cases occur.
    """
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    blocks = rng.integers(0, 256, size=(rows, columns // block_size, type_size), dtype=np.uint8)
    for offset in HALF_FIELDS[ggml_type]:
        halves = (rng.standard_normal((rows, columns // block_size)) * 0.01).astype(np.float16)
        halves[rng.random(halves.shape) < 0.05] = 0
        blocks[..., offset : offset + 2] = halves[..., None].view(np.uint8)
    return blocks.reshape(rows, -1)


def quantized_tensor(
    ggml_type: GGMLQuantizationType, rows: int, columns: int, rng: np.random.Generator
) -> np.ndarray:
    """Raw bytes of a [rows, columns] tensor: gguf's own quantizer where it has one."""
    if ggml_type in GGUF_QUANTIZABLE:
        values = rng.standard_normal((rows, columns)).astype(np.float32) * 0.05
        return gguf.quants.quantize(values, ggml_type)
    return random_blocks(ggml_type, rows, columns, rng)


@dataclass
class TinyVocab:
    """A vocabulary in GGUF form: tokens in id order, their types, merges, scores."""

    model: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    pre: str = "qwen2"
    bos_token_id: int = 0
    eos_token_id: int = 2
    add_bos_token: bool = False
    add_space_prefix: bool = False


def byte_level_vocab(pre: str = "qwen2", vocab_size: int = 420) -> TinyVocab:
    """Train a small byte-level BPE on CORPUS; the special tokens get ids 0-2."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    vocab = tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in merges]
    types = [3 if token in SPECIAL_TOKENS else 1 for token in tokens]
    return TinyVocab("gpt2", tokens, types, merges=merges, pre=pre, bos_token_id=0)


def sentencepiece_vocab() -> TinyVocab:
    """A Gemma-style vocabulary: control tokens, 256 byte tokens and scored pieces."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"]
    types = [3, 3, 3, 2]
    tokens += [f"<0x{byte:02X}>" for byte in range(256)]
    types += [6] * 256
    # Earlier pieces score higher, so they merge first.
    pieces = [
        "▁", "h", "e", "l", "o", "w", "r", "d", "t", "x", "a", "c",
        "he", "ll", "llo", "hello", "▁w", "or", "▁wor", "ld", "▁world",
        "▁t", "ex", "▁tex", "▁text", "ca", "caf",
    ]  # fmt: skip
    tokens += pieces
    types += [1] * len(pieces)
    tokens += ["<start_of_turn>", "<end_of_turn>", "\n", "\n\n"]
    types += [3, 3, 4, 4]
    scores = [-1000.0] * 260 + [-float(index) for index in range(len(pieces))] + [-1000.0] * 4
    return TinyVocab(
        "llama",
        tokens,
        types,
        scores=scores,
        pre="default",
        bos_token_id=2,
        eos_token_id=1,
        add_bos_token=True,
    )


def add_vocab(writer: gguf.GGUFWriter, vocab: TinyVocab, chat_template: str | None) -> None:
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    if vocab.scores:
        writer.add_token_scores(vocab.scores)
    writer.add_bos_token_id(vocab.bos_token_id)
    writer.add_eos_token_id(vocab.eos_token_id)
    writer.add_add_bos_token(vocab.add_bos_token)
    writer.add_bool("tokenizer.ggml.add_space_prefix", vocab.add_space_prefix)
    if chat_template is not None:
        writer.add_chat_template(chat_template)


@dataclass
class TinyModelSpec:
    """Hyper-parameters of a tiny model; K-quant rows need multiples of 256."""

    architecture: str = "qwen2"
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    matrix_types: Sequence[GGMLQuantizationType] = (Q.Q4_K, Q.Q6_K, Q.Q8_0, Q.Q5_0)
    embedding_type: GGMLQuantizationType = Q.Q4_K
    tied: bool = True
    extra_metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def write_tiny_gguf(
    path: Path,
    spec: TinyModelSpec,
    vocab: TinyVocab,
    *,
    chat_template: str | None = CHATML_TEMPLATE,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, GGMLQuantizationType]]:
    """Write a tiny model and return its tensors as (raw data, type) by name."""
    rng = np.random.default_rng(seed)
    arch = spec.architecture
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_uint32(f"{arch}.block_count", spec.num_layers)
    writer.add_uint32(f"{arch}.context_length", 2048)
    writer.add_uint32(f"{arch}.embedding_length", spec.hidden_size)
    writer.add_uint32(f"{arch}.feed_forward_length", spec.intermediate_size)
    writer.add_uint32(f"{arch}.attention.head_count", spec.num_heads)
    writer.add_uint32(f"{arch}.attention.head_count_kv", spec.num_kv_heads)
    writer.add_float32(f"{arch}.rope.freq_base", 1000000.0)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    for key, value in spec.extra_metadata.items():
        if isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, value)
    add_vocab(writer, vocab, chat_template)

    tensors = _tiny_tensors(spec, len(vocab.tokens), rng)
    for name, (data, ggml_type) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def _tiny_tensors(
    spec: TinyModelSpec, vocab_size: int, rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, GGMLQuantizationType]]:
    hidden, kv = spec.hidden_size, spec.num_kv_heads * spec.head_dim
    shapes = {
        "attn_q": (hidden, hidden),
        "attn_k": (kv, hidden),
        "attn_v": (kv, hidden),
        "attn_output": (hidden, hidden),
        "ffn_gate": (spec.intermediate_size, hidden),
        "ffn_up": (spec.intermediate_size, hidden),
        "ffn_down": (hidden, spec.intermediate_size),
    }
    tensors: dict[str, tuple[np.ndarray, GGMLQuantizationType]] = {}

    def dense(shape: tuple[int, ...], offset: float = 0.0) -> tuple[np.ndarray, Q]:
        values = rng.standard_normal(shape).astype(np.float32) * 0.1 + offset
        return values, Q.F32

    tensors["token_embd.weight"] = (
        quantized_tensor(spec.embedding_type, vocab_size, hidden, rng),
        spec.embedding_type,
    )
    for layer in range(spec.num_layers):
        for index, (name, (rows, columns)) in enumerate(shapes.items()):
            ggml_type = spec.matrix_types[(layer + index) % len(spec.matrix_types)]
            data = quantized_tensor(ggml_type, rows, columns, rng)
            tensors[f"blk.{layer}.{name}.weight"] = (data, ggml_type)
        tensors[f"blk.{layer}.attn_norm.weight"] = dense((hidden,), 1.0)
        tensors[f"blk.{layer}.ffn_norm.weight"] = dense((hidden,), 1.0)
        if spec.architecture == "qwen2":
            for name, (rows, _) in list(shapes.items())[:3]:
                tensors[f"blk.{layer}.{name}.bias"] = dense((rows,))
        if spec.architecture == "gemma3":
            for name in ("attn_q_norm", "attn_k_norm"):
                tensors[f"blk.{layer}.{name}.weight"] = dense((spec.head_dim,), 1.0)
            for name in ("post_attention_norm", "post_ffw_norm"):
                tensors[f"blk.{layer}.{name}.weight"] = dense((hidden,), 1.0)
    tensors["output_norm.weight"] = dense((hidden,), 1.0)
    if not spec.tied:
        values = rng.standard_normal((vocab_size, hidden)).astype(np.float16)
        tensors["output.weight"] = (values, Q.F16)
    return tensors


def tiny_tokenizer_json(vocab: TinyVocab) -> str:
    """Serialize the byte-level vocabulary the way a Hugging Face folder stores it."""
    from draftwise.runtime.loading.gguf_vocab import build_gguf_tokenizer

    metadata = {
        "tokenizer.ggml.model": vocab.model,
        "tokenizer.ggml.pre": vocab.pre,
        "tokenizer.ggml.tokens": vocab.tokens,
        "tokenizer.ggml.token_type": np.array(vocab.token_types),
        "tokenizer.ggml.merges": vocab.merges,
    }
    return build_gguf_tokenizer(metadata, Path("tiny")).to_str()

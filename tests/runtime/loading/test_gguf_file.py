"""The GGUF header parser and the errors for damaged or foreign files."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from draftwise.runtime.errors import DraftwiseError, ModelFormatError, ModelNotFoundError
from draftwise.runtime.loading import load_gguf
from draftwise.runtime.loading.gguf_file import read_gguf


def assert_one_line_with_fix(error: BaseException, path: Path) -> None:
    message = str(error)
    assert "\n" not in message
    assert str(path) in message


def test_read_gguf_matches_gguf_reader(qwen_gguf: Path) -> None:
    parsed = read_gguf(qwen_gguf)
    reference = gguf.GGUFReader(qwen_gguf)

    for key, field in reference.fields.items():
        if key.startswith("GGUF."):
            continue
        value = parsed.metadata[key]
        expected = field.contents()
        if isinstance(value, np.ndarray):
            value = value.tolist()
        assert value == expected, key
    assert list(parsed.tensors) == [tensor.name for tensor in reference.tensors]
    for tensor in reference.tensors:
        info = parsed.tensors[tensor.name]
        assert info.ggml_type == tensor.tensor_type
        assert info.file_offset == tensor.data_offset
        assert info.nbytes == tensor.n_bytes
        assert info.shape == tuple(int(size) for size in reversed(tensor.shape))
        expected_bytes = np.asarray(tensor.data).view(np.uint8).reshape(info.row_bytes_shape)
        assert np.array_equal(parsed.tensor_data(info), expected_bytes)


@pytest.mark.parametrize("keep_fraction", [0.999, 0.7, 0.3])
def test_load_gguf_truncated_file(qwen_gguf: Path, cache_dir: Path, keep_fraction: float) -> None:
    data = qwen_gguf.read_bytes()
    qwen_gguf.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(ModelFormatError, match="truncated") as caught:
        load_gguf(qwen_gguf, cache_dir=cache_dir)
    assert_one_line_with_fix(caught.value, qwen_gguf)
    assert "draftwise pull" in str(caught.value)


@pytest.mark.parametrize("keep_bytes", [30, 200, 4000])
def test_load_gguf_truncated_header(qwen_gguf: Path, cache_dir: Path, keep_bytes: int) -> None:
    qwen_gguf.write_bytes(qwen_gguf.read_bytes()[:keep_bytes])
    with pytest.raises(ModelFormatError, match="corrupt or truncated") as caught:
        load_gguf(qwen_gguf, cache_dir=cache_dir)
    assert_one_line_with_fix(caught.value, qwen_gguf)


def test_load_gguf_not_gguf(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("this is a text file, not a model\n" * 4)
    with pytest.raises(ModelFormatError, match="not a GGUF file") as caught:
        load_gguf(path, cache_dir=cache_dir)
    assert_one_line_with_fix(caught.value, path)


def test_load_gguf_empty_file(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="only 0 bytes"):
        load_gguf(path, cache_dir=cache_dir)


def test_load_gguf_missing_file(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_gguf(tmp_path / "absent.gguf", cache_dir=cache_dir)


def test_read_gguf_folder_path(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="load_safetensors_folder"):
        read_gguf(tmp_path)


def test_read_gguf_unsupported_version(qwen_gguf: Path) -> None:
    data = bytearray(qwen_gguf.read_bytes())
    data[4:8] = struct.pack("<I", 7)
    qwen_gguf.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="version 7"):
        read_gguf(qwen_gguf)


def test_read_gguf_big_endian(qwen_gguf: Path) -> None:
    data = bytearray(qwen_gguf.read_bytes())
    data[4:8] = struct.pack(">I", 3)
    qwen_gguf.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="big-endian"):
        read_gguf(qwen_gguf)


def test_read_gguf_unknown_value_type(qwen_gguf: Path) -> None:
    data = bytearray(qwen_gguf.read_bytes())
    # The first key starts at byte 24: an 8-byte length, the key, a 4-byte type.
    (key_length,) = struct.unpack_from("<Q", data, 24)
    data[32 + key_length : 36 + key_length] = struct.pack("<I", 99)
    qwen_gguf.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="unknown value type 99") as caught:
        read_gguf(qwen_gguf)
    assert_one_line_with_fix(caught.value, qwen_gguf)


def test_read_gguf_huge_string_length(qwen_gguf: Path) -> None:
    data = bytearray(qwen_gguf.read_bytes())
    data[24:32] = struct.pack("<Q", 1 << 60)
    qwen_gguf.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="past the end of the file"):
        read_gguf(qwen_gguf)


def test_read_gguf_implausible_counts(qwen_gguf: Path) -> None:
    data = bytearray(qwen_gguf.read_bytes())
    data[8:16] = struct.pack("<Q", 1 << 40)
    qwen_gguf.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="implausible counts"):
        read_gguf(qwen_gguf)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=4, max_value=9000), st.integers(1, 255)),
        min_size=1,
        max_size=6,
    )
)
def test_load_gguf_corrupt_header_raises_draftwise_errors(
    qwen_gguf: Path, tmp_path_factory: pytest.TempPathFactory, flips: list[tuple[int, int]]
) -> None:
    """Damaged header bytes give a DraftwiseError or a model, never a raw exception."""
    data = bytearray(qwen_gguf.read_bytes())
    for position, mask in flips:
        data[position % len(data)] ^= mask
    damaged = tmp_path_factory.mktemp("damaged") / "model.gguf"
    damaged.write_bytes(bytes(data))
    cache = tmp_path_factory.mktemp("cache")
    try:
        load_gguf(damaged, cache_dir=cache)
    except DraftwiseError as error:
        assert "\n" not in str(error)

"""Chat templates: rendering, the system argument, errors and the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from draftwise.runtime.errors import ChatTemplateError
from draftwise.runtime.loading import Tokenizer, load_gguf, load_tokenizer
from draftwise.runtime.loading.chat_template import render_chat_template

USER = [{"role": "user", "content": "Write a loop"}]


@pytest.fixture
def qwen_tokenizer(qwen_gguf: Path, cache_dir: Path) -> Tokenizer:
    return load_tokenizer(load_gguf(qwen_gguf, cache_dir=cache_dir))


def render(source: str, messages: list[dict[str, str]] | None = None) -> str:
    return render_chat_template(
        source, messages or USER, add_generation_prompt=True, bos_token="<s>", eos_token="</s>"
    )


def test_apply_chat_template_chatml(qwen_tokenizer: Tokenizer) -> None:
    prompt = qwen_tokenizer.apply_chat_template(USER)
    assert prompt == "<|im_start|>user\nWrite a loop<|im_end|>\n<|im_start|>assistant\n"


def test_apply_chat_template_without_generation_prompt(qwen_tokenizer: Tokenizer) -> None:
    prompt = qwen_tokenizer.apply_chat_template(USER, add_generation_prompt=False)
    assert prompt == "<|im_start|>user\nWrite a loop<|im_end|>\n"


def test_apply_chat_template_system_argument(qwen_tokenizer: Tokenizer) -> None:
    prompt = qwen_tokenizer.apply_chat_template(USER, system="Be brief.")
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")


def test_apply_chat_template_system_twice(qwen_tokenizer: Tokenizer) -> None:
    messages = [{"role": "system", "content": "A"}, *USER]
    with pytest.raises(ChatTemplateError, match="pass it once"):
        qwen_tokenizer.apply_chat_template(messages, system="B")


def test_apply_chat_template_prompt_encodes_special_ids(qwen_tokenizer: Tokenizer) -> None:
    token_ids = qwen_tokenizer.encode(qwen_tokenizer.apply_chat_template(USER))
    assert token_ids[0] == qwen_tokenizer.token_to_id("<|im_start|>")
    assert token_ids.count(qwen_tokenizer.token_to_id("<|im_end|>")) == 1


def test_apply_chat_template_gemma_fallback(gemma_gguf: Path, cache_dir: Path) -> None:
    tokenizer = load_tokenizer(load_gguf(gemma_gguf, cache_dir=cache_dir))
    prompt = tokenizer.apply_chat_template(USER, system="Be brief.")
    assert prompt == (
        "<bos><start_of_turn>user\nBe brief.\n\nWrite a loop<end_of_turn>\n<start_of_turn>model\n"
    )
    assistant = [*USER, {"role": "assistant", "content": "ok"}]
    assert "<start_of_turn>model\nok<end_of_turn>\n" in tokenizer.apply_chat_template(assistant)


def test_apply_chat_template_missing_template(qwen_gguf: Path, cache_dir: Path) -> None:
    model = load_gguf(qwen_gguf, cache_dir=cache_dir)
    del model.metadata["tokenizer.chat_template"]
    tokenizer = load_tokenizer(model)
    assert tokenizer.chat_template is None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        tokenizer.apply_chat_template(USER)


def test_render_chat_template_raise_exception() -> None:
    source = (
        "{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}"
    )
    with pytest.raises(ChatTemplateError, match="system first"):
        render(source)


def test_render_chat_template_sandbox_blocks_internals() -> None:
    with pytest.raises(ChatTemplateError):
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}")


def test_render_chat_template_is_immutable() -> None:
    with pytest.raises(ChatTemplateError):
        render("{% set _ = messages.append({'role': 'x'}) %}{{ messages | length }}")


def test_render_chat_template_invalid_jinja() -> None:
    with pytest.raises(ChatTemplateError, match="invalid Jinja"):
        render("{% for message in messages %}")


def test_render_chat_template_tojson_keeps_unicode() -> None:
    rendered = render("{{ messages[0] | tojson }}", [{"role": "user", "content": "héllo 你好"}])
    assert rendered == '{"role": "user", "content": "héllo 你好"}'


def test_render_chat_template_tools_and_tokens() -> None:
    rendered = render("{{ bos_token }}{% if tools is none %}no tools{% endif %}{{ eos_token }}")
    assert rendered == "<s>no tools</s>"

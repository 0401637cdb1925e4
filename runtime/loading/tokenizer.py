"""The tokenizer of a loaded model: encode, decode, chat template, stop tokens."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from tokenizers import Tokenizer as BackendTokenizer

from draftwise.runtime.errors import ChatTemplateError, ModelFormatError
from draftwise.runtime.loading.chat_template import fallback_template, render_chat_template
from draftwise.runtime.loading.incremental_decoder import (
    IncrementalDecoder,
    TokenBytes,
    token_bytes_from_backend,
)
from draftwise.runtime.loading.loaded_model import LoadedModel

# Special tokens that end a turn in the chat formats of the supported
# families; each counts as an end-of-sequence token when the vocabulary has
# it as a special token.
END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|eom_id|>",
)
# GGUF keys that hold end-of-sequence ids; "draftwise.eos_token_ids" is the
# list the safetensors folder loader reads from generation_config.json.
EOS_ID_KEYS = (
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
)
EXTRA_EOS_IDS_KEY = "draftwise.eos_token_ids"


class Tokenizer:
    """A `tokenizers.Tokenizer` with the special ids and chat template of one model.

    Special tokens written in the text (``<|im_start|>``) always encode to
    their ids. ``encode(add_special_tokens=True)`` adds BOS/EOS when the
    model's tokenizer asks for them; a rendered chat template usually holds
    its own BOS, so encode it with the default ``False``.
    """

    def __init__(
        self,
        backend: BackendTokenizer,
        *,
        bos_token_id: int | None,
        eos_token_id: int | None,
        eos_token_ids: frozenset[int],
        chat_template: str | None,
        name: str,
    ) -> None:
        self._backend = backend
        self.bos_token_id = bos_token_id
        # The model's own EOS (the template's eos_token); eos_token_ids adds
        # the end-of-turn tokens that also stop generation.
        self.eos_token_id = eos_token_id
        self.eos_token_ids = eos_token_ids
        self.chat_template = chat_template
        self.name = name

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        return int(self._backend.get_vocab_size(with_added_tokens=True))

    def token_to_id(self, token: str) -> int | None:
        token_id = self._backend.token_to_id(token)
        return None if token_id is None else int(token_id)

    def id_to_token(self, token_id: int) -> str | None:
        token = self._backend.id_to_token(token_id)
        return None if token is None else str(token)

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return str(self._backend.decode(list(token_ids), skip_special_tokens=skip_special_tokens))

    @functools.cached_property
    def token_bytes(self) -> TokenBytes:
        """The bytes of every token, built on first use (about a second for 262k tokens)."""
        return token_bytes_from_backend(self._backend)

    @functools.cached_property
    def special_token_ids(self) -> frozenset[int]:
        """Ids of the special (control) tokens, which ``skip_special_tokens`` drops."""
        return _special_ids(self._backend)

    def incremental_decoder(self, *, skip_special_tokens: bool = False) -> IncrementalDecoder:
        """Return a fresh `IncrementalDecoder` for one token stream."""
        return IncrementalDecoder(self.token_bytes, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        system: str | None = None,
    ) -> str:
        """Render ``messages`` (dicts with ``role`` and ``content``) as a prompt string.

        ``system`` becomes a leading system message. Raises `ChatTemplateError`
        when the model has no template, when ``system`` is given and the first
        message is already a system message, or when the template rejects the
        messages.
        """
        if self.chat_template is None:
            raise ChatTemplateError(
                f"model '{self.name}' has no chat template; format the prompt yourself and "
                "pass it as plain text"
            )
        conversation = list(messages)
        if system is not None:
            if conversation and conversation[0].get("role") == "system":
                raise ChatTemplateError(
                    "a system prompt was passed both as system= and as the first message; "
                    "pass it once"
                )
            conversation.insert(0, {"role": "system", "content": system})
        return str(
            render_chat_template(
                self.chat_template,
                conversation,
                add_generation_prompt=add_generation_prompt,
                bos_token=self._token_text(self.bos_token_id),
                eos_token=self._token_text(self.eos_token_id),
            )
        )

    def _token_text(self, token_id: int | None) -> str:
        if token_id is None:
            return ""
        token = self.id_to_token(token_id)
        return "" if token is None else token


def load_tokenizer(loaded: LoadedModel) -> Tokenizer:
    """Build the tokenizer of ``loaded`` from its own metadata.

    Raises `ModelFormatError` when the model carries no tokenizer or one whose
    decoder draftwise cannot stream.
    """
    if loaded.tokenizer_json is None:
        raise ModelFormatError(
            f"model '{loaded.path}' has no tokenizer; add its tokenizer.json to the folder"
        )
    backend = BackendTokenizer.from_str(loaded.tokenizer_json)
    metadata = loaded.metadata
    template = metadata.get("tokenizer.chat_template")
    if template is None:
        template = fallback_template(loaded.architecture, backend.token_to_id)
    bos = metadata.get("tokenizer.ggml.bos_token_id")
    eos = metadata.get("tokenizer.ggml.eos_token_id")
    return Tokenizer(
        backend,
        bos_token_id=None if bos is None else int(bos),
        eos_token_id=None if eos is None else int(eos),
        eos_token_ids=_eos_token_ids(metadata, backend),
        chat_template=None if template is None else str(template),
        name=str(loaded.path),
    )


def _special_ids(backend: BackendTokenizer) -> frozenset[int]:
    added = backend.get_added_tokens_decoder()
    return frozenset(token_id for token_id, token in added.items() if token.special)


def _eos_token_ids(metadata: Mapping[str, Any], backend: BackendTokenizer) -> frozenset[int]:
    ids = {int(metadata[key]) for key in EOS_ID_KEYS if metadata.get(key) is not None}
    ids.update(int(token_id) for token_id in metadata.get(EXTRA_EOS_IDS_KEY, []))
    special_ids = _special_ids(backend)
    for token in END_OF_TURN_TOKENS:
        token_id = backend.token_to_id(token)
        if token_id is not None and token_id in special_ids:
            ids.add(int(token_id))
    return frozenset(ids)

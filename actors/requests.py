"""Turn a `GenerateRequest` into a `RequestPlan`, refusing bad input before any model work."""

from __future__ import annotations

from typing import Any

import msgspec

from draftwise.actors.runtime_errors import RuntimeRequestError
from draftwise.actors.session import RequestPlan
from draftwise.protocol import ErrorCode, GenerateRequest, ModelInfo
from draftwise.runtime.errors import DraftwiseError
from draftwise.runtime.generate import GenerationParams
from draftwise.runtime.language_model import LanguageModel
from draftwise.runtime.sampling import SamplingParams

DRAFTER_NAMES = ("auto", "draft_model", "ngram")


class RequestPlanner:
    """Validate requests against the loaded models and tokenize their prompts."""

    def __init__(self, config: Any, target: LanguageModel, draft: LanguageModel | None) -> None:
        self.config = config
        self.target = target
        self.draft = draft

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.target.name:
            raise RuntimeRequestError(
                ErrorCode.UNKNOWN_MODEL,
                f"model '{model}' is not loaded; this runtime serves '{self.target.name}' "
                "(omit model to use it)",
            )

    def plan(self, request: GenerateRequest, reuse_prefix: bool) -> RequestPlan:
        request = _validated(request)
        self.check_model(request.model)
        drafter = self._drafter_name(request.draft)
        prompt_ids = self._prompt_ids(request)
        context = int(self.target.model.config.context_length)
        if len(prompt_ids) >= context:
            raise RuntimeRequestError(
                ErrorCode.INVALID_REQUEST,
                f"the prompt has {len(prompt_ids)} tokens but model '{self.target.name}' has a "
                f"context of {context}; shorten the prompt",
            )
        try:
            sampling = SamplingParams(
                request.sampling.temperature,
                request.sampling.top_k,
                request.sampling.top_p,
                request.sampling.seed,
            )
        except DraftwiseError as error:
            raise RuntimeRequestError(ErrorCode.INVALID_REQUEST, str(error)) from error
        speculation = request.speculation
        if speculation == 0:
            speculation = "off"
        return RequestPlan(
            request_id=request.request_id,
            session_id=request.session_id,
            prompt_ids=prompt_ids,
            params=GenerationParams(sampling, request.max_tokens, tuple(request.stop)),
            speculation=speculation,
            drafter=drafter,
            stream=request.stream,
            reuse_prefix=reuse_prefix,
        )

    def _drafter_name(self, draft: str | None) -> str:
        if draft is None:
            name = self.config.drafter
        elif draft in DRAFTER_NAMES:
            name = draft
        elif self.draft is not None and draft == self.draft.name:
            name = "draft_model"
        else:
            loaded = "none" if self.draft is None else f"'{self.draft.name}'"
            raise RuntimeRequestError(
                ErrorCode.UNKNOWN_MODEL,
                f"draft '{draft}' is not loaded (draft model: {loaded}); name the loaded draft "
                f"model or a drafter ({', '.join(DRAFTER_NAMES)}), or omit draft",
            )
        if name == "draft_model" and self.draft is None:
            raise RuntimeRequestError(
                ErrorCode.UNKNOWN_MODEL,
                "draft 'draft_model' needs a draft model, and this runtime has none; "
                "use 'ngram' or load one with RuntimeConfig.draft",
            )
        return str(name)

    def _prompt_ids(self, request: GenerateRequest) -> list[int]:
        if request.messages is not None:
            messages = [{"role": m.role, "content": m.content} for m in request.messages]
            try:
                prompt_ids = self.target.encode_messages(messages)
            except DraftwiseError as error:
                raise RuntimeRequestError(ErrorCode.INVALID_REQUEST, str(error)) from error
        else:
            assert request.prompt is not None
            prompt_ids = self.encode(request.prompt)
        if not prompt_ids:
            raise RuntimeRequestError(
                ErrorCode.INVALID_REQUEST, "the prompt encodes to no tokens; send some text"
            )
        return list(prompt_ids)

    def encode(self, text: str, model: str | None = None) -> list[int]:
        """Tokenize ``text`` as a prompt: special tokens written in it map to their ids."""
        self.check_model(model)
        tokenizer: Any = self.target.tokenizer
        try:
            return list(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:  # a tokenizer without the keyword (test fakes)
            return list(tokenizer.encode(text))

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None,
        model: str | None,
    ) -> str:
        self.check_model(model)
        tokenizer: Any = self.target.tokenizer
        source = getattr(tokenizer, "chat_template", None)
        if source is None:
            raise RuntimeRequestError(
                ErrorCode.INVALID_REQUEST,
                f"model '{self.target.name}' has no chat template; send a raw prompt instead",
            )
        from draftwise.runtime.loading.chat_template import compile_template

        def token_text(token_id: int | None) -> str:
            text = None if token_id is None else tokenizer.id_to_token(token_id)
            return "" if text is None else str(text)

        try:
            return str(
                compile_template(source).render(
                    messages=[dict(m) for m in messages],
                    tools=tools,
                    add_generation_prompt=True,
                    bos_token=token_text(getattr(tokenizer, "bos_token_id", None)),
                    eos_token=token_text(getattr(tokenizer, "eos_token_id", None)),
                )
            )
        except DraftwiseError as error:
            raise RuntimeRequestError(ErrorCode.INVALID_REQUEST, str(error)) from error
        except Exception as error:  # the template raised or used a missing field
            raise RuntimeRequestError(
                ErrorCode.INVALID_REQUEST,
                f"the chat template of '{self.target.name}' rejected the messages: {error}",
            ) from error

    def model_infos(self) -> list[ModelInfo]:
        infos = [_info(self.target, "target", None if self.draft is None else self.draft.name)]
        if self.draft is not None:
            infos.append(_info(self.draft, "draft", None))
        return infos


def _info(lm: LanguageModel, role: str, default_draft: str | None) -> ModelInfo:
    config = lm.model.config
    return ModelInfo(
        name=lm.name,
        role=role,  # type: ignore[arg-type]
        architecture=str(config.architecture),
        context_length=int(config.context_length),
        vocab_size=int(config.vocab_size),
        default_draft=default_draft,
    )


def _validated(request: GenerateRequest) -> GenerateRequest:
    """Check the field constraints, which constructing a Struct in Python does not."""
    try:
        return msgspec.convert(msgspec.to_builtins(request), type=GenerateRequest)
    except (msgspec.ValidationError, ValueError) as error:
        raise RuntimeRequestError(
            ErrorCode.INVALID_REQUEST, f"generate request is invalid: {error}"
        ) from error

"""Render a model's Jinja chat template in a sandbox.

Templates run in jinja2's `ImmutableSandboxedEnvironment` with the names
Hugging Face-style templates expect: ``messages``, ``add_generation_prompt``,
``bos_token``, ``eos_token``, ``tools`` (None), ``raise_exception``,
``strftime_now`` and the ``tojson`` filter.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from draftwise.runtime.errors import ChatTemplateError

# Gemma 3 turn format, for GGUF files that carry no template (the pretrained
# Gemma 3 270M file has none). Gemma has no system role: a system message is
# prepended to the first user turn.
GEMMA_TEMPLATE = """\
{{- bos_token -}}
{%- set ns = namespace(system='') -%}
{%- if messages and messages[0]['role'] == 'system' -%}
  {%- set ns.system = messages[0]['content'] + '\n\n' -%}
  {%- set messages = messages[1:] -%}
{%- endif -%}
{%- for message in messages -%}
  {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
  {{- '<start_of_turn>' + role + '\n' -}}
  {{- (ns.system if loop.first else '') + message['content'] | trim -}}
  {{- '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<start_of_turn>model\n' -}}
{%- endif -%}
"""


def fallback_template(architecture: str, token_to_id: Callable[[str], int | None]) -> str | None:
    """Return a built-in template for a model family whose file carries none."""
    if architecture == "gemma3" and token_to_id("<start_of_turn>") is not None:
        return GEMMA_TEMPLATE
    return None


def _raise_exception(message: str) -> NoReturn:
    raise ChatTemplateError(f"the chat template rejected the messages: {message}")


def _strftime_now(pattern: str) -> str:
    return datetime.now().strftime(pattern)


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@functools.lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    """Compile ``source`` once; raises ChatTemplateError for invalid Jinja."""
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    try:
        return environment.from_string(source)
    except jinja2.TemplateSyntaxError as error:
        raise ChatTemplateError(
            f"the model's chat template is invalid Jinja (line {error.lineno}: {error.message})"
        ) from error


def render_chat_template(
    source: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool,
    bos_token: str,
    eos_token: str,
) -> str:
    """Render ``messages`` with the template ``source``.

    Raises `ChatTemplateError` when the template raises or fails to render.
    """
    template = compile_template(source)
    try:
        return template.render(
            messages=[dict(message) for message in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            tools=None,
        )
    except ChatTemplateError:
        raise
    except (jinja2.TemplateError, TypeError) as error:
        raise ChatTemplateError(f"the chat template failed to render: {error}") from error

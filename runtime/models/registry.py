"""Build a model object from GGUF metadata and weights, by architecture name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from draftwise.runtime.errors import ModelFormatError, UnsupportedArchitectureError
from draftwise.runtime.models import gemma3, llama, qwen2
from draftwise.runtime.models.layers import Weight
from draftwise.runtime.models.transformer import Transformer

Builder = Callable[[Mapping[str, Any], dict[str, Weight], str], Transformer]

BUILDERS: dict[str, Builder] = {
    "qwen2": qwen2.build,
    "llama": llama.build,
    "gemma3": gemma3.build,
}


def build_model(
    architecture: str, metadata: Mapping[str, Any], weights: dict[str, Weight], name: str
) -> Transformer:
    """Return the model for ``architecture``, or raise naming the supported ones."""
    builder = BUILDERS.get(architecture)
    if builder is None:
        supported = ", ".join(sorted(BUILDERS))
        raise UnsupportedArchitectureError(
            f"model '{name}' has architecture '{architecture}', which draftwise does not "
            f"implement; supported architectures: {supported}"
        )
    try:
        return builder(metadata, weights, name)
    except KeyError as error:
        raise ModelFormatError(
            f"model '{name}' lacks the metadata key {error}; the file is incomplete or was "
            "written by an unsupported converter"
        ) from error

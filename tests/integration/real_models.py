"""Load the real models from the model store, or skip saying how to get them."""

from __future__ import annotations

import pytest

from draftwise.runtime.errors import ModelNotFoundError

TARGET = "qwen2.5-coder:1.5b"
DRAFT = "qwen2.5-coder:0.5b"

_loaded: dict[str, object] = {}


def load_or_skip(name: str):
    """Return the loaded model ``name`` (cached for the session) or skip the test."""
    from draftwise.runtime.language_model import load_language_model

    if name not in _loaded:
        try:
            _loaded[name] = load_language_model(name)
        except ModelNotFoundError as error:
            pytest.skip(
                f"real model {name} is not in the store ({error}); run `draftwise pull {name}`"
            )
    return _loaded[name]

"""The living system: the embedded runtime, its actors, the server and the command line.

`Runtime`, `RuntimeConfig`, `RuntimeRequestError` and `SyncRuntime` load on
first access, so importing this package (as the command line does) loads
neither MLX nor trio.
"""

from __future__ import annotations

from typing import Any

_RUNTIME_NAMES = ("Runtime", "RuntimeConfig", "RuntimeRequestError", "SyncRuntime")

__all__ = list(_RUNTIME_NAMES)


def __getattr__(name: str) -> Any:
    if name in _RUNTIME_NAMES:
        from draftwise.actors import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

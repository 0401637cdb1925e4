"""The base Struct of every wire message and the constrained field types they share."""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec
from msgspec import Meta

PROTOCOL_VERSION: Final = 1
"""Version this package speaks. Adding, removing or retyping a field bumps it,
because both ends reject fields they do not know."""

MAX_ID_CHARS: Final = 64

RequestId = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)]
"""Client-chosen id, unique among the requests in flight on one connection."""

SessionId = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)]
"""Server-side conversation whose KV cache persists between generate requests."""

Name = Annotated[str, Meta(min_length=1, max_length=256)]
"""Model, drafter, client or server name."""

Count = Annotated[int, Meta(ge=0)]
"""Non-negative count of tokens, rounds, bytes or requests."""

Seconds = Annotated[float, Meta(ge=0)]

Rate = Annotated[float, Meta(ge=0, le=1)]
"""Fraction in [0, 1], such as an acceptance rate."""

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_case_tag(class_name: str) -> str:
    """Return the `type` tag of a message class: `GenerateRequest` -> `generate_request`."""
    return _CAMEL_BOUNDARY.sub("_", class_name).lower()


class WireMessage(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="type",
    tag=snake_case_tag,
):
    """Base of every request and reply.

    Each subclass is encoded as a msgpack map with a `type` key that contains the
    snake_case class name. Unknown fields are rejected so that a misspelled
    optional field fails loudly instead of being ignored.
    """


class WireStruct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of the untagged structs nested inside messages."""

"""Gateway errors and their JSON bodies in the OpenAI and Anthropic shapes.

Handlers raise `ApiError` with an HTTP status; the route that caught it
renders the body in its own API's shape. Runtime failures arrive as
`DraftwiseError`s with a protocol error `code` and are mapped by
`from_runtime_error`.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import msgspec

from draftwise.runtime.errors import DraftwiseError

ApiFlavor = Literal["openai", "anthropic"]
BodyT = TypeVar("BodyT")

# Runtime (protocol ErrorCode) values to HTTP statuses.
_STATUS_BY_CODE = {
    "invalid_request": 400,
    "unknown_model": 404,
    "unknown_session": 404,
    "overloaded": 503,
    "internal": 500,
}

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    500: "server_error",
    503: "server_overloaded",
}

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    500: "api_error",
    503: "overloaded_error",
}


class ApiError(Exception):
    """A request the gateway rejects, with the HTTP status and the field at fault."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def unsupported(field: str, value: Any, fix: str) -> ApiError:
    """Reject a request feature the gateway does not implement, naming it."""
    return ApiError(
        400,
        f"'{field}'={value!r} is not supported by draftwise; {fix}",
        param=field,
        code="unsupported_parameter",
    )


def from_runtime_error(error: DraftwiseError) -> ApiError:
    """Map a runtime error with a protocol `code` (RuntimeRequestError) to an `ApiError`."""
    code = getattr(error, "code", "internal")
    message = getattr(error, "message", None) or str(error)
    return ApiError(_STATUS_BY_CODE.get(str(code), 500), message, code=str(code))


def _param_of(text: str) -> str | None:
    """Return the body field a msgspec validation message names, as a dotted path.

    msgspec writes "... - at `$.a.b`" for an invalid field and "Object missing
    required field `c`" (with "- at `$.a`" when nested) for a missing one.
    """
    path = text.rsplit("at `$.", 1)[1].rstrip("`") if "at `$." in text else None
    prefix = "Object missing required field `"
    if text.startswith(prefix):
        missing = text[len(prefix) :].split("`", 1)[0]
        return f"{path}.{missing}" if path else missing
    return path


def decode_body(raw: bytes, body_type: type[BodyT]) -> BodyT:
    """Decode a JSON request body into ``body_type``; invalid input raises `ApiError` 400."""
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON object")
    try:
        return msgspec.json.decode(raw, type=body_type)
    except msgspec.ValidationError as error:
        text = str(error)
        raise ApiError(400, f"invalid request body: {text}", param=_param_of(text)) from error
    except msgspec.DecodeError as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}") from error


def error_body(error: ApiError, flavor: ApiFlavor) -> dict[str, Any]:
    if flavor == "anthropic":
        return {
            "type": "error",
            "error": {
                "type": _ANTHROPIC_TYPES.get(error.status, "api_error"),
                "message": error.message,
            },
        }
    return {
        "error": {
            "message": error.message,
            "type": _OPENAI_TYPES.get(error.status, "server_error"),
            "param": error.param,
            "code": error.code,
        }
    }

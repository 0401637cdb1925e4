"""The error the embedded runtime raises for one request."""

from __future__ import annotations

from draftwise.runtime.errors import DraftwiseError


class RuntimeRequestError(DraftwiseError):
    """A request the runtime refused or could not finish.

    ``code`` is a `draftwise.protocol.ErrorCode` value (invalid_request,
    unknown_model, unknown_session, overloaded or internal), so a server
    forwards it unchanged; ``message`` names the value and the fix.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message

    def __repr__(self) -> str:
        return f"RuntimeRequestError(code={self.code!r}, message={self.message!r})"

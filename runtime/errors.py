"""Domain exceptions of the runtime package.

Every message names the value that failed and what to do about it.
"""


class DraftwiseError(Exception):
    """Base class of every error draftwise raises on purpose."""


class ModelNotFoundError(DraftwiseError):
    """A model name or path that resolves to nothing."""


class _OneLineError(DraftwiseError):
    """An error whose message quotes another library's error, joined into one line.

    Parser and template engine errors may span lines, and logs and protocol
    error replies expect one line.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))


class ModelFormatError(_OneLineError):
    """A model file that is corrupt, truncated or of an unsupported kind."""


class UnsupportedArchitectureError(ModelFormatError):
    """A model file whose architecture draftwise does not implement."""


class StoreError(DraftwiseError):
    """A model store operation that failed (pull, assemble, verify, remove)."""


class TokenizerMismatchError(DraftwiseError):
    """A draft model whose tokenizer differs from the target's."""


class RollbackError(DraftwiseError):
    """A cache that could not be rewound as far as requested."""


class GenerationError(DraftwiseError):
    """Invalid generation parameters, such as a negative temperature."""


class ChatTemplateError(_OneLineError):
    """A chat template that is missing, invalid, or rejects the messages."""

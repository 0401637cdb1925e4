"""Domain exceptions of the runtime package.

Every message names the value that failed and what to do about it.
"""


class DraftwiseError(Exception):
    """Base class of every error draftwise raises on purpose."""


class ModelNotFoundError(DraftwiseError):
    """A model name or path that resolves to nothing."""


class ModelFormatError(DraftwiseError):
    """A model file that is corrupt, truncated or of an unsupported kind."""

    def __init__(self, message: str) -> None:
        # Parser errors quoted in the message may span lines; logs and
        # protocol errors expect one line.
        super().__init__(" ".join(message.splitlines()))


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


class ChatTemplateError(DraftwiseError):
    """A chat template that is missing, invalid, or rejects the messages."""

    def __init__(self, message: str) -> None:
        # Template engine errors quoted in the message may span lines.
        super().__init__(" ".join(message.splitlines()))

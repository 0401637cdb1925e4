"""KV caches with rollback points for speculative decoding.

A cache stores keys and values for positions ``0 .. kv_offset - 1``.
`ModelCache.checkpoint()` records a rollback point before a proposal.
`ModelCache.rollback(to)` rewinds every layer to it by moving the offset
back, so nothing before the rollback point is recomputed or copied.
"""

from __future__ import annotations

import mlx.core as mx

from draftwise.runtime.errors import RollbackError

# Buffers grow in steps of this many positions, so appending one token
# rarely reallocates.
GROWTH_STEP = 256


class LayerCache:
    """Keys and values of one attention layer, ``[kv_heads, positions, head_dim]``.

    A sliding-window layer (``window > 0``) drops positions older than
    ``window + max_rollback`` behind the newest one: enough for every row
    that may still be rolled back to see its whole window.
    """

    def __init__(self, window: int = 0, max_rollback: int = 0) -> None:
        self.window = window
        self.max_rollback = max_rollback
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.start = 0  # absolute position of buffer index 0
        self.offset = 0  # positions stored: the kv_offset

    def append(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array, int]:
        """Store new rows and return ``(keys, values, key_start)`` for attention.

        The returned arrays hold positions ``key_start .. offset - 1``, new rows included.
        """
        num_new = keys.shape[1]
        self._reserve(num_new, keys)
        assert self.keys is not None and self.values is not None
        index = self.offset - self.start
        self.keys[:, index : index + num_new, :] = keys
        self.values[:, index : index + num_new, :] = values
        self.offset += num_new
        used = self.offset - self.start
        return self.keys[:, :used, :], self.values[:, :used, :], self.start

    def _reserve(self, num_new: int, like: mx.array) -> None:
        if self.window > 0:
            self._drop_old_positions()
        used = self.offset - self.start
        capacity = 0 if self.keys is None else self.keys.shape[1]
        if used + num_new <= capacity:
            return
        new_capacity = ((used + num_new + GROWTH_STEP - 1) // GROWTH_STEP) * GROWTH_STEP
        kv_heads, _, head_dim = like.shape
        keys = mx.zeros((kv_heads, new_capacity, head_dim), dtype=like.dtype)
        values = mx.zeros((kv_heads, new_capacity, head_dim), dtype=like.dtype)
        if self.keys is not None and self.values is not None and used > 0:
            keys[:, :used, :] = self.keys[:, :used, :]
            values[:, :used, :] = self.values[:, :used, :]
        self.keys, self.values = keys, values

    def _drop_old_positions(self) -> None:
        keep = self.window + self.max_rollback
        excess = (self.offset - self.start) - keep
        if excess < GROWTH_STEP or self.keys is None or self.values is None:
            return
        self.keys = self.keys[:, excess:, :]
        self.values = self.values[:, excess:, :]
        self.start += excess

    def earliest_rollback(self) -> int:
        """Return the smallest offset this layer can be rewound to."""
        if self.window == 0 or self.start == 0:
            return 0
        return self.start + self.window - 1

    def trim(self, num_positions: int) -> int:
        """Drop the newest ``num_positions`` and return how many were dropped."""
        removed = min(num_positions, self.offset - self.earliest_rollback())
        removed = max(removed, 0)
        self.offset -= removed
        return removed

    @property
    def nbytes(self) -> int:
        if self.keys is None or self.values is None:
            return 0
        return self.keys.nbytes + self.values.nbytes

    def snapshot(self) -> LayerCache:
        """Return an independent cache with the same contents, sharing buffers until written."""
        copy = LayerCache(self.window, self.max_rollback)
        if self.keys is not None and self.values is not None:
            # New array objects: a later in-place update of this cache
            # rebinds its own objects and leaves these untouched.
            copy.keys = self.keys[:, :, :]
            copy.values = self.values[:, :, :]
        copy.start = self.start
        copy.offset = self.offset
        return copy

    def state(self) -> list[mx.array]:
        return [a for a in (self.keys, self.values) if a is not None]


class ModelCache:
    """The caches of every layer of one model for one sequence."""

    def __init__(self, layers: list[LayerCache]) -> None:
        self.layers = layers

    @property
    def kv_offset(self) -> int:
        return self.layers[0].offset if self.layers else 0

    def checkpoint(self) -> int:
        """Record a rollback point: the current ``kv_offset``."""
        return self.kv_offset

    def rollback(self, to: int) -> int:
        """Rewind every layer to ``kv_offset == to``; return the positions removed.

        Raises RollbackError, leaving the cache unchanged, when ``to`` lies
        beyond the current offset or before what a sliding-window layer still
        keeps. A drafter's caller then stops speculating for that sequence.
        """
        current = self.kv_offset
        if to > current or to < 0:
            raise RollbackError(
                f"cannot roll back to kv_offset {to}: the cache contains {current} positions"
            )
        earliest = max((layer.earliest_rollback() for layer in self.layers), default=0)
        if to < earliest:
            raise RollbackError(
                f"cannot roll back to kv_offset {to}: sliding-window layers keep positions "
                f"from {earliest} on; raise max_rollback when creating the cache"
            )
        removed = {layer.trim(current - to) for layer in self.layers}
        assert removed == {current - to}, f"layers trimmed unevenly: {removed}"
        return current - to

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)

    def snapshot(self) -> ModelCache:
        """Return an independent copy (cheap: buffers are shared until written)."""
        return ModelCache([layer.snapshot() for layer in self.layers])

    def state(self) -> list[mx.array]:
        """Return every buffer, for `mx.eval` after a lazy update."""
        return [a for layer in self.layers for a in layer.state()]

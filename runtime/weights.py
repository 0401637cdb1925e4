"""Weight containers shared by the loaders, the kernels and the models."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx


@dataclass(frozen=True)
class QuantizedTensor:
    """A 2-D weight in MLX's affine quantized layout, as `mx.quantize` returns it.

    Element ``(row, col)`` dequantizes to ``scales[row, g] * q + biases[row, g]``
    with ``g = col // group_size`` and ``q`` the unsigned ``bits``-wide integer
    packed into ``weight``. ``shape`` is the logical ``(out_features,
    in_features)`` shape; ``weight`` is uint32 ``[out, in * bits / 32]``,
    ``scales`` and ``biases`` are ``[out, in / group_size]``, both float32 or
    both float16; arithmetic on them always runs in float32.
    """

    weight: mx.array
    scales: mx.array
    biases: mx.array
    bits: int
    group_size: int
    shape: tuple[int, int]

    def dequantize(self) -> mx.array:
        """Return the float32 matrix ``[out, in]``."""
        return dequantize_float32(self.weight, self.scales, self.biases, self.group_size, self.bits)

    @property
    def nbytes(self) -> int:
        return self.weight.nbytes + self.scales.nbytes + self.biases.nbytes


def dequantize_float32(
    weight: mx.array, scales: mx.array, biases: mx.array, group_size: int, bits: int
) -> mx.array:
    """Return ``mx.dequantize`` computed in float32, also for float16 scales and biases.

    ``mx.dequantize`` returns the scales' dtype (MLX 0.32), so float16 scales
    would round every weight to float16. Widening them first, which is exact,
    keeps float32 weights.
    """
    return mx.dequantize(
        weight,
        scales.astype(mx.float32),
        biases.astype(mx.float32),
        group_size=group_size,
        bits=bits,
    )


# A model's weights keyed by GGUF tensor name ("blk.0.attn_q.weight", ...):
# float arrays for norms, biases and unquantized matrices, QuantizedTensor for
# quantized matrices.
WeightDict = dict[str, "mx.array | QuantizedTensor"]

// RMS normalisation and rotary position embedding as one MLX operation each.
//
// On the CPU, mx.fast.rms_norm and mx.fast.rope expand into their reference
// graphs. With them a one-row step of a 28-layer model built 3,232 MLX nodes,
// and with the operations here 982.
// Every output row depends only on its own input row (and, for rope, its
// position), through the same float operations whatever the row count, so
// both keep the verify pass's rows bit-identical to single-row steps.
#pragma once

#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace draftwise {

namespace mx = mlx::core;

// x: float32 [rows, d] or [a, rows, d], any strides; weight: float32 [d].
// Returns float32 x * rsqrt(mean(x^2) + eps) * weight, same shape,
// contiguous. The mean sums squares in double, in index order.
// Throws std::invalid_argument naming the offending value.
mx::array rms_norm_rows(const mx::array& x, const mx::array& weight, float eps,
                        mx::StreamOrDevice s = {});

// x: float32 [a, rows, d] (d even), any strides. Rotates row i
// as position offset + i, as mx.fast.rope(x, d, traditional, base, scale,
// offset) does: pairs (j, j + d/2), or (2j, 2j + 1) when traditional, by the
// angle (offset + i) * scale * base^(-2j/d). Angles, cosines and sines are
// computed in double and rounded to float once. Returns a contiguous array.
mx::array rope_rows(const mx::array& x, int offset, float base, float scale, bool traditional,
                    mx::StreamOrDevice s = {});

class RmsNormRows : public mx::UnaryPrimitive {
 public:
  RmsNormRows(mx::Stream stream, float eps) : mx::UnaryPrimitive(stream), eps_(eps) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  const char* name() const override { return "DraftwiseRmsNormRows"; }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;

 private:
  float eps_;
};

class RopeRows : public mx::UnaryPrimitive {
 public:
  RopeRows(mx::Stream stream, int offset, float base, float scale, bool traditional)
      : mx::UnaryPrimitive(stream),
        offset_(offset),
        base_(base),
        scale_(scale),
        traditional_(traditional) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  const char* name() const override { return "DraftwiseRopeRows"; }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;

 private:
  int offset_;
  float base_;
  float scale_;
  bool traditional_;
};

}  // namespace draftwise

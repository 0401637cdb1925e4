// The gated MLP's activation, silu(gate) * up, as one MLX operation.
#pragma once

#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace draftwise {

namespace mx = mlx::core;

// `gate_up` is float32 [rows, 2 * f]: columns 0 .. f - 1 hold the gate
// projection and f .. 2f - 1 the up projection (the fused matmul's output).
// Returns float32 [rows, f] with gate / (1 + exp(-gate)) * up, lazily.
//
// Each element depends only on its own gate and up values, through the same
// float operations on every CPU (a polynomial exp written out here, no FMA
// contraction), so the result does not depend on the row count. Throws
// std::invalid_argument naming the offending value.
mx::array silu_mul(const mx::array& gate_up, mx::StreamOrDevice s = {});

class SiluMul : public mx::UnaryPrimitive {
 public:
  explicit SiluMul(mx::Stream stream) : mx::UnaryPrimitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  const char* name() const override { return "DraftwiseSiluMul"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;
};

}  // namespace draftwise

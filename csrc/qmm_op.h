// The draftwise quantized matmul as an MLX operation and primitive.
#pragma once

#include <string>

#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "qmm_problem.h"

namespace draftwise {

namespace mx = mlx::core;

// Returns x @ dequantize(weight, scales, biases).T, lazily, for MLX's affine
// layout as mx.quantize(w, group_size, bits) produces it: x float32 [..., K],
// weight uint32 [N, K * bits / 32], scales and biases float32 or float16 (both
// the same) [N, K / group_size].
// The result is float32 [..., N]. `isa` names a variant ("scalar", "avx2",
// "avx512"); empty selects the best one this CPU supports. `math` is "f32"
// or "int8" (int8 activations, see qmm_i8_avx2.cpp). Throws
// std::invalid_argument naming the offending value.
mx::array quantized_matmul(const mx::array& x, const mx::array& weight, const mx::array& scales,
                           const mx::array& biases, int bits, int group_size,
                           const std::string& isa = "", const std::string& math = "f32",
                           mx::StreamOrDevice s = {});

class QuantizedMatmulRows : public mx::UnaryPrimitive {
 public:
  QuantizedMatmulRows(mx::Stream stream, int bits, int group_size, const KernelVariant& variant)
      : mx::UnaryPrimitive(stream), bits_(bits), group_size_(group_size), variant_(variant) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  const char* name() const override { return "DraftwiseQuantizedMatmul"; }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;

 private:
  int bits_;
  int group_size_;
  const KernelVariant& variant_;
};

// Group scales and biases as IEEE float16 bits [n, k / group_size], used in
// place of QmmProblem::scales and ::biases when `scales` is not null.
struct HalfGroups {
  const uint16_t* scales = nullptr;
  const uint16_t* biases = nullptr;
};

// Runs a variant over the whole problem on the global thread pool. A variant
// that reads float16 groups gets them as they are. For the others, each task
// first widens its columns' scales and biases to float32. Either way every
// variant computes the same as with float32 groups of the same values.
void run_quantized_matmul(const KernelVariant& variant, const QmmProblem& problem,
                          const HalfGroups& half = {});

}  // namespace draftwise

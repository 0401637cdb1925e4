#include "silu_mul.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "isa_clones.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"

namespace draftwise {
namespace {

[[noreturn]] void reject(const std::string& message) {
  throw std::invalid_argument("silu_mul: " + message);
}

// Returns exp(x) for x in [-87, 87], which callers clamp to. With x = n ln2 + r
// and |r| <= ln2/2, exp(r) comes from its Taylor polynomial to degree 7
// (relative error below 2e-7) and is scaled by 2^n through the exponent bits.
// It uses plain float and integer operations without branches, so the
// compiler vectorizes the loop that calls it without changing a bit.
inline float exp_clamped(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2High = 0.693359375f;  // ln 2 split so that n * kLn2High is exact
  constexpr float kLn2Low = -2.12194440e-4f;
  const float t = x * kLog2e + 0.5f;
  // n = floor(t): truncation, minus one where it rounded up (t < 0).
  const int32_t truncated = static_cast<int32_t>(t);
  const int32_t n = truncated - static_cast<int32_t>(static_cast<float>(truncated) > t);
  const float nf = static_cast<float>(n);
  const float r = (x - nf * kLn2High) - nf * kLn2Low;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * std::bit_cast<float>((n + 127) << 23);
}

DRAFTWISE_ISA_CLONES
void silu_mul_rows(const float* __restrict in, int64_t row_stride, float* __restrict out,
                   int64_t rows, int64_t f) {
  for (int64_t row = 0; row < rows; ++row) {
    const float* gate = in + row * row_stride;
    const float* up = gate + f;
    float* y = out + row * f;
    for (int64_t i = 0; i < f; ++i) {
      const float g = gate[i];
      // Past the clamp silu(g) is g (g > 87) or 0 to float precision (g < -87).
      const float e = std::min(std::max(-g, -87.0f), 87.0f);
      y[i] = g / (1.0f + exp_clamped(e)) * up[i];
    }
  }
}

}  // namespace

mx::array silu_mul(const mx::array& gate_up, mx::StreamOrDevice s) {
  if (gate_up.dtype() != mx::float32 || gate_up.ndim() != 2) {
    reject("gate_up must be a 2-D float32 array [rows, 2 * f], got " +
           std::to_string(gate_up.ndim()) + " dimensions");
  }
  if (gate_up.shape(1) % 2 != 0) {
    reject("gate_up has " + std::to_string(gate_up.shape(1)) +
           " columns; it needs an even count (gate columns, then as many up columns)");
  }
  const mx::Stream stream = mx::to_stream(s, mx::Device::cpu);
  if (stream.device != mx::Device::cpu) {
    reject("runs on the CPU only; pass stream=mx.cpu");
  }
  return mx::array({gate_up.shape(0), gate_up.shape(1) / 2}, mx::float32,
                   std::make_shared<SiluMul>(stream), {gate_up});
}

void SiluMul::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  const mx::array& in = inputs[0];
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream());
  encoder.set_input_array(in);
  encoder.set_output_array(out);
  encoder.dispatch([in = mx::array::unsafe_weak_copy(in),
                    out = mx::array::unsafe_weak_copy(out)]() mutable {
    const int64_t rows = in.shape(0);
    const int64_t columns = in.shape(1);
    const float* data = in.data<float>();
    int64_t row_stride = in.strides(0);
    // Rows may sit apart (a slice of a wider array), but elements of a row
    // must be adjacent, so a column-strided input is gathered first.
    std::vector<float> dense;
    if (columns > 1 && in.strides(1) != 1) {
      dense.resize(static_cast<size_t>(rows * columns));
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < columns; ++c) {
          dense[r * columns + c] = data[r * in.strides(0) + c * in.strides(1)];
        }
      }
      data = dense.data();
      row_stride = columns;
    }
    silu_mul_rows(data, row_stride, out.data<float>(), rows, columns / 2);
  });
}

void SiluMul::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  throw std::runtime_error("DraftwiseSiluMul has no GPU implementation; use mx.cpu");
}

std::vector<mx::Shape> SiluMul::output_shapes(const std::vector<mx::array>& inputs) {
  return {{inputs[0].shape(0), inputs[0].shape(1) / 2}};
}

}  // namespace draftwise

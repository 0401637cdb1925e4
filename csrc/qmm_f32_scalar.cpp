// Portable quantized matmul with float32 math, for CPUs without AVX2.
//
// Each weight row is dequantized once into scratch (q * scale + bias, two
// roundings) and then dotted with every x row, summing k in increasing order
// with one float accumulator. Built with -ffp-contract=off so the compiler
// cannot fuse or reorder these operations.
#include "qmm_problem.h"

namespace draftwise {
namespace {

uint32_t extract_scalar(const uint8_t* row, int64_t index, int bits) {
  const int64_t bit = index * bits;
  const int64_t byte = bit >> 3;
  const int shift = static_cast<int>(bit & 7);
  uint32_t window = row[byte];
  // The next byte is read only when the value reaches into it, so the last
  // element of the last row never reads past the buffer.
  if (shift + bits > 8) {
    window |= static_cast<uint32_t>(row[byte + 1]) << 8;
  }
  return (window >> shift) & ((1u << bits) - 1u);
}

void dequantize_row(const QmmProblem& p, int64_t n, float* dst) {
  const auto* row = reinterpret_cast<const uint8_t*>(p.weight + n * (p.k * p.bits / 32));
  const int64_t groups = p.k / p.group_size;
  for (int64_t g = 0; g < groups; ++g) {
    const float scale = p.scales[n * groups + g];
    const float bias = p.biases[n * groups + g];
    for (int64_t i = g * p.group_size; i < (g + 1) * p.group_size; ++i) {
      dst[i] = static_cast<float>(extract_scalar(row, i, p.bits)) * scale + bias;
    }
  }
}

int64_t scalar_column_chunk(const QmmProblem&) {
  return 16;
}

size_t scalar_scratch_floats(const QmmProblem& p) {
  return static_cast<size_t>(p.k);
}

void scalar_run(const QmmProblem& p, int64_t n_begin, int64_t n_end, float* scratch) {
  for (int64_t n = n_begin; n < n_end; ++n) {
    dequantize_row(p, n, scratch);
    for (int64_t m = 0; m < p.m; ++m) {
      const float* x = p.x + m * p.k;
      float acc = 0.0f;
      for (int64_t i = 0; i < p.k; ++i) {
        acc += x[i] * scratch[i];
      }
      p.out[m * p.n + n] = acc;
    }
  }
}

}  // namespace

extern const KernelVariant kScalarF32 = {
    "scalar_f32",
    scalar_column_chunk,
    scalar_scratch_floats,
    scalar_run,
    nullptr,
    nullptr,
};

}  // namespace draftwise

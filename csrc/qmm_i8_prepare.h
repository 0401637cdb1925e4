// Int8 rows of x for the int8 kernels, shared by their ISA translation units.
//
// Included inside each unit's anonymous namespace (after <cstdint> and
// "qmm_problem.h"), so each unit compiles its own copy with its own flags.
// The operations are exact or plain IEEE float steps in a fixed order, so
// every copy produces the same bytes.

constexpr int kBlock = 32;

// Layout of QmmProblem::prepared, per row m:
//   int8 x_int8[m][k]: block b holds x[b*32 + 0, 2, ..., 30] then
//     x[b*32 + 1, 3, ..., 31], matching the low and high nibbles of the
//     block's 16 weight bytes;
//   float block_scale[m][k / 32]; float group_sum[m][k / group_size].
struct PreparedView {
  const int8_t* x_int8;
  const float* block_scale;
  const float* group_sum;
};

size_t bytes_x(const QmmProblem& p) {
  return static_cast<size_t>(p.m * p.k + 63) / 64 * 64;
}

size_t bytes_block_scale(const QmmProblem& p) {
  return static_cast<size_t>(p.m * (p.k / kBlock)) * sizeof(float);
}

PreparedView view_of(const QmmProblem& p, const void* prepared) {
  const auto* base = static_cast<const uint8_t*>(prepared);
  return {reinterpret_cast<const int8_t*>(base),
          reinterpret_cast<const float*>(base + bytes_x(p)),
          reinterpret_cast<const float*>(base + bytes_x(p) + bytes_block_scale(p))};
}

size_t i8_prepared_bytes(const QmmProblem& p) {
  if (p.bits != 4) {
    return 0;
  }
  return bytes_x(p) + bytes_block_scale(p) +
         static_cast<size_t>(p.m * (p.k / p.group_size)) * sizeof(float);
}

void quantize_row(const float* x, int64_t k, int8_t* x_int8, float* block_scale) {
  for (int64_t b = 0; b < k / kBlock; ++b) {
    const float* src = x + b * kBlock;
    float amax = 0.0f;
    for (int i = 0; i < kBlock; ++i) {
      amax = __builtin_fmaxf(amax, __builtin_fabsf(src[i]));
    }
    const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
    block_scale[b] = amax / 127.0f;
    int8_t* dst = x_int8 + b * kBlock;
    for (int i = 0; i < kBlock; ++i) {
      const int slot = i % 2 == 0 ? i / 2 : kBlock / 2 + i / 2;
      dst[slot] = static_cast<int8_t>(__builtin_nearbyintf(src[i] * inverse));
    }
  }
}

void i8_prepare(const QmmProblem& p, void* prepared) {
  auto* base = static_cast<uint8_t*>(prepared);
  auto* x_int8 = reinterpret_cast<int8_t*>(base);
  auto* block_scale = reinterpret_cast<float*>(base + bytes_x(p));
  auto* group_sum = reinterpret_cast<float*>(base + bytes_x(p) + bytes_block_scale(p));
  const int64_t groups = p.k / p.group_size;
  for (int64_t m = 0; m < p.m; ++m) {
    const float* x = p.x + m * p.k;
    quantize_row(x, p.k, x_int8 + m * p.k, block_scale + m * (p.k / kBlock));
    for (int64_t g = 0; g < groups; ++g) {
      float sum = 0.0f;
      for (int64_t i = g * p.group_size; i < (g + 1) * p.group_size; ++i) {
        sum += x[i];
      }
      group_sum[m * groups + g] = sum;
    }
  }
}


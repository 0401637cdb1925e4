// Quantized matmul with int8 activations on AVX2 (opt-in, not the default).
//
// For 4-bit weights: each 32-element block of an x row is quantized to int8
// with its own scale d = max|x| / 127 (round to nearest even), and
//   out[m, n] = hsum_l(acc_l) + sum_g biases[n, g] * xsum[m, g]
// where lane l of acc sums, block by block in increasing k,
//   fmadd(float(int32 dot of q and x_int8 over the block's lane l share),
//         scales[n, g] * d[m, block], acc)
// and xsum[m, g] is the float sum of x over group g, in increasing k. Every
// step depends on row m alone, so rows stay bit-identical whatever the batch.
// Integer dots are exact: maddubs pairs stay below 2 * 15 * 127 = 3810.
//
// Other bit widths run the AVX2 float32 kernel: 8-bit weights would
// overflow maddubs's int16 pairs, and the others are not written yet.
#include <immintrin.h>

#include <cstdint>

#include "qmm_problem.h"

namespace draftwise {
namespace {

constexpr int kRows = 4;     // rows per register tile
constexpr int kColumns = 2;  // columns per register tile

#include "qmm_i8_prepare.h"

float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// The block's 16 weight bytes as 32 unsigned bytes: low nibbles, then high.
__m256i unpack_nibbles(const uint8_t* block) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i low = _mm_and_si128(bytes, mask);
  const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  return _mm256_set_m128i(high, low);
}

template <int MR, int NR>
void i8_tile(const QmmProblem& p, const PreparedView& prepared, int64_t m0, int64_t n0) {
  const int64_t groups = p.k / p.group_size;
  const int64_t blocks = p.k / kBlock;
  const int64_t blocks_per_group = p.group_size / kBlock;
  const int64_t row_bytes = p.k / 2;
  const __m256i ones = _mm256_set1_epi16(1);

  __m256 acc[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      acc[r][c] = _mm256_setzero_ps();
    }
  }
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t g = b / blocks_per_group;
    __m256i w[NR];
    float scale[NR];
    for (int c = 0; c < NR; ++c) {
      const auto* row = reinterpret_cast<const uint8_t*>(p.weight) + (n0 + c) * row_bytes;
      w[c] = unpack_nibbles(row + b * (kBlock / 2));
      scale[c] = p.scales[(n0 + c) * groups + g];
    }
    for (int r = 0; r < MR; ++r) {
      const __m256i xv = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(prepared.x_int8 + (m0 + r) * p.k + b * kBlock));
      const float d = prepared.block_scale[(m0 + r) * blocks + b];
      for (int c = 0; c < NR; ++c) {
        const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(w[c], xv), ones);
        const __m256 step = _mm256_set1_ps(scale[c] * d);
        acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), step, acc[r][c]);
      }
    }
  }

  for (int r = 0; r < MR; ++r) {
    const float* group_sum = prepared.group_sum + (m0 + r) * groups;
    for (int c = 0; c < NR; ++c) {
      const float* bias = p.biases + (n0 + c) * groups;
      float bias_term = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        bias_term += bias[g] * group_sum[g];
      }
      p.out[(m0 + r) * p.n + n0 + c] = hsum(acc[r][c]) + bias_term;
    }
  }
}

template <int MR>
void i8_rows(const QmmProblem& p, const PreparedView& prepared, int64_t m0, int64_t n_begin,
             int64_t n_end) {
  int64_t n0 = n_begin;
  for (; n0 + kColumns <= n_end; n0 += kColumns) {
    i8_tile<MR, kColumns>(p, prepared, m0, n0);
  }
  for (; n0 < n_end; ++n0) {
    i8_tile<MR, 1>(p, prepared, m0, n0);
  }
}

int64_t i8_column_chunk(const QmmProblem& p) {
  return p.bits == 4 ? 32 : kAvx2F32.column_chunk(p);
}

size_t i8_scratch_floats(const QmmProblem& p) {
  return p.bits == 4 ? 0 : kAvx2F32.scratch_floats(p);
}

void i8_run(const QmmProblem& p, int64_t n_begin, int64_t n_end, float* scratch) {
  if (p.bits != 4) {
    kAvx2F32.run(p, n_begin, n_end, scratch);
    return;
  }
  const PreparedView prepared = view_of(p, p.prepared);
  int64_t m0 = 0;
  for (; m0 + kRows <= p.m; m0 += kRows) {
    i8_rows<kRows>(p, prepared, m0, n_begin, n_end);
  }
  switch (p.m - m0) {
    case 3: i8_rows<3>(p, prepared, m0, n_begin, n_end); break;
    case 2: i8_rows<2>(p, prepared, m0, n_begin, n_end); break;
    case 1: i8_rows<1>(p, prepared, m0, n_begin, n_end); break;
    default: break;
  }
}

}  // namespace

extern const KernelVariant kAvx2I8 = {
    "avx2_i8",
    i8_column_chunk,
    i8_scratch_floats,
    i8_run,
    i8_prepared_bytes,
    i8_prepare,
};

}  // namespace draftwise

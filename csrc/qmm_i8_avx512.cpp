// Quantized matmul with int8 activations on AVX-512 VNNI (opt-in).
//
// The same math as qmm_i8_avx2.cpp (see there and qmm_i8_prepare.h), with
// vpdpbusd doing the int8 dot products on two 32-element blocks per 512-bit
// register: lanes 0-7 take even blocks and lanes 8-15 odd ones, each summing
// fmadd(float(int32 dot), scales[n, g] * d[m, block], acc) in increasing k.
// When the block count is odd, the last block fills lanes 0-7 alone. Rows
// stay bit-identical whatever the batch; results differ from the AVX2
// variant in rounding, because the lanes split the blocks differently.
//
// Other bit widths run the AVX-512 float32 kernel.
#include "avx512_intrinsics.h"

#include <cstdint>

#include "avx512_sum_lanes.h"
#include "qmm_problem.h"

namespace draftwise {
namespace {

constexpr int kRows = 4;     // rows per register tile
constexpr int kColumns = 4;  // columns per register tile

#include "qmm_i8_prepare.h"

// Two consecutive blocks' 32 weight bytes as 64 unsigned bytes: block 0's
// low nibbles, block 0's high nibbles, then the same for block 1.
__m512i unpack_pair(const uint8_t* blocks) {
  const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blocks));
  const __m256i mask = _mm256_set1_epi8(0x0F);
  const __m256i low = _mm256_and_si256(bytes, mask);
  const __m256i high = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
  // [b0 low, b1 low, b0 high, b1 high] -> [b0 low, b0 high, b1 low, b1 high]
  const __m512i joined = _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
  return _mm512_shuffle_i32x4(joined, joined, _MM_SHUFFLE(3, 1, 2, 0));
}

// One block's 16 weight bytes as [low nibbles, high nibbles, zeros].
__m512i unpack_single(const uint8_t* block) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i low = _mm_and_si128(bytes, mask);
  const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  return _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set_m128i(high, low), 0);
}

__m512 pair_of(float even, float odd) {
  return _mm512_insertf32x8(_mm512_set1_ps(even), _mm256_set1_ps(odd), 1);
}

template <int MR, int NR>
void i8_tile(const QmmProblem& p, const PreparedView& prepared, int64_t m0, int64_t n0) {
  const int64_t groups = p.k / p.group_size;
  const int64_t blocks = p.k / kBlock;
  const int64_t blocks_per_group = p.group_size / kBlock;
  const int64_t row_bytes = p.k / 2;
  const uint8_t* rows[NR];
  const float* scales[NR];
  for (int c = 0; c < NR; ++c) {
    rows[c] = reinterpret_cast<const uint8_t*>(p.weight) + (n0 + c) * row_bytes;
    scales[c] = p.scales + (n0 + c) * groups;
  }
  __m512 acc[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      acc[r][c] = _mm512_setzero_ps();
    }
  }

  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    __m512i w[NR];
    __m512 scale[NR];
    for (int c = 0; c < NR; ++c) {
      w[c] = unpack_pair(rows[c] + b * (kBlock / 2));
      scale[c] = pair_of(scales[c][b / blocks_per_group], scales[c][(b + 1) / blocks_per_group]);
    }
    for (int r = 0; r < MR; ++r) {
      const int8_t* x = prepared.x_int8 + (m0 + r) * p.k + b * kBlock;
      const float* d = prepared.block_scale + (m0 + r) * blocks + b;
      const __m512i xv = _mm512_loadu_si512(x);
      const __m512 dv = pair_of(d[0], d[1]);
      for (int c = 0; c < NR; ++c) {
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[c], xv);
        acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(scale[c], dv), acc[r][c]);
      }
    }
  }
  if (b < blocks) {
    // Lanes 8-15 get a zero dot product, so they add zero.
    for (int c = 0; c < NR; ++c) {
      const __m512i w = unpack_single(rows[c] + b * (kBlock / 2));
      const __m512 scale = _mm512_set1_ps(scales[c][b / blocks_per_group]);
      for (int r = 0; r < MR; ++r) {
        const int8_t* x = prepared.x_int8 + (m0 + r) * p.k + b * kBlock;
        const __m512i xv = _mm512_inserti64x4(
            _mm512_setzero_si512(), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)), 0);
        const __m512 dv = _mm512_set1_ps(prepared.block_scale[(m0 + r) * blocks + b]);
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, xv);
        acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(scale, dv), acc[r][c]);
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
      p.out[(m0 + r) * p.n + n0 + c] = sum_lanes(acc[r][c]) + bias_term;
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
  return p.bits == 4 ? 32 : kAvx512F32.column_chunk(p);
}

size_t i8_scratch_floats(const QmmProblem& p) {
  return p.bits == 4 ? 0 : kAvx512F32.scratch_floats(p);
}

void i8_run(const QmmProblem& p, int64_t n_begin, int64_t n_end, float* scratch) {
  if (p.bits != 4) {
    kAvx512F32.run(p, n_begin, n_end, scratch);
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

extern const KernelVariant kAvx512I8 = {
    "avx512_i8",
    i8_column_chunk,
    i8_scratch_floats,
    i8_run,
    i8_prepared_bytes,
    i8_prepare,
};

}  // namespace draftwise

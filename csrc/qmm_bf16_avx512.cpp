// Quantized matmul with bfloat16 dot products on AVX-512 BF16 (vdpbf16ps).
//
// For 4-bit weights: each group's 16 possible weights fmadd(q, scale, bias)
// are computed in float32 and rounded to bfloat16 once, and each 32-element
// block picks its weights from that table with one 16-bit permute. x rows are
// rounded to bfloat16 once per call (prepare). vdpbf16ps then adds, per float
// lane l, x[2l] * w[2l] and x[2l + 1] * w[2l + 1] of each block, in increasing
// k, and the 16 lanes are summed with a fixed tree at the end. Every operation
// depends only on the row and the column, so rows are bit-identical whatever
// the row count and their position (the batch invariance contract).
//
// One instruction does 32 multiply-adds, twice the float32 kernel's 16, and
// the weights are unpacked once for up to 9 rows. Other bit widths run the
// AVX-512 float32 kernel.
#include <immintrin.h>

#include <cstdint>
#include <utility>

#include "qmm_problem.h"

namespace draftwise {
namespace {

constexpr int kBlock = 32;
constexpr int kMaxRows = 9;  // rows per register tile
// Columns per register tile for each row count: accumulators + weights < 32 registers.
constexpr int kColumns[kMaxRows + 1] = {0, 8, 6, 5, 4, 3, 3, 3, 2, 2};

template <int N, class F>
inline void static_for(F&& body) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (body(std::integral_constant<int, I>{}), ...);
  }(std::make_integer_sequence<int, N>{});
}

float hsum(__m512 v) {
  const __m256 low = _mm512_castps512_ps256(v);
  const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  const __m256 eight = _mm256_add_ps(low, high);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

size_t bf16_prepared_bytes(const QmmProblem& p) {
  if (p.bits != 4) {
    return 0;
  }
  return static_cast<size_t>(p.m * p.k) * sizeof(uint16_t);
}

// x rows as bfloat16 (round to nearest even), in k order.
void bf16_prepare(const QmmProblem& p, void* prepared) {
  auto* out = static_cast<uint16_t*>(prepared);
  for (int64_t i = 0; i < p.m * p.k; i += kBlock) {
    const __m512 low = _mm512_loadu_ps(p.x + i);
    const __m512 high = _mm512_loadu_ps(p.x + i + 16);
    const __m512bh pair = _mm512_cvtne2ps_pbh(high, low);
    _mm512_storeu_si512(out + i, reinterpret_cast<const __m512i&>(pair));
  }
}

// The group's 16 weights fmadd(q, scale, bias), q = 0..15, as bfloat16 in
// the low 16 words of a register.
__m512i group_table(float scale, float bias) {
  const __m512 q = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 w = _mm512_fmadd_ps(q, _mm512_set1_ps(scale), _mm512_set1_ps(bias));
  const __m256bh words = _mm512_cvtneps_pbh(w);
  return _mm512_castsi256_si512(reinterpret_cast<const __m256i&>(words));
}

// The block's 32 weights: word e is the table entry of element e, whose 4
// bits are nibble e % 2 of byte e / 2.
__m512i block_weights(const uint8_t* block, __m512i table) {
  const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
  const __m512i low = _mm512_and_si512(bytes, _mm512_set1_epi32(0x0F));
  const __m512i shifted = _mm512_slli_epi32(bytes, 12);
  // (shifted & 0x000F0000) | low
  const __m512i index =
      _mm512_ternarylogic_epi32(shifted, _mm512_set1_epi32(0x000F0000), low, 0xEA);
  return _mm512_permutexvar_epi16(index, table);
}

template <int MR, int NR>
void bf16_tile(const QmmProblem& p, const uint16_t* x, int64_t m0, int64_t n0) {
  const int64_t groups = p.k / p.group_size;
  const int64_t blocks_per_group = p.group_size / kBlock;
  const int64_t row_bytes = p.k / 2;
  const uint8_t* rows[NR];
  for (int c = 0; c < NR; ++c) {
    rows[c] = reinterpret_cast<const uint8_t*>(p.weight) + (n0 + c) * row_bytes;
  }
  __m512 acc[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      acc[r][c] = _mm512_setzero_ps();
    }
  }
  for (int64_t g = 0; g < groups; ++g) {
    __m512i table[NR];
    for (int c = 0; c < NR; ++c) {
      table[c] = group_table(p.scales[(n0 + c) * groups + g], p.biases[(n0 + c) * groups + g]);
    }
    for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
      __m512i w[NR];
      for (int c = 0; c < NR; ++c) {
        w[c] = block_weights(rows[c] + b * (kBlock / 2), table[c]);
      }
      for (int r = 0; r < MR; ++r) {
        const __m512i xv = _mm512_loadu_si512(x + (m0 + r) * p.k + b * kBlock);
        for (int c = 0; c < NR; ++c) {
          acc[r][c] = _mm512_dpbf16_ps(acc[r][c], reinterpret_cast<const __m512bh&>(xv),
                                       reinterpret_cast<const __m512bh&>(w[c]));
        }
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      p.out[(m0 + r) * p.n + n0 + c] = hsum(acc[r][c]);
    }
  }
}

template <int MR>
void bf16_rows(const QmmProblem& p, const uint16_t* x, int64_t m0, int64_t n_begin,
               int64_t n_end) {
  constexpr int NR = kColumns[MR];
  int64_t n0 = n_begin;
  for (; n0 + NR <= n_end; n0 += NR) {
    bf16_tile<MR, NR>(p, x, m0, n0);
  }
  for (; n0 < n_end; ++n0) {
    bf16_tile<MR, 1>(p, x, m0, n0);
  }
}

// Rows [m0, m0 + rows) with 1 <= rows <= kMaxRows.
void bf16_row_tile(const QmmProblem& p, const uint16_t* x, int64_t m0, int rows,
                   int64_t n_begin, int64_t n_end) {
  static_for<kMaxRows + 1>([&](auto count) {
    if (count != 0 && rows == count) {
      bf16_rows<count>(p, x, m0, n_begin, n_end);
    }
  });
}

int64_t bf16_column_chunk(const QmmProblem& p) {
  return p.bits == 4 ? 32 : kAvx512F32.column_chunk(p);
}

size_t bf16_scratch_floats(const QmmProblem& p) {
  return p.bits == 4 ? 0 : kAvx512F32.scratch_floats(p);
}

void bf16_run(const QmmProblem& p, int64_t n_begin, int64_t n_end, float* scratch) {
  if (p.bits != 4) {
    kAvx512F32.run(p, n_begin, n_end, scratch);
    return;
  }
  const auto* x = static_cast<const uint16_t*>(p.prepared);
  // Up to 9 rows in one register tile; more rows in tiles of 8, the rest last.
  if (p.m <= kMaxRows) {
    bf16_row_tile(p, x, 0, static_cast<int>(p.m), n_begin, n_end);
    return;
  }
  int64_t m0 = 0;
  for (; m0 + 8 <= p.m; m0 += 8) {
    bf16_row_tile(p, x, m0, 8, n_begin, n_end);
  }
  if (m0 < p.m) {
    bf16_row_tile(p, x, m0, static_cast<int>(p.m - m0), n_begin, n_end);
  }
}

}  // namespace

extern const KernelVariant kAvx512Bf16 = {
    "avx512_bf16", bf16_column_chunk, bf16_scratch_floats, bf16_run, bf16_prepared_bytes,
    bf16_prepare,
};

}  // namespace draftwise

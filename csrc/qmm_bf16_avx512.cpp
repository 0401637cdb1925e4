// Quantized matmul with bfloat16 dot products on AVX-512 BF16 (vdpbf16ps).
//
// Weights are rounded to bfloat16 from their float32 value fmadd(q, scale,
// bias). For 4-bit weights, each group's 16 possible weights are computed
// once and each 32-element block picks its weights from that table with one
// 16-bit permute. 8-bit weights are converted block by block. x rows are
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

#include "avx512_sum_lanes.h"
#include "qmm_problem.h"
#include "static_for.h"

namespace draftwise {
namespace {

constexpr int kBlock = 32;
constexpr int kMaxRows = 9;  // rows per register tile
// Columns per register tile for each row count: accumulators + weights < 32 registers.
constexpr int kColumns[kMaxRows + 1] = {0, 8, 6, 5, 4, 3, 3, 3, 2, 2};

bool bf16_bits(int bits) { return bits == 4 || bits == 8; }

size_t bf16_prepared_bytes(const QmmProblem& p) {
  if (!bf16_bits(p.bits)) {
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

// The group's 16 weights fmadd(q, scale, bias), q = 0..15, as bfloat16, in
// words 0..15 and again in words 16..31, so that a permute index only needs
// its low 4 bits right.
__m512i group_table(float scale, float bias) {
  const __m512 q = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 w = _mm512_fmadd_ps(q, _mm512_set1_ps(scale), _mm512_set1_ps(bias));
  const __m512bh words = _mm512_cvtne2ps_pbh(w, w);
  return reinterpret_cast<const __m512i&>(words);
}

// The block's 32 weights: word e is the table entry of element e, whose 4
// bits are nibble e % 2 of byte e / 2. Dword i = byte | byte << 12 contains the
// low nibble in bits 0..3 of word 2i (bit 4 is the high nibble's lowest
// bit, which the doubled table ignores) and the high nibble in word 2i + 1.
__m512i block_weights(const uint8_t* block, __m512i table) {
  const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
  const __m512i index = _mm512_or_si512(bytes, _mm512_slli_epi32(bytes, 12));
  return _mm512_permutexvar_epi16(index, table);
}

// 8-bit weights: the block's 32 weights fmadd(q, scale, bias) in float32,
// rounded to bfloat16 (the same values the 4-bit table contains for its q).
__m512i block_weights8(const uint8_t* block, __m512 scale, __m512 bias) {
  const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block));
  const __m512 low = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(bytes)));
  const __m512 high = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(bytes, 1)));
  const __m512bh pair = _mm512_cvtne2ps_pbh(_mm512_fmadd_ps(high, scale, bias),
                                           _mm512_fmadd_ps(low, scale, bias));
  return reinterpret_cast<const __m512i&>(pair);
}

// Columns [n0, n0 + NR) of rows [m0, m0 + MR), with GB blocks per group.
// One pointer walks each array (weights, scales, biases) and steps from
// column to column, so the loop keeps its state in registers. While it
// works, it prefetches the next tile's weights, which follow this tile's in
// memory, as many bytes per block as it reads.
template <int BITS, int GB, int MR, int NR>
void bf16_tile(const QmmProblem& p, const uint16_t* x, int64_t m0, int64_t n0) {
  const int64_t groups = p.k / p.group_size;
  const int64_t row_bytes = p.k * BITS / 8;
  constexpr int64_t kBlockBytes = kBlock * BITS / 8;
  constexpr int kPrefetchLines = (NR * kBlockBytes + 63) / 64;
  const uint8_t* weights = reinterpret_cast<const uint8_t*>(p.weight) + n0 * row_bytes;
  const char* next = reinterpret_cast<const char*>(weights + NR * row_bytes);
  const float* scales = p.scales + n0 * groups;
  const float* biases = p.biases + n0 * groups;
  __m512 acc[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      acc[r][c] = _mm512_setzero_ps();
    }
  }
  const uint16_t* xg = x + m0 * p.k;
  for (int64_t g = 0; g < groups; ++g) {
    // The next tile's NR * groups scales and biases, NR per group.
    _mm_prefetch(reinterpret_cast<const char*>(scales + NR * (groups + g)), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(biases + NR * (groups + g)), _MM_HINT_T0);
    __m512i table[NR];
    __m512 scale[NR];
    __m512 bias[NR];
    {
      const float* s = scales + g;
      const float* z = biases + g;
      for (int c = 0; c < NR; ++c, s += groups, z += groups) {
        if constexpr (BITS == 4) {
          table[c] = group_table(*s, *z);
        } else {
          scale[c] = _mm512_set1_ps(*s);
          bias[c] = _mm512_set1_ps(*z);
        }
      }
    }
    for (int gb = 0; gb < GB; ++gb) {
      for (int j = 0; j < kPrefetchLines; ++j) {
        _mm_prefetch(next + j * 64, _MM_HINT_T0);
      }
      next += kPrefetchLines * 64;
      __m512i w[NR];
      const uint8_t* q = weights;
      for (int c = 0; c < NR; ++c, q += row_bytes) {
        if constexpr (BITS == 4) {
          w[c] = block_weights(q, table[c]);
        } else {
          w[c] = block_weights8(q, scale[c], bias[c]);
        }
      }
      weights += kBlockBytes;
      for (int r = 0; r < MR; ++r) {
        const __m512i xv = _mm512_loadu_si512(xg + r * p.k);
        for (int c = 0; c < NR; ++c) {
          acc[r][c] = _mm512_dpbf16_ps(acc[r][c], reinterpret_cast<const __m512bh&>(xv),
                                       reinterpret_cast<const __m512bh&>(w[c]));
        }
      }
      xg += kBlock;
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      p.out[(m0 + r) * p.n + n0 + c] = sum_lanes(acc[r][c]);
    }
  }
}

template <int BITS, int GB, int MR>
void bf16_columns(const QmmProblem& p, const uint16_t* x, int64_t m0, int64_t n_begin,
                  int64_t n_end) {
  constexpr int NR = kColumns[MR];
  int64_t n0 = n_begin;
  for (; n0 + NR <= n_end; n0 += NR) {
    bf16_tile<BITS, GB, MR, NR>(p, x, m0, n0);
  }
  for (; n0 < n_end; ++n0) {
    bf16_tile<BITS, GB, MR, 1>(p, x, m0, n0);
  }
}

template <int BITS, int MR>
void bf16_groups(const QmmProblem& p, const uint16_t* x, int64_t m0, int64_t n_begin,
                 int64_t n_end) {
  switch (p.group_size / kBlock) {
    case 1:
      bf16_columns<BITS, 1, MR>(p, x, m0, n_begin, n_end);
      break;
    case 2:
      bf16_columns<BITS, 2, MR>(p, x, m0, n_begin, n_end);
      break;
    default:
      bf16_columns<BITS, 4, MR>(p, x, m0, n_begin, n_end);
      break;
  }
}

template <int MR>
void bf16_rows(const QmmProblem& p, const uint16_t* x, int64_t m0, int64_t n_begin,
               int64_t n_end) {
  if (p.bits == 4) {
    bf16_groups<4, MR>(p, x, m0, n_begin, n_end);
  } else {
    bf16_groups<8, MR>(p, x, m0, n_begin, n_end);
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
  return bf16_bits(p.bits) ? 32 : kAvx512F32.column_chunk(p);
}

size_t bf16_scratch_floats(const QmmProblem& p) {
  return bf16_bits(p.bits) ? 0 : kAvx512F32.scratch_floats(p);
}

void bf16_run(const QmmProblem& p, int64_t n_begin, int64_t n_end, float* scratch) {
  if (!bf16_bits(p.bits)) {
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

// Quantized matmul with int8 activations on AVX2, for 4- and 8-bit weights.
//
// Each 32-element block of an x row is quantized to int8 with its own scale
// d = max|x| / 127 (qmm_i8_avx2_prepare.h). For column n and row m:
//   out[m, n] = hsum(acc) + sum_g bias'[n, g] * xsum[m, g]
// where lane j of acc sums, over chunks of 8 blocks in increasing k,
//   fmadd(float(dot of block 8 * chunk + j), scales[n, g(block)] * d[m, block], acc)
// and xsum[m, g] is the float sum of x over group g. The integer dots are
// exact whichever way they are reduced, so the float steps, and their order,
// depend on k alone: each row is bit-identical whatever the row count, its
// position, the tiling or the thread.
//
// 4-bit: weights stay unsigned (0..15): maddubs(q, x) pairs are at most
// 2 * 15 * 127, below 2^15; bias' = biases.
// 8-bit: w = q - 128 is signed; maddubs(|w|, sign(x, w)) pairs are at most
// 2 * 128 * 127, below 2^15; bias' = biases + 128 * scales, so only the
// centred part of the weight meets the rounding of x.
// madd widens each block's pairs to int32, and blends and shuffles gather
// the 8 block sums of a chunk into one vector: one convert, one multiply and
// one multiply-add per 8 blocks instead of per block.
// Other widths run the AVX2 float32 kernel.
#include <immintrin.h>

#include <cstdint>

#include "qmm_problem.h"

namespace draftwise {
namespace {

#include "qmm_i8_block.h"
#include "qmm_i8_avx2_prepare.h"

constexpr int kColumns = 4;     // columns per register tile
constexpr int kRowBlock = 16;   // rows sharing one unpacked weight chunk
constexpr int kDirectMaxRows = 8;   // up to here weights unpack in registers
constexpr int64_t kTaskColumns = 64;

float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// One chunk (8 blocks) of one weight column, unpacked for maddubs.
struct ChunkWeights {
  alignas(32) uint8_t magnitude[kChunkBlocks][kBlock];  // unsigned operand
  alignas(32) int8_t sign[kChunkBlocks][kBlock];        // 8-bit: w, for sign_epi8
  alignas(32) float scale[kChunkBlocks];
};

// Group sizes are 32, 64 or 128: block b is in group b >> this.
int blocks_per_group_log2(const QmmProblem& p) {
  return __builtin_ctz(static_cast<unsigned>(p.group_size / kBlock));
}

// scales[n, group of block 8 * chunk + j] in lane j, for a chunk inside k.
[[gnu::always_inline]] inline __m256 full_chunk_scales(const QmmProblem& p, int64_t n,
                                                       int64_t chunk) {
  const int64_t groups = p.k / p.group_size;
  const float* scales = p.scales + n * groups;
  if (p.group_size == kBlock) {
    return _mm256_loadu_ps(scales + chunk * kChunkBlocks);
  }
  const int shift = blocks_per_group_log2(p);
  alignas(32) float lanes[kChunkBlocks];
  for (int j = 0; j < kChunkBlocks; ++j) {
    lanes[j] = scales[(chunk * kChunkBlocks + j) >> shift];
  }
  return _mm256_load_ps(lanes);
}

// Unpacks a chunk into `w`; blocks past k get zero weights and scale, so
// they add fmadd(0, 0, acc) and leave acc as it is.
template <int Bits>
[[gnu::always_inline]] inline void unpack_chunk(const QmmProblem& p, int64_t n, int64_t chunk,
                                                ChunkWeights& w) {
  const int64_t blocks = p.k / kBlock;
  const int64_t groups = p.k / p.group_size;
  const int shift = blocks_per_group_log2(p);
  const float* scales = p.scales + n * groups;
  const auto* row = reinterpret_cast<const uint8_t*>(p.weight) + n * (p.k * Bits / 8);
  for (int j = 0; j < kChunkBlocks; ++j) {
    const int64_t b = chunk * kChunkBlocks + j;
    if (b >= blocks) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(w.magnitude[j]), _mm256_setzero_si256());
      _mm256_store_si256(reinterpret_cast<__m256i*>(w.sign[j]), _mm256_setzero_si256());
      w.scale[j] = 0.0f;
      continue;
    }
    w.scale[j] = scales[b >> shift];
    if constexpr (Bits == 4) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + b * 16));
      const __m128i mask = _mm_set1_epi8(0x0F);
      _mm_store_si128(reinterpret_cast<__m128i*>(w.magnitude[j]), _mm_and_si128(bytes, mask));
      _mm_store_si128(reinterpret_cast<__m128i*>(w.magnitude[j] + 16),
                      _mm_and_si128(_mm_srli_epi16(bytes, 4), mask));
    } else {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + b * 32));
      const __m256i centered = _mm256_xor_si256(q, _mm256_set1_epi8(static_cast<char>(0x80)));
      _mm256_store_si256(reinterpret_cast<__m256i*>(w.sign[j]), centered);
      // |-128| is 0x80, which maddubs reads as the unsigned 128.
      _mm256_store_si256(reinterpret_cast<__m256i*>(w.magnitude[j]), _mm256_abs_epi8(centered));
    }
  }
}

// Weight operands read from an unpacked ChunkWeights (several rows).
struct BufferedWeights {
  const ChunkWeights& w;
  __m256i magnitude(int j) const {
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(w.magnitude[j]));
  }
  __m256i sign(int j) const {
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(w.sign[j]));
  }
};

// Weight operands unpacked in registers from a chunk inside k (one row).
// The integer dots, and so the results, equal the buffered ones.
template <int Bits>
struct DirectWeights {
  const uint8_t* chunk;  // first byte of the chunk's 8 blocks
  __m256i magnitude(int j) const {
    if constexpr (Bits == 4) {
      const __m256i both = _mm256_broadcastsi128_si256(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(chunk + j * 16)));
      const __m256i nibbles = _mm256_blend_epi32(both, _mm256_srli_epi16(both, 4), 0xF0);
      return _mm256_and_si256(nibbles, _mm256_set1_epi8(0x0F));
    } else {
      return _mm256_abs_epi8(sign(j));
    }
  }
  __m256i sign(int j) const {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk + j * 32));
    return _mm256_xor_si256(q, _mm256_set1_epi8(static_cast<char>(0x80)));
  }
};

// Merges two vectors of int32 partial block sums: `a` holds blocks A and B
// in alternating units ([A, B, A, B] with the 0xAA/0xB1 step, [A, A, B, B]
// style halves with 0xCC/0x4E), `b` the same for blocks C and D; the result
// holds each block's units summed, one block per unit position. Blends,
// shuffles and adds run beside maddubs on Zen, where a horizontal add or
// another madd would compete for the integer multiplier.
template <int BlendMask, int Shuffle>
__m256i combine32(__m256i a, __m256i b) {
  const __m256i kept = _mm256_blend_epi32(a, b, BlendMask);
  const __m256i moved = _mm256_shuffle_epi32(_mm256_blend_epi32(b, a, BlendMask), Shuffle);
  return _mm256_add_epi32(kept, moved);
}

// [blocks 0-3 | blocks 0-3] and [4-7 | 4-7] summed into [0-3 | 4-7].
__m256i join_halves(__m256i low, __m256i high) {
  const __m256i kept = _mm256_blend_epi32(low, high, 0xF0);
  const __m256i other = _mm256_blend_epi32(high, low, 0xF0);
  return _mm256_add_epi32(kept, _mm256_permute2x128_si256(other, other, 0x01));
}

// Lane j: the sum of v[j]'s 8 int32 lanes, that is block j's dot.
[[gnu::always_inline]] inline __m256i gather_dots(const __m256i (&v)[kChunkBlocks]) {
  const __m256i low = combine32<0xCC, 0x4E>(combine32<0xAA, 0xB1>(v[0], v[1]),
                                            combine32<0xAA, 0xB1>(v[2], v[3]));
  const __m256i high = combine32<0xCC, 0x4E>(combine32<0xAA, 0xB1>(v[4], v[5]),
                                             combine32<0xAA, 0xB1>(v[6], v[7]));
  return join_halves(low, high);
}

// The 8 block dots of one chunk, lane j holding block j, as exact int32.
template <int Bits, class Weights>
[[gnu::always_inline]] inline __m256i chunk_dots(const Weights& w, const int8_t* x) {
  auto xv = [x](int j) {
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(x + j * kBlock));
  };
  auto wv = [&w](int j) { return w.magnitude(j); };
  __m256i v[kChunkBlocks];
  const __m256i ones = _mm256_set1_epi16(1);
  for (int j = 0; j < kChunkBlocks; ++j) {
    if constexpr (Bits == 4) {
      v[j] = _mm256_madd_epi16(_mm256_maddubs_epi16(wv(j), xv(j)), ones);
    } else {
      v[j] = _mm256_madd_epi16(_mm256_maddubs_epi16(wv(j), _mm256_sign_epi8(xv(j), w.sign(j))),
                               ones);
    }
  }
  return gather_dots(v);
}

// sum_g bias'[n, g] * xsum[m, g], in increasing g over 8-lane vectors.
template <int Bits>
float bias_term(const QmmProblem& p, const PreparedRows& rows, int64_t m, int64_t n) {
  const int64_t groups = p.k / p.group_size;
  const float* bias = p.biases + n * groups;
  const float* scale = p.scales + n * groups;
  const float* xsum = rows.group_sum(m);
  __m256 acc = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= groups; g += 8) {
    __m256 b = _mm256_loadu_ps(bias + g);
    if constexpr (Bits == 8) {
      b = _mm256_fmadd_ps(_mm256_loadu_ps(scale + g), _mm256_set1_ps(128.0f), b);
    }
    acc = _mm256_fmadd_ps(b, _mm256_load_ps(xsum + g), acc);
  }
  float total = hsum(acc);
  for (; g < groups; ++g) {
    float b = bias[g];
    if constexpr (Bits == 8) {
      b = __builtin_fmaf(scale[g], 128.0f, b);
    }
    total = __builtin_fmaf(b, xsum[g], total);
  }
  return total;
}

// Columns [n0, n0 + NR) for rows [m0, m0 + rows), rows <= kRowBlock.
template <int Bits, int NR>
void column_tile(const QmmProblem& p, const PreparedRows& prepared, int64_t m0, int rows,
                 int64_t n0) {
  const int64_t chunks = prepared.chunks;
  __m256 acc[kRowBlock][NR];
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < NR; ++c) {
      acc[r][c] = _mm256_setzero_ps();
    }
  }
  ChunkWeights w[NR];
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    for (int c = 0; c < NR; ++c) {
      unpack_chunk<Bits>(p, n0 + c, chunk, w[c]);
    }
    for (int r = 0; r < rows; ++r) {
      const int8_t* x = prepared.x(m0 + r) + chunk * kChunkBlocks * kBlock;
      const __m256 d = _mm256_load_ps(prepared.block_scale(m0 + r) + chunk * kChunkBlocks);
      for (int c = 0; c < NR; ++c) {
        const __m256 dots = _mm256_cvtepi32_ps(chunk_dots<Bits>(BufferedWeights{w[c]}, x));
        const __m256 step = _mm256_mul_ps(_mm256_load_ps(w[c].scale), d);
        acc[r][c] = _mm256_fmadd_ps(dots, step, acc[r][c]);
      }
    }
  }
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < NR; ++c) {
      p.out[(m0 + r) * p.n + n0 + c] =
          hsum(acc[r][c]) + bias_term<Bits>(p, prepared, m0 + r, n0 + c);
    }
  }
}

// Columns [n0, n0 + NR) for rows [m0, m0 + MR), few rows: full chunks unpack
// each weight block in registers once for all MR rows; a last partial chunk
// goes through ChunkWeights. The integer dots, and so every float step,
// equal those of column_tile.
template <int Bits, int MR, int NR>
void direct_tile(const QmmProblem& p, const PreparedRows& prepared, int64_t m0, int64_t n0) {
  const int64_t full_chunks = p.k / kBlock / kChunkBlocks;
  const int64_t row_bytes = p.k * Bits / 8;
  const auto* weight = reinterpret_cast<const uint8_t*>(p.weight);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      acc[r][c] = _mm256_setzero_ps();
    }
  }
  for (int64_t chunk = 0; chunk < full_chunks; ++chunk) {
    const int64_t offset = chunk * kChunkBlocks * kBlock;
    for (int c = 0; c < NR; ++c) {
      const DirectWeights<Bits> w{weight + (n0 + c) * row_bytes + offset * Bits / 8};
      __m256i v[MR][kChunkBlocks];
      for (int j = 0; j < kChunkBlocks; ++j) {
        const __m256i magnitude = w.magnitude(j);
        __m256i sign;
        if constexpr (Bits == 8) {
          sign = w.sign(j);
        }
        for (int r = 0; r < MR; ++r) {
          __m256i xv = _mm256_load_si256(
              reinterpret_cast<const __m256i*>(prepared.x(m0 + r) + offset + j * kBlock));
          if constexpr (Bits == 8) {
            xv = _mm256_sign_epi8(xv, sign);
          }
          v[r][j] = _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, xv), ones);
        }
      }
      const __m256 scales = full_chunk_scales(p, n0 + c, chunk);
      for (int r = 0; r < MR; ++r) {
        const __m256 dots = _mm256_cvtepi32_ps(gather_dots(v[r]));
        const __m256 dv = _mm256_load_ps(prepared.block_scale(m0 + r) + chunk * kChunkBlocks);
        acc[r][c] = _mm256_fmadd_ps(dots, _mm256_mul_ps(scales, dv), acc[r][c]);
      }
    }
  }
  if (full_chunks < prepared.chunks) {
    const int64_t offset = full_chunks * kChunkBlocks * kBlock;
    ChunkWeights w;
    for (int c = 0; c < NR; ++c) {
      unpack_chunk<Bits>(p, n0 + c, full_chunks, w);
      for (int r = 0; r < MR; ++r) {
        const __m256 dots = _mm256_cvtepi32_ps(
            chunk_dots<Bits>(BufferedWeights{w}, prepared.x(m0 + r) + offset));
        const __m256 dv = _mm256_load_ps(prepared.block_scale(m0 + r) + full_chunks * kChunkBlocks);
        acc[r][c] = _mm256_fmadd_ps(dots, _mm256_mul_ps(_mm256_load_ps(w.scale), dv), acc[r][c]);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      p.out[(m0 + r) * p.n + n0 + c] =
          hsum(acc[r][c]) + bias_term<Bits>(p, prepared, m0 + r, n0 + c);
    }
  }
}

template <int Bits, int MR>
void direct_columns(const QmmProblem& p, const PreparedRows& prepared, int64_t m0,
                    int64_t n_begin, int64_t n_end) {
  constexpr int NR = MR == 1 ? 2 : 1;
  int64_t n0 = n_begin;
  for (; n0 + NR <= n_end; n0 += NR) {
    direct_tile<Bits, MR, NR>(p, prepared, m0, n0);
  }
  for (; n0 < n_end; ++n0) {
    direct_tile<Bits, MR, 1>(p, prepared, m0, n0);
  }
}

template <int Bits>
void run_bits(const QmmProblem& p, int64_t n_begin, int64_t n_end) {
  const PreparedRows prepared = prepared_rows(p);
  if (p.m <= kDirectMaxRows) {
    // All rows in one pass, so each weight block is read from memory once.
    switch (p.m) {
      case 1: direct_columns<Bits, 1>(p, prepared, 0, n_begin, n_end); break;
      case 2: direct_columns<Bits, 2>(p, prepared, 0, n_begin, n_end); break;
      case 3: direct_columns<Bits, 3>(p, prepared, 0, n_begin, n_end); break;
      case 4: direct_columns<Bits, 4>(p, prepared, 0, n_begin, n_end); break;
      case 5: direct_columns<Bits, 5>(p, prepared, 0, n_begin, n_end); break;
      case 6: direct_columns<Bits, 6>(p, prepared, 0, n_begin, n_end); break;
      case 7: direct_columns<Bits, 7>(p, prepared, 0, n_begin, n_end); break;
      case 8: direct_columns<Bits, 8>(p, prepared, 0, n_begin, n_end); break;
      default: break;
    }
    return;
  }
  for (int64_t m0 = 0; m0 < p.m; m0 += kRowBlock) {
    const int rows = static_cast<int>(p.m - m0 < kRowBlock ? p.m - m0 : kRowBlock);
    int64_t n0 = n_begin;
    for (; n0 + kColumns <= n_end; n0 += kColumns) {
      column_tile<Bits, kColumns>(p, prepared, m0, rows, n0);
    }
    for (; n0 < n_end; ++n0) {
      column_tile<Bits, 1>(p, prepared, m0, rows, n0);
    }
  }
}

bool integer_bits(const QmmProblem& p) {
  return p.bits == 4 || p.bits == 8;
}

int64_t i8_column_chunk(const QmmProblem& p) {
  return integer_bits(p) ? kTaskColumns : kAvx2F32.column_chunk(p);
}

size_t i8_scratch_floats(const QmmProblem& p) {
  return integer_bits(p) ? 0 : kAvx2F32.scratch_floats(p);
}

size_t i8_prepared_bytes(const QmmProblem& p) {
  return integer_bits(p) ? prepared_bytes(p) : 0;
}

void i8_prepare(const QmmProblem& p, void* prepared) {
  prepare_rows(p, prepared);
}

void i8_run(const QmmProblem& p, int64_t n_begin, int64_t n_end, float* scratch) {
  if (p.bits == 4) {
    run_bits<4>(p, n_begin, n_end);
  } else if (p.bits == 8) {
    run_bits<8>(p, n_begin, n_end);
  } else {
    kAvx2F32.run(p, n_begin, n_end, scratch);
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

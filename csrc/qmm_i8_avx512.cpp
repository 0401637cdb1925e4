// Quantized matmul with int8 activations on AVX-512 VNNI (vpdpbusd).
//
// prepare() rounds each 32-element block of every x row to int8 with its own
// scale d = max|x| / 127, the same rounding as the AVX2 variant. It stores the
// row in chunks of four blocks, laid out to match the weight registers.
//
// For every chunk and every column, the kernel builds two registers of 64
// unsigned weight bytes in which 32-bit lane l contains four weights of block
// l / 4. For 4-bit weights they are the chunk's 64 packed bytes, masked to the
// low nibbles (elements 0, 2, ..., 30 of each block) and shifted to the high
// ones (elements 1, 3, ..., 31). For 8-bit weights they are the chunk's 128
// bytes, the first 16 of each block in one register and the last 16 in the
// other.
//
// Two vpdpbusd per row give each lane an exact int32 dot product, and
//   acc += float(dot) * d[block] * scale[column, group]
// adds it in float32. The biases come in as sum_g bias[column, g] * (sum of x
// over group g), from x in float32, and a fixed tree sums the lanes. That is
// five instructions per 128 weights and row, against about 36 for the 4-bit
// bfloat16 tile at one row, so one-row decoding stays memory-bound.
//
// Every operation depends only on the row and the column, in a fixed order,
// so rows are bit-identical whatever the row count and their position.
// Results differ from the AVX2 int8 variant in rounding, because the lanes
// split the blocks differently. Other bit widths run the AVX-512 float32 kernel.
#include "avx512_intrinsics.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "avx512_sum_lanes.h"
#include "half_groups.h"
#include "qmm_problem.h"
#include "static_for.h"

namespace draftwise {
namespace {

#include "qmm_i8_block.h"

constexpr int kBlock = 32;
constexpr int kChunkBlocks = 4;
constexpr int kChunk = kBlock * kChunkBlocks;  // weights per chunk
constexpr int kMaxRows = 9;                    // rows per register tile

bool i8_bits(int bits) { return bits == 4 || bits == 8; }

// 4- and 8-bit problems run here and read float16 groups themselves; other
// widths run the float32 kernel, which gets them widened.
bool i8_reads_half_groups(const QmmProblem& p) { return i8_bits(p.bits); }

// Layout of QmmProblem::prepared, chunk-major so that a tile's rows of one
// chunk sit at fixed offsets from one pointer. Sizes are padded to whole
// chunks and to multiples of 16 groups, and the padding is zero.
//   int8 x[chunks][m][128]: per chunk and row, the 64 bytes that meet the
//     first weight register, then the 64 that meet the second.
//   float d[chunks][m][16]: lane l contains d of block l / 4 of the chunk.
//   float group_sum[m][groups rounded up to 16].
struct Prepared {
  const int8_t* x;
  const float* d;
  const float* group_sum;
  int64_t padded_groups;
};

int64_t chunks_of(const QmmProblem& p) { return (p.k / kBlock + kChunkBlocks - 1) / kChunkBlocks; }

int64_t padded_groups_of(const QmmProblem& p) { return (p.k / p.group_size + 15) / 16 * 16; }

size_t x_bytes(const QmmProblem& p) { return static_cast<size_t>(p.m * chunks_of(p) * kChunk); }

size_t d_bytes(const QmmProblem& p) {
  return static_cast<size_t>(p.m * chunks_of(p) * 16) * sizeof(float);
}

Prepared view_of(const QmmProblem& p, const void* prepared) {
  const auto* base = static_cast<const uint8_t*>(prepared);
  return {reinterpret_cast<const int8_t*>(base), reinterpret_cast<const float*>(base + x_bytes(p)),
          reinterpret_cast<const float*>(base + x_bytes(p) + d_bytes(p)), padded_groups_of(p)};
}

size_t i8_prepared_bytes(const QmmProblem& p) {
  if (!i8_bits(p.bits)) {
    return 0;
  }
  return x_bytes(p) + d_bytes(p) +
         static_cast<size_t>(p.m * padded_groups_of(p)) * sizeof(float);
}

// Returns the offset of element i (0..31) of block j (0..3) in its chunk's 128 bytes.
int slot_of(int bits, int j, int i) {
  if (bits == 4) {
    return (i % 2) * 64 + j * 16 + i / 2;
  }
  return (i / 16) * 64 + j * 16 + i % 16;
}

void i8_prepare(const QmmProblem& p, void* prepared) {
  std::memset(prepared, 0, i8_prepared_bytes(p));
  auto* base = static_cast<uint8_t*>(prepared);
  auto* x_out = reinterpret_cast<int8_t*>(base);
  auto* d_out = reinterpret_cast<float*>(base + x_bytes(p));
  auto* sum_out = reinterpret_cast<float*>(base + x_bytes(p) + d_bytes(p));
  const Prepared view = view_of(p, prepared);
  const int64_t blocks = p.k / kBlock;
  const int64_t groups = p.k / p.group_size;
  for (int64_t m = 0; m < p.m; ++m) {
    const float* x = p.x + m * p.k;
    for (int64_t b = 0; b < blocks; ++b) {
      int8_t q[kBlock];
      const float d = round_block_to_int8(x + b * kBlock, q);
      const int64_t chunk = b / kChunkBlocks;
      const int j = static_cast<int>(b % kChunkBlocks);
      int8_t* row = x_out + (chunk * p.m + m) * kChunk;
      for (int i = 0; i < kBlock; ++i) {
        row[slot_of(p.bits, j, i)] = q[i];
      }
      float* d_row = d_out + (chunk * p.m + m) * 16;
      for (int lane = 0; lane < 4; ++lane) {
        d_row[j * 4 + lane] = d;
      }
    }
    sum_groups(x, groups, p.group_size, sum_out + m * view.padded_groups);
  }
}

// Loads the two weight registers of one column's chunk (see the file comment).
template <int BITS>
inline void chunk_weights(const uint8_t* chunk, __m512i& first, __m512i& second) {
  if constexpr (BITS == 4) {
    const __m512i bytes = _mm512_loadu_si512(chunk);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    first = _mm512_and_si512(bytes, low4);
    second = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low4);
  } else {
    const __m512i a = _mm512_loadu_si512(chunk);
    const __m512i b = _mm512_loadu_si512(chunk + 64);
    first = _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    second = _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(3, 1, 3, 1));
  }
}

// Group scales and biases come as float (float32) or uint16_t (float16
// bits, widened exactly). Every function below gives the same floats for
// both when the values are the same.

// Returns the group value at `groups[i]` (for the cold paths).
inline float group_value(const float* groups, int64_t i) { return groups[i]; }

inline float group_value(const uint16_t* groups, int64_t i) {
  float value;
  widen_half(groups + i, &value, 1);
  return value;
}

// Returns the first COUNT (1, 2 or 4) group values in the low lanes, reading
// exactly COUNT values.
template <int COUNT>
inline __m128 load_groups(const float* groups) {
  if constexpr (COUNT == 4) {
    return _mm_loadu_ps(groups);
  } else if constexpr (COUNT == 2) {
    return _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(groups)));
  } else {
    return _mm_set_ss(*groups);
  }
}

template <int COUNT>
inline __m128 load_groups(const uint16_t* groups) {
#if defined(DRAFTWISE_AVX512_SIMDE)
  float values[4] = {};
  widen_half(groups, values, COUNT);
  return _mm_loadu_ps(values);
#else
  uint64_t bits = 0;
  std::memcpy(&bits, groups, COUNT * sizeof(uint16_t));
  return _mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<int64_t>(bits)));
#endif
}

// Returns 16 consecutive group values.
inline __m512 load16_groups(const float* groups) { return _mm512_loadu_ps(groups); }

inline __m512 load16_groups(const uint16_t* groups) {
#if defined(DRAFTWISE_AVX512_SIMDE)
  float values[16];
  widen_half(groups, values, 16);
  return _mm512_loadu_ps(values);
#else
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(groups)));
#endif
}

// Returns the scales of a chunk's four blocks, block l / 4 in lane l, from
// `scales` at the chunk's first group (GB blocks per group).
template <int GB, typename Group>
inline __m512 chunk_scales(const Group* scales) {
  if constexpr (GB == 1) {
    const __m512 four = _mm512_castps128_ps512(load_groups<4>(scales));
    const __m512i index = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    return _mm512_permutexvar_ps(index, four);
  } else if constexpr (GB == 2) {
    const __m512 two = _mm512_castps128_ps512(load_groups<2>(scales));
    const __m512i index = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    return _mm512_permutexvar_ps(index, two);
  } else {
    return _mm512_broadcastss_ps(load_groups<1>(scales));
  }
}

// Returns whichever of a problem's float32 or float16 group arrays has type Group.
template <typename Group>
const Group* groups_as(const float* float32_groups, const uint16_t* float16_groups) {
  if constexpr (std::is_same_v<Group, float>) {
    return float32_groups;
  } else {
    return float16_groups;
  }
}

// Computes column n of rows [m0, m0 + MR), GB blocks per group.
//
// One column at a time: the weights, scales and biases are then each read
// in increasing address order, which the hardware prefetchers follow at
// close to full memory bandwidth. In a streaming test on the 2-core Zen 4
// machine of docs/benchmarks.md that order read 32.8 GB/s, and 8 rows of
// 768 bytes read in turn, as a tile of 8 columns reads them, 20.8 GB/s.
template <int BITS, int GB, int MR, typename Group>
void i8_column(const QmmProblem& p, const Prepared& prepared, int64_t m0, int64_t n) {
  constexpr int kChunkBytes = kChunk * BITS / 8;
  const int64_t blocks = p.k / kBlock;
  const int64_t full_chunks = blocks / kChunkBlocks;
  const int64_t groups = p.k / p.group_size;
  const uint8_t* weights = reinterpret_cast<const uint8_t*>(p.weight) + n * (p.k * BITS / 8);
  const Group* scales = groups_as<Group>(p.scales, p.half_scales) + n * groups;
  // Row r of chunk c: x + c * x_stride + r * kChunk, d + c * d_stride + r * 16.
  const int8_t* x = prepared.x + m0 * kChunk;
  const float* d = prepared.d + m0 * 16;
  const int64_t x_stride = p.m * kChunk;
  const int64_t d_stride = p.m * 16;

  __m512 acc[MR];
  for (int r = 0; r < MR; ++r) {
    acc[r] = _mm512_setzero_ps();
  }
  auto step = [&](int64_t chunk, __m512i first, __m512i second, __m512 scale) {
    const int8_t* x_chunk = x + chunk * x_stride;
    const float* d_chunk = d + chunk * d_stride;
    for (int r = 0; r < MR; ++r) {
      const int8_t* xr = x_chunk + r * kChunk;
      __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), first, _mm512_loadu_si512(xr));
      dot = _mm512_dpbusd_epi32(dot, second, _mm512_loadu_si512(xr + 64));
      const __m512 dv = _mm512_loadu_ps(d_chunk + r * 16);
      acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), dv), scale, acc[r]);
    }
  };

  for (int64_t chunk = 0; chunk < full_chunks; ++chunk) {
    __m512i first;
    __m512i second;
    chunk_weights<BITS>(weights + chunk * kChunkBytes, first, second);
    step(chunk, first, second, chunk_scales<GB>(scales + chunk * kChunkBlocks / GB));
  }
  if (full_chunks * kChunkBlocks < blocks) {
    // The last, partial chunk: its weights and scales copied next to zeros,
    // then the same instructions as a full chunk.
    alignas(64) uint8_t bytes[kChunkBytes] = {};
    std::memcpy(bytes, weights + full_chunks * kChunkBytes,
                static_cast<size_t>((blocks - full_chunks * kChunkBlocks) * kBlock * BITS / 8));
    float block_scales[kChunkBlocks] = {};
    const int64_t first_group = full_chunks * kChunkBlocks / GB;
    for (int64_t g = first_group; g < groups; ++g) {
      block_scales[g - first_group] = group_value(scales, g);
    }
    __m512i first;
    __m512i second;
    chunk_weights<BITS>(bytes, first, second);
    step(full_chunks, first, second, chunk_scales<GB>(block_scales));
  }

  // Biases: sum over groups of bias * group sum of x, 16 groups per step.
  const Group* bias = groups_as<Group>(p.biases, p.half_biases) + n * groups;
  for (int r = 0; r < MR; ++r) {
    const float* group_sum = prepared.group_sum + (m0 + r) * prepared.padded_groups;
    __m512 terms = _mm512_setzero_ps();
    int64_t g = 0;
    for (; g + 16 <= groups; g += 16) {
      terms = _mm512_fmadd_ps(load16_groups(bias + g), _mm512_loadu_ps(group_sum + g), terms);
    }
    if (g < groups) {
      alignas(64) float last[16] = {};
      for (int64_t i = g; i < groups; ++i) {
        last[i - g] = group_value(bias, i);
      }
      terms = _mm512_fmadd_ps(_mm512_load_ps(last), _mm512_loadu_ps(group_sum + g), terms);
    }
    p.out[(m0 + r) * p.n + n] = sum_lanes(_mm512_add_ps(acc[r], terms));
  }
}

template <int BITS, int GB, int MR, typename Group>
void i8_columns(const QmmProblem& p, const Prepared& prepared, int64_t m0, int64_t n_begin,
                int64_t n_end) {
  for (int64_t n = n_begin; n < n_end; ++n) {
    i8_column<BITS, GB, MR, Group>(p, prepared, m0, n);
  }
}

template <int BITS, int MR, typename Group>
void i8_group_sizes(const QmmProblem& p, const Prepared& prepared, int64_t m0, int64_t n_begin,
                    int64_t n_end) {
  switch (p.group_size / kBlock) {
    case 1:
      i8_columns<BITS, 1, MR, Group>(p, prepared, m0, n_begin, n_end);
      break;
    case 2:
      i8_columns<BITS, 2, MR, Group>(p, prepared, m0, n_begin, n_end);
      break;
    default:
      i8_columns<BITS, 4, MR, Group>(p, prepared, m0, n_begin, n_end);
      break;
  }
}

template <int BITS, int MR>
void i8_groups(const QmmProblem& p, const Prepared& prepared, int64_t m0, int64_t n_begin,
               int64_t n_end) {
  if (p.half_scales != nullptr) {
    i8_group_sizes<BITS, MR, uint16_t>(p, prepared, m0, n_begin, n_end);
  } else {
    i8_group_sizes<BITS, MR, float>(p, prepared, m0, n_begin, n_end);
  }
}

// Computes rows [m0, m0 + rows), with 1 <= rows <= kMaxRows, for columns [n_begin, n_end).
void i8_row_tile(const QmmProblem& p, const Prepared& prepared, int64_t m0, int rows,
                 int64_t n_begin, int64_t n_end) {
  static_for<kMaxRows + 1>([&](auto count) {
    if (count != 0 && rows == count) {
      if (p.bits == 4) {
        i8_groups<4, count>(p, prepared, m0, n_begin, n_end);
      } else {
        i8_groups<8, count>(p, prepared, m0, n_begin, n_end);
      }
    }
  });
}

// Columns per pool task: about kTaskBytes of weights and groups, and at
// least kMinTasks tasks per matrix so that both threads stay busy. A task
// streams its columns' bytes in address order, and every task start makes the
// hardware prefetchers pick up new streams. Tasks of 32 columns (24 KiB of a
// 4-bit 1,536-wide matrix) made one-row decoding about 10% slower on the
// 2-core Zen 4 machine of docs/benchmarks.md. Each column is computed on its
// own, so the split never changes a bit.
constexpr int64_t kTaskBytes = int64_t{512} << 10;
constexpr int64_t kMinTasks = 8;

int64_t i8_column_chunk(const QmmProblem& p) {
  if (!i8_bits(p.bits)) {
    return kAvx512F32.column_chunk(p);
  }
  // Weights plus float32 scales and biases (float16 groups read half that).
  const int64_t column_bytes = p.k * p.bits / 8 + (p.k / p.group_size) * 8;
  const int64_t by_bytes = std::max<int64_t>(kTaskBytes / column_bytes, 1);
  const int64_t by_tasks = std::max<int64_t>((p.n + kMinTasks - 1) / kMinTasks, 1);
  return std::min(by_bytes, by_tasks);
}

size_t i8_scratch_floats(const QmmProblem& p) {
  return i8_bits(p.bits) ? 0 : kAvx512F32.scratch_floats(p);
}

void i8_run(const QmmProblem& p, int64_t n_begin, int64_t n_end, float* scratch) {
  if (!i8_bits(p.bits)) {
    kAvx512F32.run(p, n_begin, n_end, scratch);
    return;
  }
  const Prepared prepared = view_of(p, p.prepared);
  // Up to 9 rows run as one register tile. More rows run in tiles of 8, the rest last.
  if (p.m <= kMaxRows) {
    i8_row_tile(p, prepared, 0, static_cast<int>(p.m), n_begin, n_end);
    return;
  }
  int64_t m0 = 0;
  for (; m0 + 8 <= p.m; m0 += 8) {
    i8_row_tile(p, prepared, m0, 8, n_begin, n_end);
  }
  if (m0 < p.m) {
    i8_row_tile(p, prepared, m0, static_cast<int>(p.m - m0), n_begin, n_end);
  }
}

}  // namespace

extern const KernelVariant kAvx512I8 = {
    "avx512_i8", i8_column_chunk, i8_scratch_floats, i8_run, i8_prepared_bytes, i8_prepare,
    i8_reads_half_groups,
};

}  // namespace draftwise

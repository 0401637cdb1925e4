// Quantized matmul with int8 activations on AVX-512 VNNI (vpdpbusd).
//
// prepare() rounds each 32-element block of every x row to int8 with its own
// scale d = max|x| / 127, the same rounding as the AVX2 variant. It stores the
// rows in the order the weight registers below meet them.
//
// The weights are read in super-chunks of four 64-byte loads L0..L3: 512
// weights (16 blocks) at 4 bits, 256 (8 blocks) at 8 bits. A 4 x 4 transpose
// of 32-bit lanes inside each 128-bit quarter (eight unpack instructions)
// gives four registers T0..T3 in which lane l = 4p + i contains four bytes from
// quarter p of load i. Each lane then meets the bytes of one block only:
// block 4i + p at 4 bits, whose 16 bytes fill one quarter, and block 2i + p/2
// at 8 bits, whose 32 bytes fill two. At 4 bits, the low and high nibbles of
// T0..T3 make eight registers of unsigned weights, at 8 bits T0..T3 are four.
//
// For each row, eight (4-bit) or four (8-bit) vpdpbusd then sum a whole
// super-chunk in int32 lanes, exactly. One conversion, one multiply by the
// row's block scales d and one FMA with the column's block scales add it in
// float32:
//   acc += float(dot) * d[block of lane] * scale[column, group of lane]
// The biases come in as sum_g bias[column, g] * (sum of x over group g), from
// x in float32, and a fixed tree sums the lanes. Per row that is eight
// vpdpbusd and three float instructions per 512 weights at 4 bits. A layout
// with four lanes per block needs twelve float instructions, and that float
// work, more than the loads, limited verification with many rows.
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
#include <vector>

#include "avx512_sum_lanes.h"
#include "half_groups.h"
#include "qmm_problem.h"
#include "static_for.h"

namespace draftwise {
namespace {

#include "qmm_i8_block.h"

constexpr int kBlock = 32;
constexpr int kSuperBytes = 256;  // weight bytes per super-chunk: four 64-byte loads
constexpr int kMaxRows = 9;       // rows per register tile

bool i8_bits(int bits) { return bits == 4 || bits == 8; }

// 4- and 8-bit problems run here and read float16 groups themselves; other
// widths run the float32 kernel, which gets them widened.
bool i8_reads_half_groups(const QmmProblem& p) { return i8_bits(p.bits); }

// Blocks and weights per super-chunk, and vpdpbusd registers per row.
constexpr int super_blocks(int bits) { return bits == 4 ? 16 : 8; }
constexpr int super_weights(int bits) { return super_blocks(bits) * kBlock; }
constexpr int super_registers(int bits) { return bits == 4 ? 8 : 4; }

// Returns the block (0 .. super_blocks - 1) that lane l of every weight
// register of a super-chunk covers (see the file comment).
constexpr int block_of_lane(int bits, int lane) {
  const int quarter = lane / 4;
  const int load = lane % 4;
  return bits == 4 ? 4 * load + quarter : 2 * load + quarter / 2;
}

// Returns the element of its block that byte t of lane l of vpdpbusd
// register r (0 .. super_registers - 1) multiplies.
constexpr int element_of_slot(int bits, int r, int lane, int t) {
  if (bits == 4) {
    // Register r = 2q + h: nibble h of bytes 4q .. 4q + 3 of the block.
    return 2 * (4 * (r / 2) + t) + r % 2;
  }
  // Register q: bytes 4q .. 4q + 3 of the block's half that quarter l / 4 contains.
  return 16 * ((lane / 4) % 2) + 4 * r + t;
}

// Layout of QmmProblem::prepared, super-chunk-major so that a tile's rows of
// one super-chunk sit at fixed offsets from one pointer. Sizes are padded to
// whole super-chunks and to multiples of 16 groups, and the padding is zero.
//   int8 x[supers][m][super_weights]: per super-chunk and row, 64 bytes per
//     vpdpbusd register, byte 4l + t of register r as element_of_slot returns.
//   float d[supers][m][16]: lane l contains d of block_of_lane(l).
//   float group_sum[m][groups rounded up to 16].
struct Prepared {
  const int8_t* x;
  const float* d;
  const float* group_sum;
  int64_t padded_groups;
};

int64_t supers_of(const QmmProblem& p) {
  const int64_t blocks = p.k / kBlock;
  return (blocks + super_blocks(p.bits) - 1) / super_blocks(p.bits);
}

int64_t padded_groups_of(const QmmProblem& p) { return (p.k / p.group_size + 15) / 16 * 16; }

size_t x_bytes(const QmmProblem& p) {
  return static_cast<size_t>(p.m * supers_of(p) * super_weights(p.bits));
}

size_t d_bytes(const QmmProblem& p) {
  return static_cast<size_t>(p.m * supers_of(p) * 16) * sizeof(float);
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

// For each byte of a row's super-chunk in the prepared layout, the element
// of the super-chunk (block * 32 + element) that it contains.
template <int BITS>
struct SlotTable {
  uint16_t element[super_weights(BITS)];
  constexpr SlotTable() : element() {
    for (int r = 0; r < super_registers(BITS); ++r) {
      for (int lane = 0; lane < 16; ++lane) {
        for (int t = 0; t < 4; ++t) {
          element[r * 64 + lane * 4 + t] = static_cast<uint16_t>(
              block_of_lane(BITS, lane) * kBlock + element_of_slot(BITS, r, lane, t));
        }
      }
    }
  }
};

// round_block_to_int8 (qmm_i8_block.h) in AVX-512 registers, with the same
// result for finite values: the maximum is exact in any order, and the
// product and its rounding to nearest even are the same IEEE operations.
// SIMDe 0.7.4 lacks some of these instructions, so the emulated build runs
// the scalar version.
#if defined(DRAFTWISE_AVX512_SIMDE)
inline float round_block_to_int8_avx512(const float* src, int8_t* q) {
  return round_block_to_int8(src, q);
}
#else
inline float round_block_to_int8_avx512(const float* src, int8_t* q) {
  const __m512 low = _mm512_loadu_ps(src);
  const __m512 high = _mm512_loadu_ps(src + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(low), _mm512_abs_ps(high)));
  const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
  const __m512 scale = _mm512_set1_ps(inverse);
  constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m512i q_low = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(low, scale), kNearest));
  const __m512i q_high =
      _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(high, scale), kNearest));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtepi32_epi8(q_low));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtepi32_epi8(q_high));
  return amax / 127.0f;
}
#endif

// Prepares rows [m_begin, m_end) into a zeroed buffer of i8_prepared_bytes.
template <int BITS>
void i8_prepare_bits(const QmmProblem& p, void* prepared, int64_t m_begin, int64_t m_end) {
  static constexpr SlotTable<BITS> kSlots;
  constexpr int kBlocks = super_blocks(BITS);
  constexpr int kWeights = super_weights(BITS);
  auto* base = static_cast<uint8_t*>(prepared);
  auto* x_out = reinterpret_cast<int8_t*>(base);
  auto* d_out = reinterpret_cast<float*>(base + x_bytes(p));
  auto* sum_out = reinterpret_cast<float*>(base + x_bytes(p) + d_bytes(p));
  const Prepared view = view_of(p, prepared);
  const int64_t blocks = p.k / kBlock;
  const int64_t groups = p.k / p.group_size;
  const int64_t supers = supers_of(p);
  std::vector<int8_t> q(static_cast<size_t>(supers * kWeights), 0);
  std::vector<float> d(static_cast<size_t>(supers * kBlocks), 0.0f);
  for (int64_t m = m_begin; m < m_end; ++m) {
    const float* x = p.x + m * p.k;
    for (int64_t b = 0; b < blocks; ++b) {
      d[b] = round_block_to_int8_avx512(x + b * kBlock, q.data() + b * kBlock);
    }
    for (int64_t s = 0; s < supers; ++s) {
      int8_t* row = x_out + (s * p.m + m) * kWeights;
      float* d_row = d_out + (s * p.m + m) * 16;
      const int8_t* q_super = q.data() + s * kWeights;
      for (int lane = 0; lane < 16; ++lane) {
        d_row[lane] = d[s * kBlocks + block_of_lane(BITS, lane)];
      }
      for (int slot = 0; slot < kWeights; ++slot) {
        row[slot] = q_super[kSlots.element[slot]];
      }
    }
    sum_groups(x, groups, p.group_size, sum_out + m * view.padded_groups);
  }
}

void i8_prepare_rows(const QmmProblem& p, void* prepared, int64_t m_begin, int64_t m_end) {
  if (p.bits == 4) {
    i8_prepare_bits<4>(p, prepared, m_begin, m_end);
  } else {
    i8_prepare_bits<8>(p, prepared, m_begin, m_end);
  }
}

void i8_prepare(const QmmProblem& p, void* prepared) {
  std::memset(prepared, 0, i8_prepared_bytes(p));
  i8_prepare_rows(p, prepared, 0, p.m);
}

// Writes the vpdpbusd registers of the super-chunk at `bytes` (see the
// file comment).
template <int BITS>
[[gnu::always_inline]] inline void super_weights_of(const uint8_t* bytes, __m512i* registers) {
  const __m512i l0 = _mm512_loadu_si512(bytes);
  const __m512i l1 = _mm512_loadu_si512(bytes + 64);
  const __m512i l2 = _mm512_loadu_si512(bytes + 128);
  const __m512i l3 = _mm512_loadu_si512(bytes + 192);
  const __m512i a0 = _mm512_unpacklo_epi32(l0, l1);
  const __m512i a1 = _mm512_unpackhi_epi32(l0, l1);
  const __m512i a2 = _mm512_unpacklo_epi32(l2, l3);
  const __m512i a3 = _mm512_unpackhi_epi32(l2, l3);
  const __m512i t[4] = {_mm512_unpacklo_epi64(a0, a2), _mm512_unpackhi_epi64(a0, a2),
                        _mm512_unpacklo_epi64(a1, a3), _mm512_unpackhi_epi64(a1, a3)};
  if constexpr (BITS == 4) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    for (int q = 0; q < 4; ++q) {
      registers[2 * q] = _mm512_and_si512(t[q], low4);
      registers[2 * q + 1] = _mm512_and_si512(_mm512_srli_epi16(t[q], 4), low4);
    }
  } else {
    for (int q = 0; q < 4; ++q) {
      registers[q] = t[q];
    }
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

// Returns the first COUNT (2, 4, 8 or 16) group values in the low lanes,
// reading exactly COUNT values.
template <int COUNT>
inline __m512 load_groups(const float* groups) {
  if constexpr (COUNT == 16) {
    return _mm512_loadu_ps(groups);
  } else if constexpr (COUNT == 8) {
    return _mm512_castps256_ps512(_mm256_loadu_ps(groups));
  } else if constexpr (COUNT == 4) {
    return _mm512_castps128_ps512(_mm_loadu_ps(groups));
  } else {
    return _mm512_castps128_ps512(
        _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(groups))));
  }
}

template <int COUNT>
inline __m512 load_groups(const uint16_t* groups) {
#if defined(DRAFTWISE_AVX512_SIMDE)
  float values[16] = {};
  widen_half(groups, values, COUNT);
  return _mm512_loadu_ps(values);
#else
  if constexpr (COUNT == 16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(groups)));
  } else if constexpr (COUNT == 8) {
    return _mm512_castps256_ps512(
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(groups))));
  } else {
    uint64_t bits = 0;
    std::memcpy(&bits, groups, COUNT * sizeof(uint16_t));
    return _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<int64_t>(bits))));
  }
#endif
}

// Returns 16 consecutive group values.
template <typename Group>
inline __m512 load16_groups(const Group* groups) {
  return load_groups<16>(groups);
}

// Returns the scales of a super-chunk's lanes, from `scales` at its first
// group (GB blocks per group): lane l gets the group of block_of_lane(l).
template <int BITS, int GB, typename Group>
[[gnu::always_inline]] inline __m512 super_scales(const Group* scales) {
  constexpr int kCount = super_blocks(BITS) / GB;
  const __m512i index = _mm512_setr_epi32(
      block_of_lane(BITS, 0) / GB, block_of_lane(BITS, 1) / GB, block_of_lane(BITS, 2) / GB,
      block_of_lane(BITS, 3) / GB, block_of_lane(BITS, 4) / GB, block_of_lane(BITS, 5) / GB,
      block_of_lane(BITS, 6) / GB, block_of_lane(BITS, 7) / GB, block_of_lane(BITS, 8) / GB,
      block_of_lane(BITS, 9) / GB, block_of_lane(BITS, 10) / GB, block_of_lane(BITS, 11) / GB,
      block_of_lane(BITS, 12) / GB, block_of_lane(BITS, 13) / GB, block_of_lane(BITS, 14) / GB,
      block_of_lane(BITS, 15) / GB);
  return _mm512_permutexvar_ps(index, load_groups<kCount>(scales));
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

// Adds super-chunks [s_begin, s_end) of column n to acc[r] for rows
// [m0, m0 + MR), GB blocks per group. Super-chunk full_supers, where it
// exists, is the last and partial one. Unless `ahead` is null, super-chunk s
// also prefetches the 256 bytes at ahead + s * kSuperBytes into
// L1, or into L2 only where AHEAD_TO_L1 is false (see i8_columns).
template <int BITS, int GB, int MR, typename Group, bool AHEAD_TO_L1 = true>
[[gnu::always_inline]] inline void column_supers(const QmmProblem& p, const Prepared& prepared, int64_t m0, int64_t n,
                          int64_t s_begin, int64_t s_end, __m512* acc,
                          const uint8_t* ahead = nullptr) {
  constexpr int kBlocks = super_blocks(BITS);
  constexpr int kRegisters = super_registers(BITS);
  constexpr int kWeights = super_weights(BITS);
  const int64_t blocks = p.k / kBlock;
  const int64_t full_supers = blocks / kBlocks;
  const int64_t groups = p.k / p.group_size;
  const uint8_t* weights = reinterpret_cast<const uint8_t*>(p.weight) + n * (p.k * BITS / 8);
  const Group* scales = groups_as<Group>(p.scales, p.half_scales) + n * groups;
  // Row r of super-chunk s: x + s * x_stride + r * kWeights, d + s * d_stride + r * 16.
  const int8_t* x = prepared.x + m0 * kWeights;
  const float* d = prepared.d + m0 * 16;
  const int64_t x_stride = p.m * kWeights;
  const int64_t d_stride = p.m * 16;

  __m512 sums[MR];
  for (int r = 0; r < MR; ++r) {
    sums[r] = acc[r];
  }
  auto step = [&](int64_t super, const __m512i* w, __m512 scale) __attribute__((always_inline)) {
    const int8_t* x_super = x + super * x_stride;
    const float* d_super = d + super * d_stride;
    // Rows in groups of three, each row's sum split into two or four
    // chains, so that several vpdpbusd chains are in flight. Integer sums are exact, so how the
    // chains split a row's sum never changes its value.
    static_for<(MR + 2) / 3>([&](auto group) __attribute__((always_inline)) {
      constexpr int kFirst = 3 * group;
      constexpr int kRows = MR - kFirst < 3 ? MR - kFirst : 3;
      constexpr int kChains = kRows == 1 ? 4 : 2;
      __m512i dot[kRows][kChains];
      for (int i = 0; i < kRows; ++i) {
        for (int h = 0; h < kChains; ++h) {
          dot[i][h] = _mm512_setzero_si512();
        }
      }
      for (int j = 0; j < kRegisters; ++j) {
        for (int i = 0; i < kRows; ++i) {
          const int8_t* xr = x_super + (kFirst + i) * kWeights + 64 * j;
          dot[i][j % kChains] =
              _mm512_dpbusd_epi32(dot[i][j % kChains], w[j], _mm512_loadu_si512(xr));
        }
      }
      for (int i = 0; i < kRows; ++i) {
        __m512i sum = dot[i][0];
        for (int h = 1; h < kChains; ++h) {
          sum = _mm512_add_epi32(sum, dot[i][h]);
        }
        const __m512 dv = _mm512_loadu_ps(d_super + (kFirst + i) * 16);
        sums[kFirst + i] =
            _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sum), dv), scale, sums[kFirst + i]);
      }
    });
  };

  const int64_t full_end = std::min(s_end, full_supers);
  for (int64_t super = s_begin; super < full_end; ++super) {
    if (ahead != nullptr) {
      const char* line = reinterpret_cast<const char*>(ahead + super * kSuperBytes);
      for (int i = 0; i < kSuperBytes / 64; ++i) {
        if constexpr (AHEAD_TO_L1) {
          _mm_prefetch(line + 64 * i, _MM_HINT_T0);
        } else {
          _mm_prefetch(line + 64 * i, _MM_HINT_T1);
        }
      }
    }
    __m512i w[kRegisters];
    super_weights_of<BITS>(weights + super * kSuperBytes, w);
    step(super, w, super_scales<BITS, GB>(scales + super * kBlocks / GB));
  }
  if (s_end > full_supers) {
    // The last, partial super-chunk: its weights and scales copied next to
    // zeros, then the same instructions as a full one.
    alignas(64) uint8_t bytes[kSuperBytes] = {};
    std::memcpy(bytes, weights + full_supers * kSuperBytes,
                static_cast<size_t>((blocks - full_supers * kBlocks) * kBlock * BITS / 8));
    Group block_scales[kBlocks / GB] = {};
    const int64_t first_group = full_supers * kBlocks / GB;
    std::memcpy(block_scales, scales + first_group,
                static_cast<size_t>(groups - first_group) * sizeof(Group));
    __m512i w[kRegisters];
    super_weights_of<BITS>(bytes, w);
    step(full_supers, w, super_scales<BITS, GB>(block_scales));
  }
  for (int r = 0; r < MR; ++r) {
    acc[r] = sums[r];
  }
}

// Adds column n's biases, sum over groups of bias * group sum of x, 16 groups
// per step, to acc[r], sums its lanes and writes row r to tile[r * stride].
template <int MR, typename Group>
[[gnu::always_inline]] inline void column_finish(const QmmProblem& p, const Prepared& prepared, int64_t m0, int64_t n,
                          __m512* acc, float* tile, int64_t stride) {
  const int64_t groups = p.k / p.group_size;
  const Group* bias = groups_as<Group>(p.biases, p.half_biases) + n * groups;
  const float* group_sum = prepared.group_sum + m0 * prepared.padded_groups;
  int64_t g = 0;
  for (; g + 16 <= groups; g += 16) {
    const __m512 b = load16_groups(bias + g);
    for (int r = 0; r < MR; ++r) {
      acc[r] = _mm512_fmadd_ps(b, _mm512_loadu_ps(group_sum + r * prepared.padded_groups + g),
                               acc[r]);
    }
  }
  if (g < groups) {
    alignas(64) float last[16] = {};
    for (int64_t i = g; i < groups; ++i) {
      last[i - g] = group_value(bias, i);
    }
    const __m512 b = _mm512_load_ps(last);
    for (int r = 0; r < MR; ++r) {
      acc[r] = _mm512_fmadd_ps(b, _mm512_loadu_ps(group_sum + r * prepared.padded_groups + g),
                               acc[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    tile[r * stride] = sum_lanes(acc[r]);
  }
}

// Bytes of prepared x rows (int8 values and block scales) that a tile keeps
// in L1 while it walks its columns: most of a 32 KiB L1 data cache, as Zen 4
// and recent Intel cores have (or more).
constexpr int64_t kXBudget = int64_t{20} << 10;

// Rows whose prepared x takes more bytes than this are walked in segments
// of kXBudget. Two rows of an 8,960-wide input (20.2 KiB at 4 bits, 22.4 KiB
// at 8) ran faster in one pass with the prefetch below than in segments.
constexpr int64_t kSegmentAbove = int64_t{24} << 10;

// How many column pieces ahead the segmented walk prefetches. Of 1, 2, 3, 5
// and 8, measured on the 2-core Zen 4 machine, 3 was fastest, by a few
// percent over 1 and 2.
constexpr int64_t kAheadPieces = 3;

// How many super-chunks (2 KiB) ahead a one-pass column of several rows
// prefetches its own weights into L2. Near a column's end that reaches into
// the next column, and past the matrix's last column beyond the weights,
// which is harmless because a prefetch never faults.
constexpr int64_t kAheadSupers = 8;

// Computes columns [n_begin, n_end) of rows [m0, m0 + MR).
//
// Columns are taken 16 at a time, and the results go to a small tile first
// and out in runs of 16. The rows of `out` lie a multiple of 4 KiB apart for
// many widths, so column-by-column stores of several rows would meet in few
// L1 sets.
//
// Where the rows' prepared x fits in kSegmentAbove, each column runs from its
// first super-chunk to its last. The weights, scales and biases are then read
// in increasing address order. The hardware prefetchers follow that at close
// to full memory bandwidth: 32.8 GB/s in a streaming test on the 2-core Zen 4
// machine of docs/benchmarks.md, against 20.8 GB/s for 8 interleaved streams.
// With several rows the prepared x competes with that stream for L1, and
// prefetching the stream kAheadSupers ahead into L2 made a forward pass over 2
// rows 4-5% faster, and over 8 or 9 rows 3-4%. Where x is larger (several rows
// of a wide input, such as the down projection), the tile's 16 columns walk the
// super-chunks in segments whose x fits, so that x is read from L1 rather than
// L2. Each column's piece of a segment is then short (12 cache lines for 9
// rows of 4-bit weights), and 16 of them are read in turn. The hardware
// prefetchers do not follow that many short streams, so each piece prefetches
// the piece read kAheadPieces later. On the 2-core Zen 4 machine that took 14 down
// projections over 9 rows from 16.4 to 12.5 ms (4-bit) and from 22.5 to 14.4
// ms (8-bit). Either way each column adds its super-chunks in the same order,
// so the split never changes a bit.
template <int BITS, int GB, int MR, typename Group>
void i8_columns(const QmmProblem& p, const Prepared& prepared, int64_t m0, int64_t n_begin,
                int64_t n_end) {
  constexpr int64_t kTileColumns = 16;
  constexpr int64_t kRowSuperBytes = super_weights(BITS) + 16 * sizeof(float);
  const int64_t supers = supers_of(p);
  const int64_t segment = std::max<int64_t>(kXBudget / (MR * kRowSuperBytes), 1);
  alignas(64) float tile[MR][kTileColumns];
  __m512 acc[kTileColumns][MR];
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kTileColumns) {
    const int64_t count = std::min(kTileColumns, n_end - n0);
    if (segment >= supers || MR * kRowSuperBytes * supers <= kSegmentAbove) {
      for (int64_t c = 0; c < count; ++c) {
        __m512 sums[MR];
        for (int r = 0; r < MR; ++r) {
          sums[r] = _mm512_setzero_ps();
        }
        const uint8_t* ahead =
            MR == 1 ? nullptr
                    : reinterpret_cast<const uint8_t*>(p.weight) + (n0 + c) * (p.k * BITS / 8) +
                          kAheadSupers * kSuperBytes;
        column_supers<BITS, GB, MR, Group, false>(p, prepared, m0, n0 + c, 0, supers, sums,
                                                  ahead);
        column_finish<MR, Group>(p, prepared, m0, n0 + c, sums, &tile[0][c], kTileColumns);
      }
    } else {
      for (int64_t c = 0; c < count; ++c) {
        for (int r = 0; r < MR; ++r) {
          acc[c][r] = _mm512_setzero_ps();
        }
      }
      const auto* weight = reinterpret_cast<const uint8_t*>(p.weight);
      const int64_t column_bytes = p.k * BITS / 8;
      for (int64_t s0 = 0; s0 < supers; s0 += segment) {
        const int64_t s1 = std::min(supers, s0 + segment);
        for (int64_t c = 0; c < count; ++c) {
          // The piece kAheadPieces later: the same segment of a later column,
          // or past the tile's last column the next segment of an early one.
          // ahead + s * kSuperBytes is super-chunk s's place in that piece.
          const int64_t later = c + kAheadPieces;
          const uint8_t* ahead = nullptr;
          if (later < count) {
            ahead = weight + (n0 + later) * column_bytes;
          } else if (s1 < supers) {
            ahead = weight + (n0 + later - count) * column_bytes + (s1 - s0) * kSuperBytes;
          }
          column_supers<BITS, GB, MR, Group>(p, prepared, m0, n0 + c, s0, s1, acc[c], ahead);
        }
      }
      for (int64_t c = 0; c < count; ++c) {
        column_finish<MR, Group>(p, prepared, m0, n0 + c, acc[c], &tile[0][c], kTileColumns);
      }
    }
    for (int r = 0; r < MR; ++r) {
      std::memcpy(p.out + (m0 + r) * p.n + n0, tile[r], static_cast<size_t>(count) * sizeof(float));
    }
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
    i8_reads_half_groups, i8_prepare_rows,
};

}  // namespace draftwise

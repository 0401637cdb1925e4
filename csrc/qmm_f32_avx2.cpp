// Quantized matmul with float32 math on AVX2 + FMA (8 lanes).
// Compiled with -mavx2 -mfma; selected at run time only when the CPU has both.
#include <immintrin.h>

#include <array>
#include <cstdint>
#include <utility>

#include "qmm_problem.h"

namespace draftwise {
namespace {

// Byte shuffle that gives lane e (element e of the vector) the two bytes
// holding bits [e * bits, e * bits + bits) of an 8-byte window starting
// `delta` bytes before the vector's first element. Index -128 writes zero.
constexpr std::array<int8_t, 32> make_shuffle(int bits, int delta) {
  std::array<int8_t, 32> control{};
  for (int i = 0; i < 32; ++i) {
    const int element = (i / 16) * 4 + (i % 16) / 4;
    const int first = delta + (element * bits) / 8;
    const int part = i % 4;  // byte of the 32-bit lane
    if (part == 0) {
      control[i] = static_cast<int8_t>(first);
    } else if (part == 1) {
      control[i] = static_cast<int8_t>(first + 1);
    } else {
      control[i] = -128;
    }
  }
  return control;
}

struct Isa {
  using Vec = __m256;
  static constexpr int kLanes = 8;
  // Up to 9 rows (a verify pass with 8 drafted tokens) keep their accumulators
  // in registers. One column at a time from 2 rows on: with two, the
  // accumulators, weights, scales and biases spill past the 16 registers
  // (measured 13% to 26% slower for 2 to 5 rows on Zen 1).
  static constexpr int kInlineMaxRows = 9;
  static constexpr int kInlineColumns[kInlineMaxRows + 1] = {0, 2, 1, 1, 1, 1, 1, 1, 1, 1};
  static constexpr int kInlineChunk = 32;
  static constexpr bool kLookup4 = false;
  static constexpr int kTileMR = 4;
  static constexpr int kTileNR = 3;
  static constexpr int kTileColumns = 12;
  static constexpr int kSlab = 256;
  static constexpr int kRowBlock = 64;

  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static Vec broadcast(float f) { return _mm256_set1_ps(f); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }

  // ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))
  static float hsum(Vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }

  template <int Bits, int J>
  static Vec unpack(const uint8_t* block) {
    static_assert(J >= 0 && J < 4, "a 32-element block holds four 8-lane vectors");
    constexpr int kMask = (1 << Bits) - 1;
    __m256i q;
    if constexpr (Bits == 8) {
      q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 8 * J)));
    } else if constexpr (Bits == 4) {
      // Split the 16 bytes into low and high nibbles and interleave them back
      // into element order, one byte per element. This avoids variable
      // shifts, which are slow on AMD Zen 1. The compiler shares these steps
      // across the four J.
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block));
      const __m128i mask = _mm_set1_epi8(0x0F);
      const __m128i low = _mm_and_si128(bytes, mask);
      const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
      const __m128i half = J < 2 ? _mm_unpacklo_epi8(low, high) : _mm_unpackhi_epi8(low, high);
      q = _mm256_cvtepu8_epi32(J % 2 == 0 ? half : _mm_srli_si128(half, 8));
    } else if constexpr (Bits <= 4) {
      // Eight values fit in one 32-bit word. The word is read so that it ends
      // inside the block (4 * Bits bytes), never past the weight buffer.
      constexpr int kOffset = J * Bits < 4 * Bits - 4 ? J * Bits : 4 * Bits - 4;
      constexpr int kExtra = (J * Bits - kOffset) * 8;
      const __m256i word = _mm256_broadcastd_epi32(_mm_loadu_si32(block + kOffset));
      const __m256i shifts =
          _mm256_setr_epi32(kExtra, kExtra + Bits, kExtra + 2 * Bits, kExtra + 3 * Bits,
                            kExtra + 4 * Bits, kExtra + 5 * Bits, kExtra + 6 * Bits,
                            kExtra + 7 * Bits);
      q = _mm256_and_si256(_mm256_srlv_epi32(word, shifts), _mm256_set1_epi32(kMask));
    } else {
      // Eight values span Bits bytes: read an 8-byte window ending inside the
      // block, give each lane its two bytes, then shift and mask.
      constexpr int kOffset = J * Bits < 4 * Bits - 8 ? J * Bits : 4 * Bits - 8;
      constexpr std::array<int8_t, 32> kControl = make_shuffle(Bits, J * Bits - kOffset);
      const __m256i window =
          _mm256_broadcastq_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + kOffset)));
      const __m256i control = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kControl.data()));
      const __m256i shifts = _mm256_setr_epi32(0, Bits % 8, (2 * Bits) % 8, (3 * Bits) % 8,
                                               (4 * Bits) % 8, (5 * Bits) % 8, (6 * Bits) % 8,
                                               (7 * Bits) % 8);
      q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(window, control), shifts),
                           _mm256_set1_epi32(kMask));
    }
    return _mm256_cvtepi32_ps(q);
  }
};

#include "qmm_f32_simd.h"

}  // namespace

extern const KernelVariant kAvx2F32 = {
    "avx2_f32",
    simd_column_chunk,
    simd_scratch_floats,
    simd_run,
    nullptr,
    nullptr,
};

}  // namespace draftwise

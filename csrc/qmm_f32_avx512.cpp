// Quantized matmul with float32 math on AVX-512 F/BW/VL/DQ (16 lanes).
// Compiled with the AVX-512 flags; selected at run time only when the CPU and
// the OS support them (see avx512_intrinsics.h for the emulated test build).
#include "avx512_intrinsics.h"

#include <array>
#include <cstdint>
#include <utility>

#include "avx512_sum_lanes.h"
#include "qmm_problem.h"

namespace draftwise {
namespace {

// Byte shuffle that gives lane e the two bytes holding bits
// [e * bits, e * bits + bits) of the vector's 2 * bits bytes, which are
// broadcast to all four 128-bit lanes. Index -128 writes zero.
constexpr std::array<int8_t, 64> make_shuffle(int bits) {
  std::array<int8_t, 64> control{};
  for (int i = 0; i < 64; ++i) {
    const int element = (i / 16) * 4 + (i % 16) / 4;
    const int first = (element * bits) / 8;
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
  using Vec = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kInlineMaxRows = 9;
  static constexpr int kInlineColumns[kInlineMaxRows + 1] = {0, 4, 4, 4, 4, 3, 3, 3, 2, 2};
  static constexpr int kInlineChunk = 32;
  static constexpr int kTileMR = 4;
  static constexpr int kTileNR = 6;
  static constexpr int kTileColumns = 24;
  static constexpr int kSlab = 256;
  static constexpr int kRowBlock = 64;

  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static Vec broadcast(float f) { return _mm512_set1_ps(f); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }

  static float hsum(Vec v) { return sum_lanes(v); }

  static constexpr bool kLookup4 = true;

  static Vec table4(Vec scale, Vec bias) {
    const Vec q = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return _mm512_fmadd_ps(q, scale, bias);
  }

  // Lane e of the index contains element J * 16 + e in its low 4 bits. Higher
  // bits contain its neighbours, which the permute ignores.
  template <int J>
  static Vec lookup4(const uint8_t* block, Vec table) {
    constexpr std::array<int8_t, 64> kControl = make_shuffle(4);
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 8 * J));
    const __m512i control = _mm512_loadu_si512(kControl.data());
    const __m512i shifts = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
    const __m512i spread = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(bytes), control);
    return _mm512_permutexvar_ps(_mm512_srlv_epi32(spread, shifts), table);
  }

  template <int Bits, int J>
  static Vec unpack(const uint8_t* block) {
    static_assert(J >= 0 && J < 2, "a 32-element block holds two 16-lane vectors");
    __m512i q;
    if constexpr (Bits == 8) {
      q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * J)));
    } else {
      // The masked load reads exactly the vector's 2 * Bits bytes, so nothing
      // past the weight buffer is touched.
      constexpr uint16_t kLoadMask = static_cast<uint16_t>((1u << (2 * Bits)) - 1u);
      constexpr std::array<int8_t, 64> kControl = make_shuffle(Bits);
      const __m128i bytes = _mm_maskz_loadu_epi8(kLoadMask, block + 2 * Bits * J);
      const __m512i control = _mm512_loadu_si512(kControl.data());
      const __m512i shifts = _mm512_setr_epi32(
          0, Bits % 8, (2 * Bits) % 8, (3 * Bits) % 8, (4 * Bits) % 8, (5 * Bits) % 8,
          (6 * Bits) % 8, (7 * Bits) % 8, (8 * Bits) % 8, (9 * Bits) % 8, (10 * Bits) % 8,
          (11 * Bits) % 8, (12 * Bits) % 8, (13 * Bits) % 8, (14 * Bits) % 8, (15 * Bits) % 8);
      const __m512i spread = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(bytes), control);
      q = _mm512_and_si512(_mm512_srlv_epi32(spread, shifts),
                           _mm512_set1_epi32((1 << Bits) - 1));
    }
    return _mm512_cvtepi32_ps(q);
  }
};

#define DRAFTWISE_ISA_LOOKUP4 1
#include "qmm_f32_simd.h"

}  // namespace

extern const KernelVariant kAvx512F32 = {
    "avx512_f32",
    simd_column_chunk,
    simd_scratch_floats,
    simd_run,
    nullptr,
    nullptr,
};

}  // namespace draftwise

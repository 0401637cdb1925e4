// The fixed-order sum of a 16-lane float vector shared by the AVX-512
// variants: low 8 lanes + high 8 lanes, then the 8-lane tree of the AVX2
// variants. The anonymous namespace gives every translation unit its own
// copy, because the units are compiled with different target flags.
#pragma once

#include "avx512_intrinsics.h"

namespace draftwise {
namespace {

inline float sum_lanes(__m512 v) {
  const __m256 low = _mm512_castps512_ps256(v);
  const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  const __m256 eight = _mm256_add_ps(low, high);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

}  // namespace
}  // namespace draftwise

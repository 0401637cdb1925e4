// AVX-512 intrinsics for the AVX-512 translation units: the compiler's own
// by default. With DRAFTWISE_AVX512_SIMDE they come from SIMDe's portable
// emulation, so the AVX-512 code can be tested on CPUs without AVX-512. That
// build is slow and only for tests.
#pragma once

#if defined(DRAFTWISE_AVX512_SIMDE)
#define SIMDE_ENABLE_NATIVE_ALIASES
#define SIMDE_NO_NATIVE
#include <simde/x86/avx512.h>

#include <cstdint>

// SIMDe 0.7.4 lacks these three; plain-C++ versions with the same results.
static inline simde__m512i emulated_cvtepu8_epi32(simde__m128i bytes) {
  uint8_t in[16];
  int32_t out[16];
  simde_mm_storeu_si128(reinterpret_cast<simde__m128i*>(in), bytes);
  for (int i = 0; i < 16; ++i) {
    out[i] = in[i];
  }
  return simde_mm512_loadu_si512(out);
}

static inline simde__m512 emulated_cvtepi32_ps(simde__m512i ints) {
  int32_t in[16];
  float out[16];
  simde_mm512_storeu_si512(in, ints);
  for (int i = 0; i < 16; ++i) {
    out[i] = static_cast<float>(in[i]);
  }
  return simde_mm512_loadu_ps(out);
}

static inline simde__m128i emulated_maskz_loadu_epi8(uint16_t mask, const void* source) {
  uint8_t out[16] = {};
  for (int i = 0; i < 16; ++i) {
    if ((mask >> i) & 1) {
      out[i] = static_cast<const uint8_t*>(source)[i];
    }
  }
  return simde_mm_loadu_si128(reinterpret_cast<const simde__m128i*>(out));
}

#define _mm512_cvtepu8_epi32 emulated_cvtepu8_epi32
#define _mm512_cvtepi32_ps emulated_cvtepi32_ps
#define _mm_maskz_loadu_epi8 emulated_maskz_loadu_epi8
#else
#include <immintrin.h>
#endif

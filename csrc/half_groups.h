// Group scales and biases stored as float16, widened to float32 for the kernels.
#pragma once

#include <cstdint>

namespace draftwise {

// Writes dst[i] = float(src[i]) for i < n, where src contains IEEE binary16 bits.
// The conversion is exact, so every CPU path gives the same floats.
void widen_half(const uint16_t* src, float* dst, int64_t n);

}  // namespace draftwise

// Activation rounding shared by the int8 kernels' prepare steps.
//
// Included inside each unit's anonymous namespace, after <cstdint>, so each
// unit compiles its own copy with its own flags. Every step is exact or a
// plain IEEE float operation in a fixed order, so all copies give the same bytes.

// Rounds the 32 values at src to int8: q[i] = x[i] / d rounded to nearest
// even, with d = max|x| / 127. Returns d (zero for an all-zero block).
inline float round_block_to_int8(const float* src, int8_t* q) {
  float amax = 0.0f;
  for (int i = 0; i < 32; ++i) {
    amax = __builtin_fmaxf(amax, __builtin_fabsf(src[i]));
  }
  const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int i = 0; i < 32; ++i) {
    q[i] = static_cast<int8_t>(__builtin_nearbyintf(src[i] * inverse));
  }
  return amax / 127.0f;
}

// Writes the sum of x over each group of group_size values, in increasing
// index, to sums[0 .. groups - 1].
inline void sum_groups(const float* x, int64_t groups, int64_t group_size, float* sums) {
  for (int64_t g = 0; g < groups; ++g) {
    float sum = 0.0f;
    for (int64_t i = g * group_size; i < (g + 1) * group_size; ++i) {
      sum += x[i];
    }
    sums[g] = sum;
  }
}

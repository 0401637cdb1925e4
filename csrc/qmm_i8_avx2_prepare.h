// Int8 rows of x for the AVX2 int8 kernel (qmm_i8_avx2.cpp).
//
// Included inside that unit's anonymous namespace, after <cstdint>,
// "qmm_problem.h" and "qmm_i8_block.h". Every step is exact or a plain IEEE float operation in a
// fixed order per row, so a row's bytes never depend on the other rows.

constexpr int kBlock = 32;
constexpr int kChunkBlocks = 8;  // blocks the kernel reduces together

// Layout of QmmProblem::prepared, every array 32-byte aligned, per row m:
//   int8 x[m][chunks * 256]: block b holds x[32b .. 32b + 31] as int8; for
//     4-bit weights in the order 0, 2, ..., 30, 1, 3, ..., 31, matching the
//     low and high nibbles of the block's 16 weight bytes. Blocks past k
//     are zero.
//   float block_scale[m][chunks * 8]: d of each block (zero past k).
//   float group_sum[m][groups rounded up to 8]: sum of x over each group,
//     in increasing k (zero past the last group).
struct PreparedRows {
  const int8_t* x_base;
  const float* scale_base;
  const float* sum_base;
  int64_t chunks;
  int64_t sum_stride;

  const int8_t* x(int64_t m) const { return x_base + m * chunks * kChunkBlocks * kBlock; }
  const float* block_scale(int64_t m) const { return scale_base + m * chunks * kChunkBlocks; }
  const float* group_sum(int64_t m) const { return sum_base + m * sum_stride; }
};

struct PreparedSizes {
  int64_t chunks;
  int64_t sum_stride;
  size_t x_bytes;
  size_t scale_bytes;
  size_t sum_bytes;
};

size_t round_up_32(size_t bytes) {
  return (bytes + 31) / 32 * 32;
}

PreparedSizes prepared_sizes(const QmmProblem& p) {
  PreparedSizes s;
  s.chunks = (p.k / kBlock + kChunkBlocks - 1) / kChunkBlocks;
  s.sum_stride = (p.k / p.group_size + 7) / 8 * 8;
  s.x_bytes = round_up_32(static_cast<size_t>(p.m * s.chunks * kChunkBlocks * kBlock));
  s.scale_bytes = round_up_32(static_cast<size_t>(p.m * s.chunks * kChunkBlocks) * sizeof(float));
  s.sum_bytes = round_up_32(static_cast<size_t>(p.m * s.sum_stride) * sizeof(float));
  return s;
}

size_t prepared_bytes(const QmmProblem& p) {
  const PreparedSizes s = prepared_sizes(p);
  return s.x_bytes + s.scale_bytes + s.sum_bytes;
}

PreparedRows prepared_rows(const QmmProblem& p) {
  const PreparedSizes s = prepared_sizes(p);
  const auto* base = static_cast<const uint8_t*>(p.prepared);
  return {reinterpret_cast<const int8_t*>(base),
          reinterpret_cast<const float*>(base + s.x_bytes),
          reinterpret_cast<const float*>(base + s.x_bytes + s.scale_bytes), s.chunks,
          s.sum_stride};
}

// One block: d = max|x| / 127 and x / d rounded to nearest even.
void quantize_block(const float* src, bool nibble_order, int8_t* dst, float* scale) {
  int8_t q[kBlock];
  *scale = round_block_to_int8(src, q);
  for (int i = 0; i < kBlock; ++i) {
    const int slot = !nibble_order ? i : (i % 2 == 0 ? i / 2 : kBlock / 2 + i / 2);
    dst[slot] = q[i];
  }
}

void prepare_rows(const QmmProblem& p, void* prepared) {
  const PreparedSizes s = prepared_sizes(p);
  auto* base = static_cast<uint8_t*>(prepared);
  auto* x_int8 = reinterpret_cast<int8_t*>(base);
  auto* block_scale = reinterpret_cast<float*>(base + s.x_bytes);
  auto* group_sum = reinterpret_cast<float*>(base + s.x_bytes + s.scale_bytes);
  const int64_t blocks = p.k / kBlock;
  const int64_t padded_blocks = s.chunks * kChunkBlocks;
  const int64_t groups = p.k / p.group_size;
  for (int64_t m = 0; m < p.m; ++m) {
    const float* x = p.x + m * p.k;
    int8_t* row = x_int8 + m * padded_blocks * kBlock;
    float* scales = block_scale + m * padded_blocks;
    for (int64_t b = 0; b < padded_blocks; ++b) {
      if (b < blocks) {
        quantize_block(x + b * kBlock, p.bits == 4, row + b * kBlock, scales + b);
      } else {
        for (int i = 0; i < kBlock; ++i) {
          row[b * kBlock + i] = 0;
        }
        scales[b] = 0.0f;
      }
    }
    float* sums = group_sum + m * s.sum_stride;
    sum_groups(x, groups, p.group_size, sums);
    for (int64_t g = groups; g < s.sum_stride; ++g) {
      sums[g] = 0.0f;
    }
  }
}

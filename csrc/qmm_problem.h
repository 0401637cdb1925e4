// The quantized matmul problem and the interface every ISA variant exports.
//
// Computed: out[m, n] = sum_k x[m, k] * (q[n, k] * scales[n, g] + biases[n, g])
// with g = k / group_size and q the unsigned `bits`-wide integers packed in
// MLX's affine layout: row n of `weight` is a little-endian bit stream, element
// k occupying bits [k * bits, (k + 1) * bits) of that row.
//
// Batch invariance contract, kept by every variant: out[m, n] depends only on
// row m of x and column n of the weights. The float operations producing it,
// and their order, are the same whatever the row count M, the position of the
// row, the column range a task covers, and the number of threads.
//
// This header is included by the ISA translation units, which are compiled
// with their own target flags. It must stay free of inline code, so that no
// function compiled with wider instructions can be merged into another unit.
#pragma once

#include <cstddef>
#include <cstdint>

namespace draftwise {

struct QmmProblem {
  const float* x;           // [m, k], row-major
  const uint32_t* weight;   // [n, k * bits / 32], row-major
  const float* scales;      // [n, k / group_size]
  const float* biases;      // [n, k / group_size]
  float* out;               // [m, n], row-major
  int64_t m;
  int64_t n;
  int64_t k;
  int bits;
  int group_size;
  // What the variant's prepare() built for this call (quantized x rows),
  // shared read-only by all threads; nullptr for variants without prepare.
  const void* prepared = nullptr;
  // float16 group scales and biases (IEEE binary16 bits) in place of
  // `scales` and `biases`. They are set only for a variant whose
  // reads_half_groups returns true for this problem, and are nullptr otherwise.
  const uint16_t* half_scales = nullptr;
  const uint16_t* half_biases = nullptr;
};

// One compiled kernel family, chosen once per process by CPU feature.
struct KernelVariant {
  const char* name;  // "<isa>_<math>", e.g. "avx2_f32"
  // Columns one thread task covers; any value gives the same results.
  int64_t (*column_chunk)(const QmmProblem& problem);
  // Floats of scratch memory each thread needs (64-byte aligned by caller).
  size_t (*scratch_floats)(const QmmProblem& problem);
  // Computes out[:, n_begin:n_end] for all rows.
  void (*run)(const QmmProblem& problem, int64_t n_begin, int64_t n_end, float* scratch);
  // Optional (nullptr): bytes of per-call data that prepare() derives from x
  // on one thread before the column tasks run. Zero skips prepare().
  size_t (*prepared_bytes)(const QmmProblem& problem);
  void (*prepare)(const QmmProblem& problem, void* prepared);
  // Optional (nullptr: never): whether run() reads float16 groups itself
  // (QmmProblem::half_scales) for this problem. Otherwise float16 groups are
  // widened to float32 per task before run().
  bool (*reads_half_groups)(const QmmProblem& problem) = nullptr;
  // Optional (nullptr: prepare() on one thread): prepare() split by rows.
  // It writes only rows [m_begin, m_end) into a buffer of prepared_bytes
  // that the caller has zeroed, so that threads can prepare disjoint rows.
  void (*prepare_rows)(const QmmProblem& problem, void* prepared, int64_t m_begin,
                       int64_t m_end) = nullptr;
};

extern const KernelVariant kScalarF32;
#if defined(DRAFTWISE_HAVE_AVX2)
extern const KernelVariant kAvx2F32;
extern const KernelVariant kAvx2I8;
#endif
#if defined(DRAFTWISE_HAVE_AVX512)
extern const KernelVariant kAvx512F32;
extern const KernelVariant kAvx512I8;  // needs AVX512_VNNI too
#endif
#if defined(DRAFTWISE_HAVE_AVX512_BF16)
extern const KernelVariant kAvx512Bf16;  // needs AVX512_BF16 too
#endif

}  // namespace draftwise

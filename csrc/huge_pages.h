// Weights on transparent huge pages.
#pragma once

#include <cstddef>

#include "mlx/array.h"

namespace draftwise {

namespace mx = mlx::core;

// The size of a transparent huge page with 4 KiB base pages (x86-64, and
// arm64 kernels built with 4 KiB pages).
constexpr size_t kHugePageBytes = size_t{2} << 20;

// Returns a copy of `a` whose data sits in memory advised for transparent
// huge pages, or `a` itself when it is smaller than `min_bytes`, not
// contiguous, or the platform offers no such advice.
//
// Decoding streams every weight once per token. With 4 KiB pages the CPU
// takes a TLB miss every 4 KiB, and hardware prefetchers usually stop at page
// boundaries. With 2 MiB pages neither happens. The copy evaluates `a` first.
// The kernel honours the advice only with THP set to "always" or "madvise",
// and the data is the same either way.
mx::array on_huge_pages(mx::array a, size_t min_bytes);

}  // namespace draftwise

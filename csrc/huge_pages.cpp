#include "huge_pages.h"

#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "mlx/allocator.h"

namespace draftwise {

namespace {

// MLX's CPU allocator hands out buffers whose first 8 bytes contain the size
// and whose data follows (Buffer::raw_ptr). A buffer made here follows that
// layout, with the data 64-byte aligned, and frees itself with munmap.
// NOTE: MLX's memory counters (mx.get_active_memory) do not include these
// buffers, because they bypass its allocator.
constexpr size_t kDataOffset = 64;

size_t round_up(size_t value, size_t step) { return (value + step - 1) / step * step; }

}  // namespace

mx::array on_huge_pages(mx::array a, size_t min_bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  a.eval();
  if (a.nbytes() < min_bytes || !a.flags().row_contiguous || a.data_size() != a.size()) {
    return a;
  }
  const size_t mapped = round_up(kDataOffset + a.nbytes(), kHugePageBytes);
  // Map one huge page more than needed, then keep a huge-page aligned span.
  void* raw = mmap(nullptr, mapped + kHugePageBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    return a;
  }
  const auto raw_address = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = round_up(raw_address, kHugePageBytes);
  if (start > raw_address) {
    munmap(raw, start - raw_address);
  }
  const size_t tail = kHugePageBytes - (start - raw_address);
  if (tail > 0) {
    munmap(reinterpret_cast<void*>(start + mapped), tail);
  }
  auto* base = reinterpret_cast<char*>(start);
  // Advice only: without it the copy is still correct, on small pages.
  madvise(base, mapped, MADV_HUGEPAGE);

  char* data = base + kDataOffset;
  auto* header = reinterpret_cast<size_t*>(data) - 1;
  *header = a.nbytes();
  std::memcpy(data, a.data<char>(), a.nbytes());
  mx::allocator::Buffer buffer(header);
  if (buffer.raw_ptr() != data) {
    // An MLX whose CPU buffers have another layout: keep the original.
    munmap(base, mapped);
    return a;
  }
  auto release = [base, mapped](mx::allocator::Buffer) { munmap(base, mapped); };
  return mx::array(mx::allocator::Data(buffer, std::move(release)), a.shape(), a.dtype());
#else
  (void)min_bytes;
  return a;
#endif
}

}  // namespace draftwise

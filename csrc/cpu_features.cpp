#include "cpu_features.h"

#include <stdexcept>

namespace draftwise {
namespace {

// GCC's and Clang's __builtin_cpu_supports also check that the OS saves the
// wider registers (XCR0), so a true result means the instructions can run.
bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(DRAFTWISE_AVX512_SIMDE)
  return true;  // emulated: runs on any CPU
#elif defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

bool cpu_has_avx512_vnni() {
#if defined(DRAFTWISE_AVX512_SIMDE)
  return true;
#elif defined(__x86_64__) || defined(__i386__)
  return cpu_has_avx512() && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

bool cpu_has_avx512_bf16() {
#if defined(DRAFTWISE_AVX512_SIMDE)
  return false;  // not emulated
#elif defined(__x86_64__) || defined(__i386__)
  return cpu_has_avx512() && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

}  // namespace

std::vector<const KernelVariant*> usable_variants() {
  std::vector<const KernelVariant*> variants;
#if defined(DRAFTWISE_HAVE_AVX512)
  if (cpu_has_avx512()) {
    variants.push_back(&kAvx512F32);
  }
#endif
#if defined(DRAFTWISE_HAVE_AVX2)
  if (cpu_has_avx2()) {
    variants.push_back(&kAvx2F32);
  }
#endif
  variants.push_back(&kScalarF32);
  return variants;
}

const KernelVariant& default_variant() {
  static const KernelVariant* chosen = usable_variants().front();
  return *chosen;
}

std::string isa_of(const KernelVariant& variant) {
  const std::string name = variant.name;
  return name.substr(0, name.find('_'));
}

const KernelVariant& variant_for(const std::string& isa, const std::string& math) {
  if (math != "f32" && math != "int8" && math != "bf16") {
    throw std::invalid_argument("quantized_matmul: math='" + math +
                                "' is not supported; use 'f32', 'bf16' or 'int8'");
  }
  const KernelVariant* chosen = nullptr;
  std::string usable;
  for (const KernelVariant* variant : usable_variants()) {
    if (isa.empty() ? chosen == nullptr : isa_of(*variant) == isa) {
      chosen = variant;
    }
    usable += (usable.empty() ? "" : ", ") + isa_of(*variant);
  }
  if (chosen == nullptr) {
    throw std::invalid_argument("quantized_matmul: ISA '" + isa +
                                "' is not compiled in or not supported by this CPU; usable: " +
                                usable);
  }
  if (math == "f32") {
    return *chosen;
  }
  if (math == "bf16") {
#if defined(DRAFTWISE_HAVE_AVX512_BF16)
    if (isa_of(*chosen) == "avx512" && cpu_has_avx512_bf16()) {
      return kAvx512Bf16;
    }
#endif
    throw std::invalid_argument(
        "quantized_matmul: math='bf16' needs a CPU with AVX512_BF16 and the avx512 ISA; got '" +
        isa_of(*chosen) + "'; use math='f32'");
  }
#if defined(DRAFTWISE_HAVE_AVX512)
  if (isa_of(*chosen) == "avx512" && cpu_has_avx512_vnni()) {
    return kAvx512I8;
  }
#endif
#if defined(DRAFTWISE_HAVE_AVX2)
  // AVX-512 CPUs without VNNI run the AVX2 int8 kernel.
  if (isa_of(*chosen) != "scalar") {
    return kAvx2I8;
  }
#endif
  throw std::invalid_argument("quantized_matmul: math='int8' needs an AVX2 CPU and ISA; got '" +
                              isa_of(*chosen) + "'");
}

}  // namespace draftwise

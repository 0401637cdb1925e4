// Run-time CPU feature checks and the choice of kernel variant.
#pragma once

#include <string>
#include <vector>

#include "qmm_problem.h"

namespace draftwise {

// Variants compiled into this build that the CPU can run, best first.
std::vector<const KernelVariant*> usable_variants();

// The variant used when the caller names none: the first usable one.
const KernelVariant& default_variant();

// Looks a variant up by ISA name ("scalar", "avx2", "avx512"; empty for the
// default) and math ("f32", "int8" for int8 activations, or "bf16" for
// bfloat16 dot products). Throws
// std::invalid_argument naming the usable choices when it is absent or
// unusable here.
const KernelVariant& variant_for(const std::string& isa, const std::string& math);

// The ISA part of a variant's name: "avx2" for "avx2_f32".
std::string isa_of(const KernelVariant& variant);

}  // namespace draftwise

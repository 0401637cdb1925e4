// DRAFTWISE_ISA_CLONES before a function: on x86-64 with GCC, the compiler builds
// it for AVX-512, for AVX2 + FMA and for baseline x86-64, and the loader picks
// one by CPU once per process. Elsewhere the macro is empty.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DRAFTWISE_ISA_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DRAFTWISE_ISA_CLONES
#endif

// Python bindings: the module draftwise.runtime.kernels._qmm.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "attention_rows.h"
#include "cpu_features.h"
#include "huge_pages.h"
#include "norm_rope.h"
#include "qmm_op.h"
#include "silu_mul.h"
#include "thread_pool.h"

namespace nb = nanobind;
using namespace nb::literals;

NB_MODULE(_qmm, m) {
  m.doc() = "Batch-invariant quantized matmul for MLX on the CPU (draftwise).";

  m.def("quantized_matmul", &draftwise::quantized_matmul, "x"_a, "weight"_a, "scales"_a,
        "biases"_a, "bits"_a, "group_size"_a, nb::kw_only(), "isa"_a = "",
        "math"_a = "f32", "stream"_a = nb::none(),
        R"(Return x @ dequantize(weight, scales, biases).T as a lazy float32 array.

The weight uses MLX's affine layout from mx.quantize(w, group_size, bits),
with scales and biases both float32 or both float16 (widened exactly to
float32 before use). isa selects a variant ("scalar", "avx2", "avx512"); "" picks the best one
this CPU supports. math="int8" quantizes each 32-element block of x to int8
(4- and 8-bit weights, with AVX2 or AVX-512 VNNI; other widths keep float32
math). math="bf16" rounds x and 4- and 8-bit weights to bfloat16 and sums
their products in float32 (AVX-512 BF16 only; other widths keep float32
math). Raises ValueError naming any invalid argument.)");

  m.def("attention_rows", &draftwise::attention_rows, "queries"_a, "keys"_a, "values"_a,
        "query_start"_a, "key_start"_a, "scale"_a, "window"_a = 0, nb::kw_only(),
        "stream"_a = nb::none(),
        R"(Return causal attention of new rows over cached keys, each row on its own.

queries [heads, n, d], keys and values [kv_heads, length, d], all float32;
keys hold positions key_start .. key_start + length - 1, and row i sits at
query_start + i. window > 0 limits each row to its last window positions.
Every row is computed alone from exactly the keys it sees, so its result
does not depend on the row count. Raises ValueError naming any invalid
argument.)");

  m.def("silu_mul", &draftwise::silu_mul, "gate_up"_a, nb::kw_only(), "stream"_a = nb::none(),
        R"(Return silu(gate) * up for gate_up = [gate | up], float32 [rows, 2 * f].

The result is float32 [rows, f]. Each element depends only on its own gate
and up values, through the same float operations on every CPU, so it does
not depend on the row count. Raises ValueError naming any invalid argument.)");

  m.def("rms_norm_rows", &draftwise::rms_norm_rows, "x"_a, "weight"_a, "eps"_a, nb::kw_only(),
        "stream"_a = nb::none(),
        R"(Return x * rsqrt(mean(x ** 2, axis=-1) + eps) * weight as one lazy operation.

x is float32 [rows, d] or [a, rows, d], weight float32 [d]. Each row is
normalised on its own (squares summed in double, in a fixed order), so its
result does not depend on the row count. Raises ValueError naming any
invalid argument.)");

  m.def("rope_rows", &draftwise::rope_rows, "x"_a, "offset"_a, "base"_a, "scale"_a,
        "traditional"_a, nb::kw_only(), "stream"_a = nb::none(),
        R"(Return x [heads, rows, d] rotated as positions offset .. offset + rows - 1.

The same rotation as mx.fast.rope(x, d, traditional=traditional, base=base,
scale=scale, offset=offset), with angles, cosines and sines computed in
double and rounded once, as one lazy operation. Each row depends only on its
own values and position. Raises ValueError naming any invalid argument.)");

  m.def(
      "reads_half_groups",
      [](const std::string& isa, const std::string& math, int bits) {
        const draftwise::KernelVariant& variant = draftwise::variant_for(isa, math);
        draftwise::QmmProblem problem{};
        problem.bits = bits;
        problem.group_size = 32;
        return variant.reads_half_groups != nullptr && variant.reads_half_groups(problem);
      },
      "isa"_a = "", "math"_a = "f32", "bits"_a = 4,
      R"(Return whether the variant for isa and math reads float16 scales and biases itself
for bits-wide weights. Other variants get them widened to float32 per call, which
costs about what reading float32 groups costs.)");
  m.def("on_huge_pages", &draftwise::on_huge_pages, "a"_a,
        "min_bytes"_a = draftwise::kHugePageBytes,
        R"(Return a copy of a in memory advised for transparent huge pages (Linux).

Returns a itself when it is smaller than min_bytes or not contiguous, and on
platforms without the advice. Evaluates a. The values never change; whether
the kernel backs the copy with huge pages depends on its THP setting.)");
  m.def(
      "default_isa", [] { return draftwise::isa_of(draftwise::default_variant()); },
      "Return the ISA used when none is named, chosen once by CPU feature.");
  m.def(
      "variant_name",
      [](const std::string& isa, const std::string& math) {
        return std::string(draftwise::variant_for(isa, math).name);
      },
      "isa"_a = "", "math"_a = "f32",
      R"(Return the kernel variant quantized_matmul runs for isa and math, e.g. "avx512_i8".

Raises ValueError when this CPU cannot run that combination.)");
  m.def(
      "usable_isas",
      [] {
        std::vector<std::string> names;
        for (const auto* variant : draftwise::usable_variants()) {
          names.push_back(draftwise::isa_of(*variant));
        }
        return names;
      },
      "Return the ISAs compiled in that this CPU can run, best first.");
  m.def(
      "num_threads", [] { return draftwise::ThreadPool::global().size(); },
        "Return the number of threads the kernel pool uses.");
  m.attr("supported_bits") = nb::make_tuple(2, 3, 4, 5, 6, 8);
  m.attr("supported_group_sizes") = nb::make_tuple(32, 64, 128);
}

// Python bindings: the module draftwise.runtime.kernels._qmm.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "cpu_features.h"
#include "qmm_op.h"
#include "thread_pool.h"

namespace nb = nanobind;
using namespace nb::literals;

NB_MODULE(_qmm, m) {
  m.doc() = "Batch-invariant quantized matmul for MLX on the CPU (draftwise).";

  m.def("quantized_matmul", &draftwise::quantized_matmul, "x"_a, "weight"_a, "scales"_a,
        "biases"_a, "bits"_a, "group_size"_a, nb::kw_only(), "isa"_a = "",
        "math"_a = "f32", "stream"_a = nb::none(),
        R"(Return x @ dequantize(weight, scales, biases).T as a lazy float32 array.

The weight uses MLX's affine layout from mx.quantize(w, group_size, bits).
isa selects a variant ("scalar", "avx2", "avx512"); "" picks the best one
this CPU supports. math="int8" quantizes each 32-element block of x to int8
(4- and 8-bit weights with AVX2, 4-bit with AVX-512 VNNI; other widths keep
float32 math). Raises ValueError naming
any invalid argument.)");

  m.def(
      "default_isa", [] { return draftwise::isa_of(draftwise::default_variant()); },
      "Return the ISA used when none is named, chosen once by CPU feature.");
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

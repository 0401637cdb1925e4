#include "qmm_op.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "cpu_features.h"
#include "half_groups.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/utils.h"
#include "thread_pool.h"

namespace draftwise {
namespace {

bool bits_supported(int bits) {
  return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
}

bool group_size_supported(int group_size) {
  return group_size == 32 || group_size == 64 || group_size == 128;
}

std::string shape_string(const mx::Shape& shape) {
  std::ostringstream text;
  text << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    text << (i ? ", " : "") << shape[i];
  }
  text << (shape.size() == 1 ? ",)" : ")");
  return text.str();
}

std::string dtype_string(mx::Dtype dtype) {
  std::ostringstream text;
  text << dtype;
  return text.str();
}

[[noreturn]] void reject(const std::string& message) {
  throw std::invalid_argument("quantized_matmul: " + message);
}

void check_arguments(const mx::array& x, const mx::array& weight, const mx::array& scales,
                     const mx::array& biases, int bits, int group_size) {
  if (!bits_supported(bits)) {
    reject("bits=" + std::to_string(bits) + " is not supported; use 2, 3, 4, 5, 6 or 8");
  }
  if (!group_size_supported(group_size)) {
    reject("group_size=" + std::to_string(group_size) +
           " is not supported; use 32, 64 or 128");
  }
  if (x.dtype() != mx::float32) {
    reject("x must be float32, got " + dtype_string(x.dtype()) +
           "; convert it with x.astype(mx.float32)");
  }
  if (x.ndim() < 1) {
    reject("x must have at least one dimension, got a scalar");
  }
  if (weight.dtype() != mx::uint32 || weight.ndim() != 2) {
    reject("weight must be a 2-D uint32 array as mx.quantize returns, got " +
           dtype_string(weight.dtype()) + " of shape " + shape_string(weight.shape()));
  }
  const int64_t n = weight.shape(0);
  const int64_t k = static_cast<int64_t>(weight.shape(1)) * 32 / bits;
  if (x.shape(-1) != k) {
    reject("x has K=" + std::to_string(x.shape(-1)) + " columns but the " +
           std::to_string(bits) + "-bit weight of shape " + shape_string(weight.shape()) +
           " holds K=" + std::to_string(k) + "; check bits and the weight's orientation");
  }
  if (k % group_size != 0) {
    reject("K=" + std::to_string(k) + " is not a multiple of group_size=" +
           std::to_string(group_size));
  }
  const mx::Shape group_shape = {static_cast<int>(n), static_cast<int>(k / group_size)};
  if (scales.dtype() != biases.dtype()) {
    reject("scales (" + dtype_string(scales.dtype()) + ") and biases (" +
           dtype_string(biases.dtype()) + ") must have the same dtype");
  }
  for (const auto* part : {&scales, &biases}) {
    const char* label = part == &scales ? "scales" : "biases";
    if (part->dtype() != mx::float32 && part->dtype() != mx::float16) {
      reject(std::string(label) + " must be float32 or float16, got " +
             dtype_string(part->dtype()));
    }
    if (part->shape() != group_shape) {
      reject(std::string(label) + " has shape " + shape_string(part->shape()) + ", expected " +
             shape_string(group_shape) + " for group_size=" + std::to_string(group_size));
    }
  }
}

// Copies a strided float32 array into a dense row-major buffer.
std::vector<float> gather_float32(const mx::array& a) {
  std::vector<float> dense(a.size());
  const float* base = a.data<float>();
  std::vector<int64_t> index(a.ndim(), 0);
  for (size_t i = 0; i < dense.size(); ++i) {
    int64_t offset = 0;
    for (int axis = 0; axis < a.ndim(); ++axis) {
      offset += index[axis] * a.strides()[axis];
    }
    dense[i] = base[offset];
    for (int axis = a.ndim() - 1; axis >= 0; --axis) {
      if (++index[axis] < a.shape(axis)) {
        break;
      }
      index[axis] = 0;
    }
  }
  return dense;
}

// 64-byte aligned scratch memory, one buffer per pool thread, grown on demand.
struct ScratchBuffer {
  std::unique_ptr<float, decltype(&std::free)> data{nullptr, &std::free};
  size_t floats = 0;

  float* reserve(size_t wanted) {
    if (wanted > floats) {
      const size_t bytes = (wanted * sizeof(float) + 63) / 64 * 64;
      data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      if (!data) {
        throw std::bad_alloc();
      }
      floats = wanted;
    }
    return data.get();
  }
};

}  // namespace

void run_quantized_matmul(const KernelVariant& variant, const QmmProblem& problem,
                          const HalfGroups& half) {
  if (problem.m == 0 || problem.n == 0) {
    return;
  }
  ThreadPool& pool = ThreadPool::global();
  // Only one run uses the pool at a time, so the buffers are not shared.
  static std::vector<ScratchBuffer> scratch;
  static std::vector<ScratchBuffer> widened;
  static std::mutex scratch_mutex;
  std::lock_guard<std::mutex> lock(scratch_mutex);
  scratch.resize(pool.size());
  widened.resize(pool.size());
  const size_t scratch_floats = variant.scratch_floats(problem);
  std::vector<float*> buffers(pool.size());
  for (int t = 0; t < pool.size(); ++t) {
    buffers[t] = scratch[t].reserve(scratch_floats);
  }

  // The rows are prepared before the column tasks start, which only read
  // the result. Where the variant can split its preparation by rows, each
  // pool thread prepares a share of them. Otherwise this thread does it all.
  static std::vector<uint8_t> prepared;
  QmmProblem with_prepared = problem;
  const size_t prepared_bytes = variant.prepared_bytes ? variant.prepared_bytes(problem) : 0;
  if (prepared_bytes > 0) {
    prepared.resize(prepared_bytes + 64);
    void* aligned = prepared.data() + (64 - reinterpret_cast<uintptr_t>(prepared.data()) % 64);
    if (variant.prepare_rows != nullptr && problem.m > 1 && pool.size() > 1) {
      std::memset(aligned, 0, prepared_bytes);
      const int64_t shares = std::min<int64_t>(problem.m, pool.size());
      pool.run(shares, [&](int64_t share, int) {
        const int64_t m_begin = problem.m * share / shares;
        const int64_t m_end = problem.m * (share + 1) / shares;
        variant.prepare_rows(problem, aligned, m_begin, m_end);
      });
    } else {
      variant.prepare(problem, aligned);
    }
    with_prepared.prepared = aligned;
  }

  const int64_t chunk = variant.column_chunk(problem);
  const int64_t tasks = (problem.n + chunk - 1) / chunk;
  const int64_t groups = problem.k / problem.group_size;
  const int64_t words_per_column = problem.k * problem.bits / 32;
  const bool widen = half.scales != nullptr &&
                     !(variant.reads_half_groups && variant.reads_half_groups(problem));
  if (half.scales != nullptr && !widen) {
    with_prepared.half_scales = half.scales;
    with_prepared.half_biases = half.biases;
  }
  pool.run(tasks, [&](int64_t task, int thread) {
    const int64_t n_begin = task * chunk;
    const int64_t n_end = n_begin + chunk < problem.n ? n_begin + chunk : problem.n;
    if (!widen) {
      variant.run(with_prepared, n_begin, n_end, buffers[thread]);
      return;
    }
    // float16 groups: widen this task's columns into float32 (exactly) and
    // run the variant on a view whose column 0 is column n_begin. The output
    // keeps its row stride problem.n.
    const int64_t count = (n_end - n_begin) * groups;
    float* wide = widened[thread].reserve(static_cast<size_t>(2 * count));
    widen_half(half.scales + n_begin * groups, wide, count);
    widen_half(half.biases + n_begin * groups, wide + count, count);
    QmmProblem columns = with_prepared;
    columns.weight = problem.weight + n_begin * words_per_column;
    columns.scales = wide;
    columns.biases = wide + count;
    columns.out = problem.out + n_begin;
    variant.run(columns, 0, n_end - n_begin, buffers[thread]);
  });
}

mx::array quantized_matmul(const mx::array& x, const mx::array& weight, const mx::array& scales,
                           const mx::array& biases, int bits, int group_size,
                           const std::string& isa, const std::string& math,
                           mx::StreamOrDevice s) {
  check_arguments(x, weight, scales, biases, bits, group_size);
  const KernelVariant& variant = variant_for(isa, math);
  const mx::Stream stream = mx::to_stream(s, mx::Device::cpu);
  if (stream.device != mx::Device::cpu) {
    reject("runs on the CPU only; pass stream=mx.cpu");
  }
  mx::Shape out_shape = x.shape();
  out_shape.back() = weight.shape(0);
  // Evaluated weights are nearly always dense already, and skipping the
  // contiguous node saves its scheduling cost on every call. x is checked
  // when the kernel runs, because a lazy array's layout is not known yet.
  auto dense = [&stream](const mx::array& a) {
    return a.is_available() && a.flags().row_contiguous ? a : mx::contiguous(a, false, stream);
  };
  std::vector<mx::array> inputs = {x, dense(weight), dense(scales), dense(biases)};
  return mx::array(out_shape, mx::float32,
                   std::make_shared<QuantizedMatmulRows>(stream, bits, group_size, variant),
                   std::move(inputs));
}

void QuantizedMatmulRows::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  const mx::array& x = inputs[0];
  const mx::array& weight = inputs[1];
  const mx::array& scales = inputs[2];
  const mx::array& biases = inputs[3];
  out.set_data(mx::allocator::malloc(out.nbytes()));

  auto& encoder = mx::cpu::get_command_encoder(stream());
  encoder.set_input_array(x);
  encoder.set_input_array(weight);
  encoder.set_input_array(scales);
  encoder.set_input_array(biases);
  encoder.set_output_array(out);
  encoder.dispatch([x = mx::array::unsafe_weak_copy(x),
                    weight = mx::array::unsafe_weak_copy(weight),
                    scales = mx::array::unsafe_weak_copy(scales),
                    biases = mx::array::unsafe_weak_copy(biases),
                    out = mx::array::unsafe_weak_copy(out), bits = bits_,
                    group_size = group_size_, &variant = variant_]() mutable {
    int64_t m = 1;
    for (int axis = 0; axis + 1 < x.ndim(); ++axis) {
      m *= x.shape(axis);
    }
    std::vector<float> x_dense;
    const float* x_data = x.data<float>();
    if (!x.flags().row_contiguous) {
      x_dense = gather_float32(x);
      x_data = x_dense.data();
    }
    HalfGroups half;
    const float* scale_data = nullptr;
    const float* bias_data = nullptr;
    if (scales.dtype() == mx::float16) {
      half.scales = reinterpret_cast<const uint16_t*>(scales.data<mx::float16_t>());
      half.biases = reinterpret_cast<const uint16_t*>(biases.data<mx::float16_t>());
    } else {
      scale_data = scales.data<float>();
      bias_data = biases.data<float>();
    }
    const QmmProblem problem{x_data,    weight.data<uint32_t>(), scale_data,
                             bias_data, out.data<float>(),       m,
                             weight.shape(0), x.shape(-1),       bits,
                             group_size};
    run_quantized_matmul(variant, problem, half);
  });
}

void QuantizedMatmulRows::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  throw std::runtime_error("DraftwiseQuantizedMatmul has no GPU implementation; use mx.cpu");
}

bool QuantizedMatmulRows::is_equivalent(const mx::Primitive& other) const {
  const auto& rhs = static_cast<const QuantizedMatmulRows&>(other);
  return bits_ == rhs.bits_ && group_size_ == rhs.group_size_ && &variant_ == &rhs.variant_;
}

std::vector<mx::Shape> QuantizedMatmulRows::output_shapes(const std::vector<mx::array>& inputs) {
  mx::Shape shape = inputs[0].shape();
  shape.back() = inputs[1].shape(0);
  return {shape};
}

}  // namespace draftwise

#include "norm_rope.h"

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"

namespace draftwise {
namespace {

[[noreturn]] void reject(const char* op, const std::string& message) {
  throw std::invalid_argument(std::string(op) + ": " + message);
}

mx::Stream cpu_stream(const char* op, mx::StreamOrDevice s) {
  const mx::Stream stream = mx::to_stream(s, mx::Device::cpu);
  if (stream.device != mx::Device::cpu) {
    reject(op, "runs on the CPU only; pass stream=mx.cpu");
  }
  return stream;
}

// A view of an input as [outer][rows][d] with unit stride along d.
struct RowView {
  const float* data;
  int64_t outer;
  int64_t rows;
  int64_t d;
  int64_t outer_stride;
  int64_t row_stride;
};

// Views `in` as rows. Elements along d must be adjacent, so an input
// strided along d is first gathered into `dense`.
RowView view_rows(const mx::array& in, std::vector<float>& dense) {
  RowView v{in.data<float>(), 1, in.shape(-2), in.shape(-1), 0, in.strides(-2)};
  if (in.ndim() == 3) {
    v.outer = in.shape(0);
    v.outer_stride = in.strides(0);
  }
  const int64_t d_stride = in.strides(-1);
  if (v.d > 1 && d_stride != 1) {
    dense.resize(static_cast<size_t>(v.outer * v.rows * v.d));
    for (int64_t a = 0; a < v.outer; ++a) {
      for (int64_t r = 0; r < v.rows; ++r) {
        for (int64_t j = 0; j < v.d; ++j) {
          dense[(a * v.rows + r) * v.d + j] =
              v.data[a * v.outer_stride + r * v.row_stride + j * d_stride];
        }
      }
    }
    v = {dense.data(), v.outer, v.rows, v.d, v.rows * v.d, v.d};
  }
  return v;
}

void check_rows(const char* op, const mx::array& x) {
  if (x.dtype() != mx::float32) {
    reject(op, "x must be float32; convert it with x.astype(mx.float32)");
  }
  if (x.ndim() < 2 || x.ndim() > 3) {
    reject(op, "x has " + std::to_string(x.ndim()) +
                   " dimensions; it needs 2 ([rows, d]) or 3 ([a, rows, d])");
  }
  if (x.shape(-1) == 0) {
    reject(op, "x has an empty last dimension; it needs d >= 1");
  }
}

}  // namespace

mx::array rms_norm_rows(const mx::array& x, const mx::array& weight, float eps,
                        mx::StreamOrDevice s) {
  constexpr const char* kOp = "rms_norm_rows";
  check_rows(kOp, x);
  if (weight.dtype() != mx::float32 || weight.ndim() != 1 || weight.shape(0) != x.shape(-1)) {
    reject(kOp, "weight must be float32 [" + std::to_string(x.shape(-1)) +
                    "] to match x's last dimension");
  }
  if (!(eps >= 0.0f) || !std::isfinite(eps)) {
    reject(kOp, "eps " + std::to_string(eps) + " is invalid; use a finite value >= 0");
  }
  const mx::Stream stream = cpu_stream(kOp, s);
  return mx::array(x.shape(), mx::float32, std::make_shared<RmsNormRows>(stream, eps),
                   {x, weight});
}

mx::array rope_rows(const mx::array& x, int offset, float base, float scale, bool traditional,
                    mx::StreamOrDevice s) {
  constexpr const char* kOp = "rope_rows";
  check_rows(kOp, x);
  if (x.ndim() != 3 || x.shape(-1) % 2 != 0) {
    reject(kOp, "x must be [heads, rows, d] with an even d, got " +
                    std::to_string(x.ndim()) + " dimensions and d = " +
                    std::to_string(x.shape(-1)));
  }
  if (offset < 0) {
    reject(kOp, "offset " + std::to_string(offset) + " is invalid; positions start at 0");
  }
  if (!(base > 0.0f) || !std::isfinite(base)) {
    reject(kOp, "base " + std::to_string(base) + " is invalid; use a finite value > 0");
  }
  if (!std::isfinite(scale)) {
    reject(kOp, "scale " + std::to_string(scale) + " is invalid; use a finite value");
  }
  const mx::Stream stream = cpu_stream(kOp, s);
  return mx::array(x.shape(), mx::float32,
                   std::make_shared<RopeRows>(stream, offset, base, scale, traditional), {x});
}

void RmsNormRows::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  const mx::array& in = inputs[0];
  const mx::array& weight = inputs[1];
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream());
  encoder.set_input_array(in);
  encoder.set_input_array(weight);
  encoder.set_output_array(out);
  encoder.dispatch([in = mx::array::unsafe_weak_copy(in),
                    weight = mx::array::unsafe_weak_copy(weight),
                    out = mx::array::unsafe_weak_copy(out), eps = eps_]() mutable {
    std::vector<float> dense;
    const RowView v = view_rows(in, dense);
    const float* w = weight.data<float>();
    const int64_t w_stride = weight.strides(0);
    float* y = out.data<float>();
    constexpr int kLanes = 8;
    for (int64_t a = 0; a < v.outer; ++a) {
      for (int64_t r = 0; r < v.rows; ++r) {
        const float* row = v.data + a * v.outer_stride + r * v.row_stride;
        // Eight running sums over j % 8, then added in a fixed tree: the
        // same order for every row, and vectorizable without reassociation.
        double lanes[kLanes] = {};
        int64_t j = 0;
        for (; j + kLanes <= v.d; j += kLanes) {
          for (int l = 0; l < kLanes; ++l) {
            const double value = row[j + l];
            lanes[l] += value * value;
          }
        }
        for (; j < v.d; ++j) {
          const double value = row[j];
          lanes[j % kLanes] += value * value;
        }
        const double sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                           ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
        const auto inv = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(v.d) +
                                                             static_cast<double>(eps)));
        float* out_row = y + (a * v.rows + r) * v.d;
        for (int64_t i = 0; i < v.d; ++i) {
          out_row[i] = (row[i] * inv) * w[i * w_stride];
        }
      }
    }
  });
}

void RopeRows::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  const mx::array& in = inputs[0];
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream());
  encoder.set_input_array(in);
  encoder.set_output_array(out);
  encoder.dispatch([in = mx::array::unsafe_weak_copy(in), out = mx::array::unsafe_weak_copy(out),
                    offset = offset_, base = base_, scale = scale_,
                    traditional = traditional_]() mutable {
    std::vector<float> dense;
    const RowView v = view_rows(in, dense);
    const int64_t half = v.d / 2;
    // Cosines and sines per row and pair, shared by every head.
    std::vector<float> cosines(static_cast<size_t>(v.rows * half));
    std::vector<float> sines(cosines.size());
    const double log_base = std::log(static_cast<double>(base));
    for (int64_t r = 0; r < v.rows; ++r) {
      const double position = static_cast<double>(offset + r) * static_cast<double>(scale);
      for (int64_t j = 0; j < half; ++j) {
        const double angle =
            position * std::exp(-static_cast<double>(j) * log_base / static_cast<double>(half));
        cosines[r * half + j] = static_cast<float>(std::cos(angle));
        sines[r * half + j] = static_cast<float>(std::sin(angle));
      }
    }
    float* y = out.data<float>();
    // Pair j is elements (j, j + half), or (2j, 2j + 1) in the traditional layout.
    const int64_t first_step = traditional ? 2 : 1;
    const int64_t second_gap = traditional ? 1 : half;
    for (int64_t a = 0; a < v.outer; ++a) {
      for (int64_t r = 0; r < v.rows; ++r) {
        const float* row = v.data + a * v.outer_stride + r * v.row_stride;
        float* out_row = y + (a * v.rows + r) * v.d;
        const float* c = cosines.data() + r * half;
        const float* s = sines.data() + r * half;
        for (int64_t j = 0; j < half; ++j) {
          const int64_t i1 = j * first_step;
          const int64_t i2 = i1 + second_gap;
          const float x1 = row[i1];
          const float x2 = row[i2];
          out_row[i1] = x1 * c[j] - x2 * s[j];
          out_row[i2] = x1 * s[j] + x2 * c[j];
        }
      }
    }
  });
}

void RmsNormRows::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  throw std::runtime_error("DraftwiseRmsNormRows has no GPU implementation; use mx.cpu");
}

void RopeRows::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  throw std::runtime_error("DraftwiseRopeRows has no GPU implementation; use mx.cpu");
}

bool RmsNormRows::is_equivalent(const mx::Primitive& other) const {
  return eps_ == static_cast<const RmsNormRows&>(other).eps_;
}

bool RopeRows::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const RopeRows&>(other);
  return offset_ == o.offset_ && base_ == o.base_ && scale_ == o.scale_ &&
         traditional_ == o.traditional_;
}

std::vector<mx::Shape> RmsNormRows::output_shapes(const std::vector<mx::array>& inputs) {
  return {inputs[0].shape()};
}

std::vector<mx::Shape> RopeRows::output_shapes(const std::vector<mx::array>& inputs) {
  return {inputs[0].shape()};
}

}  // namespace draftwise

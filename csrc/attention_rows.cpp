#include "attention_rows.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "isa_clones.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "thread_pool.h"

namespace draftwise {
namespace {

constexpr int kLanes = 16;  // partial sums of a dot product, summed with a fixed tree

[[noreturn]] void reject(const std::string& message) {
  throw std::invalid_argument("attention_rows: " + message);
}

std::string shape_string(const mx::Shape& shape) {
  std::ostringstream text;
  text << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    text << (i ? ", " : "") << shape[i];
  }
  text << ")";
  return text.str();
}

// A 3-D float32 view: element (a, b, c) at data[a * s0 + b * s1 + c].
struct View {
  const float* data;
  int64_t s0;
  int64_t s1;
  std::vector<float> owned;  // a dense copy when the last axis was strided
};

View view_of(const mx::array& a) {
  const auto& strides = a.strides();
  if (strides[2] == 1) {
    return {a.data<float>(), static_cast<int64_t>(strides[0]), static_cast<int64_t>(strides[1]),
            {}};
  }
  View view{nullptr, static_cast<int64_t>(a.shape(1)) * a.shape(2), a.shape(2), {}};
  view.owned.resize(a.size());
  const float* base = a.data<float>();
  size_t i = 0;
  for (int x = 0; x < a.shape(0); ++x) {
    for (int y = 0; y < a.shape(1); ++y) {
      for (int z = 0; z < a.shape(2); ++z) {
        view.owned[i++] = base[x * strides[0] + y * strides[1] + z * strides[2]];
      }
    }
  }
  view.data = view.owned.data();
  return view;
}

__attribute__((always_inline)) inline float dot(const float* a, const float* b, int64_t d) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      lanes[l] += a[i + l] * b[i + l];
    }
  }
  for (int l = 0; i < d; ++i, ++l) {
    lanes[l] += a[i] * b[i];
  }
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) {
      lanes[l] += lanes[l + width];
    }
  }
  return lanes[0];
}

struct Problem {
  View q, k, v;
  float* out;  // dense [heads, n, d]
  int64_t heads, rows, kv_heads, length, d;
  int query_start, key_start, window;
  float scale;
};

// DRAFTWISE_ISA_CLONES (isa_clones.h) builds the next function for several
// ISAs. The float operations per row stay the same whatever the row count,
// so rows remain batch invariant on every CPU.

// Computes out[head, row, :] for the query heads that share key/value head
// kv: scores over the keys the row attends to, a softmax with each head's
// maximum subtracted, then the weighted sum of values. Each key and value
// row is read once for all those heads. Every head's float operations, and
// their order, are those of a call for that head alone.
DRAFTWISE_ISA_CLONES void attend_kv_group(const Problem& p, int64_t kv, int64_t row,
                                          std::vector<float>& scratch) {
  const int64_t heads = p.heads / p.kv_heads;
  const int64_t position = p.query_start + row;
  int64_t first = p.key_start;
  if (p.window > 0 && position - p.window + 1 > first) {
    first = position - p.window + 1;
  }
  const int64_t begin = first - p.key_start;
  const int64_t end = position - p.key_start + 1;  // exclusive
  const int64_t seen = end - begin;

  scratch.resize(static_cast<size_t>(heads * (p.d + seen + 2)));
  float* q = scratch.data();                 // [heads, d]
  float* scores = q + heads * p.d;           // [heads, seen]
  float* maximum = scores + heads * seen;    // [heads]
  float* total = maximum + heads;            // [heads]
  for (int64_t h = 0; h < heads; ++h) {
    const float* q_row = p.q.data + (kv * heads + h) * p.q.s0 + row * p.q.s1;
    for (int64_t i = 0; i < p.d; ++i) {
      q[h * p.d + i] = q_row[i] * p.scale;
    }
    maximum[h] = -INFINITY;
    total[h] = 0.0f;
  }

  for (int64_t j = begin; j < end; ++j) {
    const float* key = p.k.data + kv * p.k.s0 + j * p.k.s1;
    for (int64_t h = 0; h < heads; ++h) {
      const float s = dot(q + h * p.d, key, p.d);
      scores[h * seen + j - begin] = s;
      maximum[h] = s > maximum[h] ? s : maximum[h];
    }
  }

  for (int64_t h = 0; h < heads; ++h) {
    float* head_scores = scores + h * seen;
    for (int64_t j = 0; j < seen; ++j) {
      head_scores[j] = std::exp(head_scores[j] - maximum[h]);
      total[h] += head_scores[j];
    }
    float* out = p.out + ((kv * heads + h) * p.rows + row) * p.d;
    for (int64_t i = 0; i < p.d; ++i) {
      out[i] = 0.0f;
    }
  }
  for (int64_t j = begin; j < end; ++j) {
    const float* value = p.v.data + kv * p.v.s0 + j * p.v.s1;
    for (int64_t h = 0; h < heads; ++h) {
      const float weight = scores[h * seen + j - begin] / total[h];
      float* __restrict out = p.out + ((kv * heads + h) * p.rows + row) * p.d;
      for (int64_t i = 0; i < p.d; ++i) {
        out[i] += weight * value[i];
      }
    }
  }
}

}  // namespace

mx::array attention_rows(const mx::array& queries, const mx::array& keys, const mx::array& values,
                         int query_start, int key_start, float scale, int window,
                         mx::StreamOrDevice s) {
  for (const auto* part : {&queries, &keys, &values}) {
    if (part->dtype() != mx::float32 || part->ndim() != 3) {
      reject("queries, keys and values must be 3-D float32 arrays, got shape " +
             shape_string(part->shape()));
    }
  }
  if (keys.shape() != values.shape()) {
    reject("keys " + shape_string(keys.shape()) + " and values " +
           shape_string(values.shape()) + " differ in shape");
  }
  const int heads = queries.shape(0);
  const int rows = queries.shape(1);
  const int kv_heads = keys.shape(0);
  if (kv_heads == 0 || heads % kv_heads != 0 || queries.shape(2) != keys.shape(2)) {
    reject("queries " + shape_string(queries.shape()) + " do not fit keys " +
           shape_string(keys.shape()) + ": heads must be a multiple of kv_heads, same head size");
  }
  const int length = keys.shape(1);
  if (query_start < key_start || query_start + rows > key_start + length) {
    reject("rows at positions " + std::to_string(query_start) + ".." +
           std::to_string(query_start + rows - 1) + " are not inside the keys' positions " +
           std::to_string(key_start) + ".." + std::to_string(key_start + length - 1));
  }
  if (window < 0) {
    reject("window=" + std::to_string(window) + " must be 0 (none) or positive");
  }
  const mx::Stream stream = mx::to_stream(s, mx::Device::cpu);
  if (stream.device != mx::Device::cpu) {
    reject("runs on the CPU only; pass stream=mx.cpu");
  }
  return mx::array(
      queries.shape(), mx::float32,
      std::make_shared<AttentionRows>(stream, query_start, key_start, scale, window),
      {queries, keys, values});
}

void AttentionRows::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const auto& input : inputs) {
    encoder.set_input_array(input);
  }
  encoder.set_output_array(out);
  encoder.dispatch([q = mx::array::unsafe_weak_copy(inputs[0]),
                    k = mx::array::unsafe_weak_copy(inputs[1]),
                    v = mx::array::unsafe_weak_copy(inputs[2]),
                    out = mx::array::unsafe_weak_copy(out), query_start = query_start_,
                    key_start = key_start_, scale = scale_, window = window_]() mutable {
    Problem p{view_of(q), view_of(k), view_of(v), out.data<float>(),
              q.shape(0), q.shape(1), k.shape(0), k.shape(1), q.shape(2),
              query_start, key_start, window, scale};
    const int64_t tasks = p.kv_heads * p.rows;
    const int64_t work = p.heads * p.rows * p.length * p.d;
    if (work < (int64_t{1} << 20)) {
      std::vector<float> scratch;
      for (int64_t t = 0; t < tasks; ++t) {
        attend_kv_group(p, t / p.rows, t % p.rows, scratch);
      }
      return;
    }
    ThreadPool& pool = ThreadPool::global();
    std::vector<std::vector<float>> scratch(pool.size());
    pool.run(tasks, [&](int64_t t, int thread) {
      attend_kv_group(p, t / p.rows, t % p.rows, scratch[thread]);
    });
  });
}

void AttentionRows::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  throw std::runtime_error("DraftwiseAttentionRows has no GPU implementation; use mx.cpu");
}

bool AttentionRows::is_equivalent(const mx::Primitive& other) const {
  const auto& rhs = static_cast<const AttentionRows&>(other);
  return query_start_ == rhs.query_start_ && key_start_ == rhs.key_start_ &&
         scale_ == rhs.scale_ && window_ == rhs.window_;
}

std::vector<mx::Shape> AttentionRows::output_shapes(const std::vector<mx::array>& inputs) {
  return {inputs[0].shape()};
}

}  // namespace draftwise

#include "attention_rows.h"

#include <algorithm>
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

// Sixteen float lanes, and their halves, as GCC vector types: each clone
// compiles them to its widest registers with the same per-lane operations.
// The helpers taking them are always inlined, so no call passes them by
// value between clones, and GCC's note on that ABI does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float Lanes16 __attribute__((vector_size(64)));
typedef float Lanes8 __attribute__((vector_size(32)));
typedef float Lanes4 __attribute__((vector_size(16)));
typedef float Lanes2 __attribute__((vector_size(8)));

__attribute__((always_inline)) inline Lanes16 load16(const float* p) {
  Lanes16 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

__attribute__((always_inline)) inline void store16(float* p, Lanes16 v) {
  __builtin_memcpy(p, &v, sizeof v);
}

// Sums 16 lanes with a fixed tree: lane l + w onto lane l for w = 8, 4,
// 2, 1.
__attribute__((always_inline)) inline float sum_tree(Lanes16 lanes) {
  const Lanes8 eight = __builtin_shufflevector(lanes, lanes, 0, 1, 2, 3, 4, 5, 6, 7) +
                       __builtin_shufflevector(lanes, lanes, 8, 9, 10, 11, 12, 13, 14, 15);
  const Lanes4 four = __builtin_shufflevector(eight, eight, 0, 1, 2, 3) +
                      __builtin_shufflevector(eight, eight, 4, 5, 6, 7);
  const Lanes2 two =
      __builtin_shufflevector(four, four, 0, 1) + __builtin_shufflevector(four, four, 2, 3);
  return two[0] + two[1];
}

// a . b over d values: lane l sums the products at l, l + 16, ..., then the
// tail from lane 0 on, then sum_tree.
__attribute__((always_inline)) inline float dot(const float* a, const float* b, int64_t d) {
  Lanes16 lanes = {};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
    lanes += load16(a + i) * load16(b + i);
  }
  for (int l = 0; i < d; ++i, ++l) {
    lanes[l] += a[i] * b[i];
  }
  return sum_tree(lanes);
}

typedef int32_t Ints16 __attribute__((vector_size(64)));

// e^x in each lane, for x <= 0 or NaN (a score minus its row's maximum):
// x = n ln 2 + r with |r| <= ln 2 / 2, e^r from its Taylor series to r^7
// (truncation error below 7.1e-9 relative), times 2^n built in the exponent
// bits. Over [-87.3, 0] the result is at most 1.19 units in the last place
// from e^x (2,000,001 points against float64). Below -87.3, where 2^n would
// leave the normal floats, the result is 0. Every lane runs the same
// operations (no FMA: the build turns contraction off), so a score's weight
// never depends on its neighbours or on the number of rows. One call
// replaces 16 calls of std::exp, which took a fifth of the attention time.
__attribute__((always_inline)) inline Lanes16 exp_nonpositive16(Lanes16 x) {
  const Lanes16 shifter = Lanes16{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const Lanes16 n = (x * 1.44269504f + shifter) - shifter;
  // ln 2 in two parts. The first has 9 significant bits, so n times it is exact.
  const Lanes16 r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  Lanes16 poly = Lanes16{} + (1.0f / 5040.0f);
  poly = poly * r + (1.0f / 720.0f);
  poly = poly * r + (1.0f / 120.0f);
  poly = poly * r + (1.0f / 24.0f);
  poly = poly * r + (1.0f / 6.0f);
  poly = poly * r + 0.5f;
  poly = poly * r + 1.0f;
  poly = poly * r + 1.0f;
  // n is at least -126 wherever the result is used. Clamping it first keeps
  // -inf and NaN lanes out of the float-to-int conversion.
  const Lanes16 n_used = n > -127.0f ? n : Lanes16{} - 127.0f;
  const Ints16 bits = (__builtin_convertvector(n_used, Ints16) + 127) << 23;
  const Lanes16 result = poly * reinterpret_cast<const Lanes16&>(bits);
  const Lanes16 zero = {};
  const Lanes16 low = x < -87.3f ? zero : result;
  return x != x ? x : low;
}

// Keys per tile of the scores: each (row, head) scores 16 keys at once.
constexpr int64_t kScoreTile = 16;

// Writes out[k] = dot(q, keys + k * key_stride, D) for the 16 keys k,
// bit-identical to `dot`. The products are summed into lanes as there.
// The four halving steps of dot's final tree then run for all 16 keys
// together: every addition has the same two operands as in `dot`, and only
// the lanes that carry it differ. That costs about 3 instructions a key
// instead of dot's 7.
template <int D>
__attribute__((always_inline)) inline void dot16(const float* q, const float* keys,
                                                 int64_t key_stride, float* out) {
  auto lanes_of = [&](int k) __attribute__((always_inline)) {
    const float* key = keys + k * key_stride;
    Lanes16 lanes = {};
    for (int i = 0; i < D; i += kLanes) {
      lanes += load16(q + i) * load16(key + i);
    }
    return lanes;
  };
  // a[j]: lanes 0-7 the first halving of key j, lanes 8-15 that of key j + 8.
  Lanes16 a[8];
  for (int j = 0; j < 8; ++j) {
    const Lanes16 low = lanes_of(j);
    const Lanes16 high = lanes_of(j + 8);
    a[j] = __builtin_shufflevector(low, high, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21,
                                   22, 23) +
           __builtin_shufflevector(low, high, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28,
                                   29, 30, 31);
  }
  // b[j]: quarters the second halving of keys j, j + 8, j + 4, j + 12.
  Lanes16 b[4];
  for (int j = 0; j < 4; ++j) {
    b[j] = __builtin_shufflevector(a[j], a[j + 4], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24,
                                   25, 26, 27) +
           __builtin_shufflevector(a[j], a[j + 4], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28,
                                   29, 30, 31);
  }
  // c[j]: lane pairs the third halving of eight keys.
  Lanes16 c[2];
  for (int j = 0; j < 2; ++j) {
    c[j] = __builtin_shufflevector(b[j], b[j + 2], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24,
                                   25, 28, 29) +
           __builtin_shufflevector(b[j], b[j + 2], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26,
                                   27, 30, 31);
  }
  // Lane l of the sums is key 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15.
  // The same list, as a permutation, puts them in key order.
  const Lanes16 sums =
      __builtin_shufflevector(c[0], c[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                              30) +
      __builtin_shufflevector(c[0], c[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29,
                              31);
  store16(out, __builtin_shufflevector(sums, sums, 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11,
                                       7, 15));
}

// out[0 .. D) += weight * value[0 .. D) for each key of a tile, in key
// order, with out held in registers across the tile.
template <int D>
__attribute__((always_inline)) inline void add_weighted_values(float* __restrict out,
                                                               const float* weights,
                                                               const float* values,
                                                               int64_t value_stride,
                                                               int64_t count) {
  constexpr int kVectors = D / kLanes;
  Lanes16 acc[kVectors];
  for (int c = 0; c < kVectors; ++c) {
    acc[c] = load16(out + c * kLanes);
  }
  for (int64_t j = 0; j < count; ++j) {
    const float weight = weights[j];
    const float* value = values + j * value_stride;
    for (int c = 0; c < kVectors; ++c) {
      acc[c] += weight * load16(value + c * kLanes);
    }
  }
  for (int c = 0; c < kVectors; ++c) {
    store16(out + c * kLanes, acc[c]);
  }
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

// Rows one task attends at most. Their queries, scores and outputs stay in
// cache while each key and value row is read once for all of them.
constexpr int64_t kMaxBlockRows = 8;

// Keys per tile of the value sums: 32 value rows of up to 256 floats fit in L1.
constexpr int64_t kKeyTile = 32;

// Key indices [begin, end) of the positions that `row` attends to.
struct KeyRange {
  int64_t begin;
  int64_t end;
};

KeyRange keys_seen(const Problem& p, int64_t row) {
  const int64_t position = p.query_start + row;
  int64_t first = p.key_start;
  if (p.window > 0 && position - p.window + 1 > first) {
    first = position - p.window + 1;
  }
  return {first - p.key_start, position - p.key_start + 1};
}

// Computes out[head, row, :] for rows [row_begin, row_end) and the query heads
// that share key/value head kv: scores over the keys each row attends to, a
// softmax with each (row, head) maximum subtracted, then the weighted sum of
// values. Each key and value row is read once for all those rows and heads.
// Every (row, head) gets the same float operations, in the same order, as a
// call for that row and head alone. Only the loops around them are shared.
DRAFTWISE_ISA_CLONES void attend_kv_block(const Problem& p, int64_t kv, int64_t row_begin,
                                          int64_t row_end, std::vector<float>& scratch) {
  const int64_t heads = p.heads / p.kv_heads;
  const int64_t rows = row_end - row_begin;
  // Rows sit at increasing positions: the first row's keys start earliest
  // and the last row's keys end latest.
  const int64_t block_begin = keys_seen(p, row_begin).begin;
  const int64_t block_end = keys_seen(p, row_end - 1).end;
  const int64_t span = block_end - block_begin;
  const int64_t pairs = rows * heads;  // pair i: row row_begin + i / heads, head i % heads

  scratch.resize(static_cast<size_t>(pairs * (p.d + span + 1)));
  float* q = scratch.data();               // [pairs, d]
  float* scores = q + pairs * p.d;         // [pairs, span], indexed from block_begin
  float* maximum = scores + pairs * span;  // [pairs]
  KeyRange seen[kMaxBlockRows];
  for (int64_t r = 0; r < rows; ++r) {
    seen[r] = keys_seen(p, row_begin + r);
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t i = r * heads + h;
      const float* q_row = p.q.data + (kv * heads + h) * p.q.s0 + (row_begin + r) * p.q.s1;
      for (int64_t e = 0; e < p.d; ++e) {
        q[i * p.d + e] = q_row[e] * p.scale;
      }
      maximum[i] = -INFINITY;
    }
  }

  // Scores, a tile of keys at a time, so that the tile's keys stay in L1
  // while every (row, head) reads them. A whole tile of 16 keys runs dot16,
  // the rest dot, with the same result.
  const float* keys = p.k.data + kv * p.k.s0;
  for (int64_t tile = block_begin; tile < block_end; tile += kScoreTile) {
    const int64_t tile_end = std::min(tile + kScoreTile, block_end);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t first = std::max(tile, seen[r].begin);
      const int64_t last = std::min(tile_end, seen[r].end);
      if (first >= last) {
        continue;
      }
      const bool whole = first == tile && last == tile + kScoreTile;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t i = r * heads + h;
        float* pair_scores = scores + i * span - block_begin;  // indexed by key
        const float* tile_keys = keys + tile * p.k.s1;
        if (whole && p.d == 64) {
          dot16<64>(q + i * p.d, tile_keys, p.k.s1, pair_scores + tile);
        } else if (whole && p.d == 128) {
          dot16<128>(q + i * p.d, tile_keys, p.k.s1, pair_scores + tile);
        } else if (whole && p.d == 256) {
          dot16<256>(q + i * p.d, tile_keys, p.k.s1, pair_scores + tile);
        } else {
          for (int64_t j = first; j < last; ++j) {
            pair_scores[j] = dot(q + i * p.d, keys + j * p.k.s1, p.d);
          }
        }
      }
    }
  }

  // Each (row, head) maximum. Like a fold of `s > max ? s : max` from -inf,
  // it ignores NaN scores, so any order gives the same value (up to the
  // sign of a zero maximum, which no score minus it can tell).
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t i = r * heads + h;
      const float* pair_scores = scores + i * span - block_begin;
      Lanes16 lanes_maximum = {};
      lanes_maximum -= INFINITY;
      int64_t j = seen[r].begin;
      for (; j + kLanes <= seen[r].end; j += kLanes) {
        const Lanes16 values = load16(pair_scores + j);
        lanes_maximum = values > lanes_maximum ? values : lanes_maximum;
      }
      float pair_maximum = -INFINITY;
      for (int l = 0; l < kLanes; ++l) {
        pair_maximum = lanes_maximum[l] > pair_maximum ? lanes_maximum[l] : pair_maximum;
      }
      for (; j < seen[r].end; ++j) {
        pair_maximum = pair_scores[j] > pair_maximum ? pair_scores[j] : pair_maximum;
      }
      maximum[i] = pair_maximum;
    }
  }

  // Softmax: scores become the weights score / total, computed as before
  // the value sums.
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t i = r * heads + h;
      float* pair_scores = scores + i * span;
      const int64_t begin = seen[r].begin - block_begin;
      const int64_t end = seen[r].end - block_begin;
      // Locals, so the compiler need not assume that stores to the scores
      // change the maximum or the total (all live in one scratch buffer).
      const Lanes16 pair_maximum = Lanes16{} + maximum[i];
      // 16 keys at a time from the row's first key, the last few in lanes
      // filled with -inf, whose weight is 0.
      Lanes16 totals = {};
      int64_t j = begin;
      for (; j + kLanes <= end; j += kLanes) {
        const Lanes16 weights = exp_nonpositive16(load16(pair_scores + j) - pair_maximum);
        store16(pair_scores + j, weights);
        totals += weights;
      }
      if (j < end) {
        Lanes16 tail = Lanes16{} - INFINITY;
        for (int64_t t = j; t < end; ++t) {
          tail[t - j] = pair_scores[t];
        }
        const Lanes16 weights = exp_nonpositive16(tail - pair_maximum);
        for (int64_t t = j; t < end; ++t) {
          pair_scores[t] = weights[t - j];
        }
        totals += weights;
      }
      const Lanes16 pair_total = Lanes16{} + sum_tree(totals);
      for (j = begin; j + kLanes <= end; j += kLanes) {
        store16(pair_scores + j, load16(pair_scores + j) / pair_total);
      }
      for (; j < end; ++j) {
        pair_scores[j] = pair_scores[j] / pair_total[0];
      }
      float* out = p.out + ((kv * heads + h) * p.rows + row_begin + r) * p.d;
      for (int64_t e = 0; e < p.d; ++e) {
        out[e] = 0.0f;
      }
    }
  }
  // Weighted values, a tile of keys at a time, so that each (row, head)
  // output stays in registers over a tile whose values stay in cache.
  for (int64_t tile = block_begin; tile < block_end; tile += kKeyTile) {
    const int64_t tile_end = std::min(tile + kKeyTile, block_end);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t first = std::max(tile, seen[r].begin);
      const int64_t last = std::min(tile_end, seen[r].end);
      if (first >= last) {
        continue;
      }
      const float* values = p.v.data + kv * p.v.s0 + first * p.v.s1;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t i = r * heads + h;
        const float* weights = scores + i * span + first - block_begin;
        float* out = p.out + ((kv * heads + h) * p.rows + row_begin + r) * p.d;
        switch (p.d) {
          case 64:
            add_weighted_values<64>(out, weights, values, p.v.s1, last - first);
            break;
          case 128:
            add_weighted_values<128>(out, weights, values, p.v.s1, last - first);
            break;
          case 256:
            add_weighted_values<256>(out, weights, values, p.v.s1, last - first);
            break;
          default:
            for (int64_t j = 0; j < last - first; ++j) {
              const float* value = values + j * p.v.s1;
              for (int64_t e = 0; e < p.d; ++e) {
                out[e] += weights[j] * value[e];
              }
            }
        }
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
    // Rows split into equal blocks of at most kMaxBlockRows, with one task per
    // (key/value head, block). The split changes no float operation.
    const int64_t blocks = (p.rows + kMaxBlockRows - 1) / kMaxBlockRows;
    const int64_t block_rows = (p.rows + blocks - 1) / blocks;
    const int64_t tasks = p.kv_heads * blocks;
    auto run_task = [&p, blocks, block_rows](int64_t t, std::vector<float>& scratch) {
      const int64_t row_begin = (t % blocks) * block_rows;
      const int64_t row_end = std::min(row_begin + block_rows, p.rows);
      attend_kv_block(p, t / blocks, row_begin, row_end, scratch);
    };
    const int64_t work = p.heads * p.rows * p.length * p.d;
    if (work < (int64_t{1} << 20)) {
      std::vector<float> scratch;
      for (int64_t t = 0; t < tasks; ++t) {
        run_task(t, scratch);
      }
      return;
    }
    ThreadPool& pool = ThreadPool::global();
    std::vector<std::vector<float>> scratch(pool.size());
    pool.run(tasks, [&](int64_t t, int thread) { run_task(t, scratch[thread]); });
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

// Attention of new rows over cached keys, each row computed on its own, as an MLX operation.
#pragma once

#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace draftwise {

namespace mx = mlx::core;

// Causal attention of the new rows `queries` [heads, n, d] over `keys` and
// `values` [kv_heads, length, d] (float32), which hold positions key_start ..
// key_start + length - 1. Row i sits at position query_start + i and attends
// to the positions up to its own, and with `window` > 0 only to the last
// `window` of them. Returns float32 [heads, n, d], lazily.
//
// Each (row, head) is computed alone, in a fixed order, from exactly the keys
// it sees: scores q.k * scale, a softmax with the row's maximum subtracted,
// and the probability-weighted sum of the values. So a row's result does not
// depend on how many rows the call has (decode and verify agree bit for bit).
// Rows are grouped in blocks only to read each key and value once per block.
// Throws std::invalid_argument naming the offending value.
mx::array attention_rows(const mx::array& queries, const mx::array& keys, const mx::array& values,
                         int query_start, int key_start, float scale, int window,
                         mx::StreamOrDevice s = {});

class AttentionRows : public mx::UnaryPrimitive {
 public:
  AttentionRows(mx::Stream stream, int query_start, int key_start, float scale, int window)
      : mx::UnaryPrimitive(stream),
        query_start_(query_start),
        key_start_(key_start),
        scale_(scale),
        window_(window) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  const char* name() const override { return "DraftwiseAttentionRows"; }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;

 private:
  int query_start_;
  int key_start_;
  float scale_;
  int window_;
};

}  // namespace draftwise

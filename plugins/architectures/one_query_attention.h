// Multi-head attention of one query position over T keys, as a fused CPU
// kernel with a hand-written backward: what the transformer's last block
// needs when only the last position is read out (last_block_at_readout).
#pragma once

#include <torch/torch.h>

namespace groklab::architectures {

// Returns softmax(q_h · k_{t,h} · scale + mask_row[t]) weighted sums of v_{t,h}
// for every row n and head h:
//   q        [N, d] (rows may be strided; the last dimension contiguous)
//   kv       [N, T, 2d]: keys in [..., :d], values in [..., d:]; or, with
//            rows, a table [R, 2d] of which row rows[n][t] is (k_t, v_t)
//   rows     undefined, or int64 [N, T] row indices into kv
//   mask_row [T] additive, or undefined
// d = heads · hd; head h owns features h·hd … h·hd + hd − 1. Returns [N, d].
// Differentiable in q and kv (float or double, CPU). The forward is one pass
// per row; the backward runs each head's features over the rows in order, so
// a table row's gradient sums its uses in row order. Neither depends on the
// thread count, and a row's result and its gradient contributions do not
// depend on the other rows. With dropout > 0 (training: dropout on the
// attention weights) or off the CPU it computes the reference instead.
torch::Tensor one_query_attention(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& rows,
                                  const torch::Tensor& mask_row, int64_t heads, double scale, double dropout = 0.0);

// The same computed with ATen ops (a gather, elementwise products and sums):
// the reference the kernel is tested against, and the path with dropout or
// on other devices.
torch::Tensor one_query_attention_reference(const torch::Tensor& q, const torch::Tensor& kv,
                                            const torch::Tensor& rows, const torch::Tensor& mask_row, int64_t heads,
                                            double scale, double dropout = 0.0);

}  // namespace groklab::architectures

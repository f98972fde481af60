// The fused one-query attention (see one_query_attention.h).
//
// Per row n and head h, with s_t = scale · q·k_t + m_t and a = softmax(s):
//   forward   out = Σ_t a_t v_t
//   backward  g_t = gout·v_t,  dv_t = a_t gout,  ds_t = a_t (g_t − Σ_u a_u g_u),
//             dq = scale Σ_t ds_t k_t,  dk_t = scale ds_t q.
// With one query, the score and value products of a (row, head) are a
// 1×hd·hd×T and a 1×T·T×hd product: as ATen ops that is a GEMM call each
// (bmm) or several broadcast passes over [N, T, d], where this is one pass.
// With a row index the keys and values are read from their table, so the
// [N, T, 2d] gather is never built, and the backward adds into the table's
// gradient directly.
#include "one_query_attention.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace groklab::architectures {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Σ a[e]·b[e] over n elements, in 8 interleaved partial sums (so the
// compiler can vectorise it) added in a fixed order.
template <typename S>
inline S dot(const S* a, const S* b, int64_t n) {
  S part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t e = 0;
  for (; e + 8 <= n; e += 8)
    for (int j = 0; j < 8; ++j) part[j] += a[e + j] * b[e + j];
  S sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  for (; e < n; ++e) sum += a[e] * b[e];
  return sum;
}

// Shapes, strides and the key/value rows of one call.
struct Geometry {
  int64_t N, T, d, H, hd;
  int64_t q_row;                   // q's row stride
  int64_t kv_row, kv_pos;          // kv's row and position strides (no row index)
  const int64_t* rows = nullptr;   // [N, T] row index into the table, or none
  int64_t table_row = 0;           // the table's row stride
  int64_t grad_row = 0;            // the kv gradient's row stride in the same units

  // Offset of (k_t, v_t) of row n in kv, and in kv's gradient.
  int64_t at(int64_t n, int64_t t) const {
    return rows ? rows[n * T + t] * table_row : n * kv_row + t * kv_pos;
  }
  int64_t grad_at(int64_t n, int64_t t) const {
    return rows ? rows[n * T + t] * grad_row : (n * T + t) * 2 * d;
  }
};

Geometry geometry(const Tensor& q, const Tensor& kv, const Tensor& rows, int64_t heads) {
  Geometry g{};
  g.N = q.size(0);
  g.d = q.size(1);
  g.H = heads;
  g.hd = g.d / heads;
  g.q_row = q.stride(0);
  if (rows.defined()) {
    g.T = rows.size(1);
    g.rows = rows.data_ptr<int64_t>();
    g.table_row = kv.stride(0);
    g.grad_row = 2 * g.d;
  } else {
    g.T = kv.size(1);
    g.kv_row = kv.stride(0);
    g.kv_pos = kv.stride(1);
  }
  return g;
}

template <typename S>
void forward_kernel(const Geometry& g, const S* q, const S* kv, const S* mask, S scale, S* out, S* att) {
  at::parallel_for(0, g.N, 16, [&](int64_t begin, int64_t end) {
    std::vector<S> s(static_cast<size_t>(g.T));
    for (int64_t n = begin; n < end; ++n)
      for (int64_t h = 0; h < g.H; ++h) {
        const S* qh = q + n * g.q_row + h * g.hd;
        S top = -std::numeric_limits<S>::infinity();
        for (int64_t t = 0; t < g.T; ++t) {
          s[t] = dot(qh, kv + g.at(n, t) + h * g.hd, g.hd) * scale + (mask ? mask[t] : S(0));
          top = std::max(top, s[t]);
        }
        S total = 0;
        for (int64_t t = 0; t < g.T; ++t) total += (s[t] = std::exp(s[t] - top));
        S* a = att + (n * g.H + h) * g.T;
        for (int64_t t = 0; t < g.T; ++t) a[t] = s[t] / total;  // all keys masked: NaN, as softmax
        S* o = out + n * g.d + h * g.hd;
        std::fill(o, o + g.hd, S(0));
        for (int64_t t = 0; t < g.T; ++t) {
          const S w = a[t];
          const S* v = kv + g.at(n, t) + g.d + h * g.hd;
          for (int64_t e = 0; e < g.hd; ++e) o[e] += w * v[e];
        }
      }
  });
}

// dq [N, d] is written; dkv ([N, T, 2d], or [R, 2d] with a row index) is
// added to and zero on entry. Parallel over heads, each running the rows in
// order: a head owns its features of q, k and v, so no two threads write the
// same element and every sum has one order.
template <typename S>
void backward_kernel(const Geometry& g, const S* q, const S* kv, const S* att, const S* gout, S scale, S* dq,
                     S* dkv) {
  at::parallel_for(0, g.H, 1, [&](int64_t h_begin, int64_t h_end) {
    std::vector<S> ds(static_cast<size_t>(g.T));
    for (int64_t h = h_begin; h < h_end; ++h)
      for (int64_t n = 0; n < g.N; ++n) {
        const S* qh = q + n * g.q_row + h * g.hd;
        const S* go = gout + n * g.d + h * g.hd;
        const S* a = att + (n * g.H + h) * g.T;
        S mean = 0;
        for (int64_t t = 0; t < g.T; ++t) {
          const int64_t kv_at = g.at(n, t) + h * g.hd, grad_at = g.grad_at(n, t) + h * g.hd;
          ds[t] = dot(go, kv + kv_at + g.d, g.hd);
          mean += a[t] * ds[t];
          S* dv = dkv + grad_at + g.d;
          for (int64_t e = 0; e < g.hd; ++e) dv[e] += a[t] * go[e];
        }
        S* dqh = dq + n * g.d + h * g.hd;
        std::fill(dqh, dqh + g.hd, S(0));
        for (int64_t t = 0; t < g.T; ++t) {
          const S w = a[t] * (ds[t] - mean) * scale;
          const S* k = kv + g.at(n, t) + h * g.hd;
          S* dk = dkv + g.grad_at(n, t) + h * g.hd;
          for (int64_t e = 0; e < g.hd; ++e) {
            dqh[e] += w * k[e];
            dk[e] += w * qh[e];
          }
        }
      }
  });
}

struct OneQueryAttention : torch::autograd::Function<OneQueryAttention> {
  // rows and mask_row by pointer (nullptr: none): an undefined tensor cannot
  // be an autograd input.
  static Tensor forward(AutogradContext* ctx, const Tensor& q, const Tensor& kv, const Tensor* rows,
                        const Tensor* mask_row, int64_t heads, double scale) {
    const Tensor row_index = rows ? *rows : Tensor();
    const Geometry g = geometry(q, kv, row_index, heads);
    Tensor out = torch::empty({g.N, g.d}, q.options());
    Tensor att = torch::empty({g.N, g.H, g.T}, q.options());
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "one_query_attention", [&] {
      forward_kernel<scalar_t>(g, q.data_ptr<scalar_t>(), kv.data_ptr<scalar_t>(),
                               mask_row ? mask_row->data_ptr<scalar_t>() : nullptr, static_cast<scalar_t>(scale),
                               out.data_ptr<scalar_t>(), att.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({q, kv, att, row_index});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list none{Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    if (!grads[0].defined()) return none;
    // The backward is a raw kernel: its outputs carry no graph, so a second
    // derivative would silently be zero. Grad mode is on here only for
    // create_graph = true.
    if (torch::GradMode::is_enabled())
      throw std::runtime_error(
          "one_query_attention: no second derivatives (create_graph = true); the transformer's full path "
          "has them: architecture.last_block_at_readout = false");
    const auto saved = ctx->get_saved_variables();
    const Tensor &q = saved[0], &kv = saved[1], &att = saved[2], &rows = saved[3];
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    const Geometry g = geometry(q, kv, rows, heads);
    const Tensor gout = grads[0].contiguous();
    Tensor dq = torch::empty({g.N, g.d}, q.options());
    Tensor dkv = torch::zeros(rows.defined() ? kv.sizes() : torch::IntArrayRef{g.N, g.T, 2 * g.d}, kv.options());
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "one_query_attention_backward", [&] {
      backward_kernel<scalar_t>(g, q.data_ptr<scalar_t>(), kv.data_ptr<scalar_t>(), att.data_ptr<scalar_t>(),
                                gout.data_ptr<scalar_t>(), static_cast<scalar_t>(scale), dq.data_ptr<scalar_t>(),
                                dkv.data_ptr<scalar_t>());
    });
    variable_list out = none;
    out[0] = dq;
    out[1] = dkv;
    return out;
  }
};

void check(const Tensor& q, const Tensor& kv, const Tensor& rows, const Tensor& mask_row, int64_t heads) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("one_query_attention: " + what); };
  if (q.dim() != 2) fail("q must be [N, d], got " + c10::str(q.sizes()));
  const int64_t N = q.size(0), d = q.size(1);
  if (rows.defined()) {
    if (kv.dim() != 2 || kv.size(1) != 2 * d)
      fail("with rows, kv must be a table [R, 2d], got " + c10::str(kv.sizes()) + " for d = " + std::to_string(d));
    if (rows.dim() != 2 || rows.size(0) != N || rows.scalar_type() != torch::kLong)
      fail("rows must be int64 [N, T] with N = " + std::to_string(N) + ", got " + c10::str(rows.sizes()));
    if (rows.numel() > 0 && (rows.min().item<int64_t>() < 0 || rows.max().item<int64_t>() >= kv.size(0)))
      fail("rows index outside the table's " + std::to_string(kv.size(0)) + " rows");
  } else if (kv.dim() != 3 || kv.size(0) != N || kv.size(2) != 2 * d) {
    fail("q must be [N, d] and kv [N, T, 2d], got " + c10::str(q.sizes()) + " and " + c10::str(kv.sizes()));
  }
  if (heads <= 0 || d % heads != 0) fail(std::to_string(heads) + " heads do not divide d = " + std::to_string(d));
  const int64_t T = rows.defined() ? rows.size(1) : kv.size(1);
  if (mask_row.defined() && (mask_row.dim() != 1 || mask_row.size(0) != T))
    fail("mask_row must be [T], got " + c10::str(mask_row.sizes()));
}

}  // namespace

Tensor one_query_attention(const Tensor& q, const Tensor& kv, const Tensor& rows, const Tensor& mask_row,
                           int64_t heads, double scale, double dropout) {
  check(q, kv, rows, mask_row, heads);
  if (dropout > 0.0 || !q.device().is_cpu() || q.scalar_type() != kv.scalar_type() ||
      (q.scalar_type() != torch::kFloat && q.scalar_type() != torch::kDouble))
    return one_query_attention_reference(q, kv, rows, mask_row, heads, scale, dropout);
  // The kernel reads rows and positions through their strides; features must be contiguous.
  const Tensor qc = q.stride(-1) == 1 ? q : q.contiguous();
  const Tensor kvc = kv.stride(-1) == 1 ? kv : kv.contiguous();
  const Tensor index = rows.defined() ? rows.contiguous() : Tensor();
  const Tensor mask = mask_row.defined() ? mask_row.to(q.scalar_type()).contiguous() : Tensor();
  return OneQueryAttention::apply(qc, kvc, index.defined() ? &index : nullptr, mask.defined() ? &mask : nullptr,
                                  heads, scale);
}

Tensor one_query_attention_reference(const Tensor& q, const Tensor& kv, const Tensor& rows, const Tensor& mask_row,
                                     int64_t heads, double scale, double dropout) {
  check(q, kv, rows, mask_row, heads);
  const Tensor kvs = rows.defined() ? at::embedding(kv, rows, -1, false, false) : kv;  // [N, T, 2d]
  const int64_t N = q.size(0), d = q.size(1), T = kvs.size(1), hd = d / heads;
  auto both = kvs.chunk(2, -1);
  Tensor s = (q.view({N, 1, heads, hd}) * both[0].reshape({N, T, heads, hd})).sum(-1) * scale;  // [N, T, heads]
  if (mask_row.defined()) s = s + mask_row.to(s.scalar_type()).view({T, 1});
  Tensor a = s.softmax(1);
  if (dropout > 0.0) a = at::dropout(a, dropout, true);
  return (a.unsqueeze(-1) * both[1].reshape({N, T, heads, hd})).sum(1).reshape({N, d});
}

}  // namespace groklab::architectures

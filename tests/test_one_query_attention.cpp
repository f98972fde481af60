// The transformer's fused one-query attention kernel (hand-written backward)
// against its ATen reference and against finite differences, in float64.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "one_query_attention.h"

using groklab::architectures::one_query_attention;
using groklab::architectures::one_query_attention_reference;

namespace {

struct Case {
  int64_t N, T, d, heads;
  bool mask;
  int64_t table = 0;  // > 0: kv is a table of this many rows, read through a row index
};

// q as a strided position of [N, T + 1, d] (as the last block passes it), kv
// [N, T, 2d] or a table [R, 2d] with rows [N, T] (every table row used at
// least once when N·T >= R, most several times).
struct Inputs {
  torch::Tensor q_base, kv, rows, mask;
  torch::Tensor q() const { return q_base.select(1, 1); }
};

Inputs inputs(const Case& c, torch::Dtype dtype, uint64_t seed) {
  torch::manual_seed(seed);
  Inputs in;
  const auto opts = torch::TensorOptions().dtype(dtype);
  in.q_base = torch::randn({c.N, c.T + 1, c.d}, opts).requires_grad_(true);
  if (c.table > 0) {
    in.kv = torch::randn({c.table, 2 * c.d}, opts).requires_grad_(true);
    in.rows = torch::randint(0, c.table, {c.N, c.T}, torch::kLong);
  } else {
    in.kv = torch::randn({c.N, c.T, 2 * c.d}, opts).requires_grad_(true);
  }
  if (c.mask) {
    in.mask = torch::randn({c.T}, opts);
    in.mask[0] = -std::numeric_limits<double>::infinity();  // one key never attended
  }
  return in;
}

// The output and the gradients of Σ out·w with respect to q (base) and kv.
struct Result {
  torch::Tensor out, dq, dkv;
};

template <typename F>
Result run(F f, const Inputs& in, const torch::Tensor& w) {
  in.q_base.mutable_grad() = torch::Tensor();
  in.kv.mutable_grad() = torch::Tensor();
  torch::Tensor out = f(in.q(), in.kv, in.rows, in.mask);
  (out * w).sum().backward();
  return {out.detach(), in.q_base.grad().clone(), in.kv.grad().clone()};
}

}  // namespace

TEST_CASE("one_query_attention: the fused kernel computes the ATen reference, values and gradients",
          "[builtin][transformer]") {
  for (const Case& c : {Case{5, 3, 8, 2, false}, Case{7, 3, 128, 4, false}, Case{4, 1, 16, 1, false},
                        Case{6, 7, 12, 2, true}, Case{3, 5, 40, 4, true}, Case{40, 3, 16, 2, false, 9},
                        Case{12, 4, 12, 3, true, 30}}) {
    INFO("N " << c.N << ", T " << c.T << ", d " << c.d << ", heads " << c.heads << ", mask " << c.mask
              << ", table " << c.table);
    const Inputs in = inputs(c, torch::kDouble, 7);
    const double scale = 1 / std::sqrt(static_cast<double>(c.d / c.heads));
    const torch::Tensor w = torch::randn({c.N, c.d}, torch::kDouble);
    auto kernel = [&](const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& r,
                    const torch::Tensor& m) {
      return one_query_attention(q, kv, r, m, c.heads, scale);
    };
    auto reference = [&](const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& r,
                    const torch::Tensor& m) {
      return one_query_attention_reference(q, kv, r, m, c.heads, scale);
    };
    const Result a = run(kernel, in, w), b = run(reference, in, w);
    CHECK(torch::allclose(a.out, b.out, 1e-12, 1e-12));
    CHECK(torch::allclose(a.dq, b.dq, 1e-12, 1e-12));
    CHECK(torch::allclose(a.dkv, b.dkv, 1e-12, 1e-12));
    // Only the position passed as q has a gradient.
    CHECK(a.dq.select(1, 0).abs().max().item<double>() == 0.0);
    if (c.mask && c.table == 0) CHECK(a.dkv.select(1, 0).abs().max().item<double>() == 0.0);  // never attended
  }
}

TEST_CASE("one_query_attention: the hand-written backward matches central finite differences",
          "[builtin][transformer]") {
  // Direct keys and values, and a table of 5 rows shared by 3 × 4 positions.
  for (const Case& c : {Case{3, 4, 12, 3, true}, Case{3, 4, 12, 3, true, 5}}) {
    INFO("table " << c.table);
    const Inputs in = inputs(c, torch::kDouble, 11);
    const double scale = 0.37;
    const torch::Tensor w = torch::randn({c.N, c.d}, torch::kDouble);
    auto kernel = [&](const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& r,
                      const torch::Tensor& m) { return one_query_attention(q, kv, r, m, c.heads, scale); };
    auto loss = [&](const torch::Tensor& q, const torch::Tensor& kv) {
      torch::NoGradGuard no_grad;
      return (kernel(q, kv, in.rows, in.mask) * w).sum().item<double>();
    };
    const Result r = run(kernel, in, w);
    // d loss / d x by central differences, x a coordinate of t.
    auto numeric = [&](torch::Tensor t, torch::Tensor x, const torch::Tensor& q, const torch::Tensor& kv) {
      const double h = 1e-6, v = x.item<double>();
      x.fill_(v + h);
      const double up = loss(q, kv);
      x.fill_(v - h);
      const double down = loss(q, kv);
      x.fill_(v);
      return (up - down) / (2 * h);
    };
    torch::Tensor q = in.q().detach().clone(), kv = in.kv.detach().clone();
    for (int64_t n = 0; n < c.N; ++n)  // every coordinate of q
      for (int64_t e = 0; e < c.d; ++e)
        CHECK(numeric(q, q[n][e], q, kv) == Approx(r.dq[n][1][e].item<double>()).margin(1e-7));
    // Every key and value coordinate of row 1 (direct) or of every table row.
    const torch::Tensor flat = c.table > 0 ? kv : kv[1];
    const torch::Tensor grad = c.table > 0 ? r.dkv : r.dkv[1];
    for (int64_t i = 0; i < flat.size(0); ++i)
      for (int64_t e = 0; e < 2 * c.d; ++e)
        CHECK(numeric(kv, flat[i][e], q, kv) == Approx(grad[i][e].item<double>()).margin(1e-7));
  }
}

TEST_CASE("one_query_attention: a row's result does not depend on the other rows or on the thread count",
          "[builtin][transformer]") {
  // What makes an ensemble member (its rows among S·B, its table rows among
  // S·R) bit-identical to its single run.
  auto kernel = [](const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& r, const torch::Tensor& m) {
    return one_query_attention(q, kv, r, m, 4, 0.125);
  };
  const int threads = at::get_num_threads();
  SECTION("direct keys and values") {
    const Case c{64, 3, 128, 4, false};
    const Inputs in = inputs(c, torch::kFloat, 3);
    const torch::Tensor w = torch::randn({c.N, c.d});
    at::set_num_threads(2);
    const Result two = run(kernel, in, w);
    at::set_num_threads(1);
    const Result all = run(kernel, in, w);
    at::set_num_threads(threads);
    CHECK(torch::equal(two.out, all.out));
    CHECK(torch::equal(two.dq, all.dq));
    CHECK(torch::equal(two.dkv, all.dkv));
    Inputs part;
    part.q_base = in.q_base.detach().narrow(0, 10, 7).clone().requires_grad_(true);
    part.kv = in.kv.detach().narrow(0, 10, 7).clone().requires_grad_(true);
    const Result some = run(kernel, part, w.narrow(0, 10, 7));
    CHECK(torch::equal(some.out, all.out.narrow(0, 10, 7)));
    CHECK(torch::equal(some.dq, all.dq.narrow(0, 10, 7)));
    CHECK(torch::equal(some.dkv, all.dkv.narrow(0, 10, 7)));
  }
  SECTION("a table: two members' tables stacked, each member's rows offset") {
    const Case c{48, 3, 128, 4, false, 20};
    const Inputs a = inputs(c, torch::kFloat, 4), b = inputs(c, torch::kFloat, 5);
    const torch::Tensor wa = torch::randn({c.N, c.d}), wb = torch::randn({c.N, c.d});
    Inputs both;
    both.q_base = torch::cat({a.q_base, b.q_base}).detach().requires_grad_(true);
    both.kv = torch::cat({a.kv, b.kv}).detach().requires_grad_(true);
    both.rows = torch::cat({a.rows, b.rows + c.table});
    at::set_num_threads(2);
    const Result two = run(kernel, both, torch::cat({wa, wb}));
    at::set_num_threads(1);
    const Result stacked = run(kernel, both, torch::cat({wa, wb}));
    const Result ra = run(kernel, a, wa), rb = run(kernel, b, wb);
    at::set_num_threads(threads);
    CHECK(torch::equal(two.out, stacked.out));
    CHECK(torch::equal(two.dkv, stacked.dkv));
    CHECK(torch::equal(stacked.out, torch::cat({ra.out, rb.out})));
    CHECK(torch::equal(stacked.dq, torch::cat({ra.dq, rb.dq})));
    CHECK(torch::equal(stacked.dkv, torch::cat({ra.dkv, rb.dkv})));
  }
}

TEST_CASE("one_query_attention: a second derivative is refused, not silently zero", "[builtin][transformer]") {
  const auto q = torch::randn({4, 8}, torch::kDouble).requires_grad_(true);
  const auto kv = torch::randn({4, 3, 16}, torch::kDouble).requires_grad_(true);
  const auto out = one_query_attention(q, kv, {}, {}, 2, 0.5).sum();
  CHECK_THROWS_WITH(torch::autograd::grad({out}, {q}, {}, /*retain_graph=*/true, /*create_graph=*/true),
                    Catch::Contains("no second derivatives") && Catch::Contains("last_block_at_readout = false"));
  CHECK(torch::autograd::grad({out}, {q})[0].sizes() == q.sizes());  // first derivatives as usual
}

TEST_CASE("one_query_attention: bad shapes are refused with what was expected", "[builtin][transformer]") {
  const auto q = torch::randn({4, 8}), kv = torch::randn({4, 3, 16});
  CHECK_THROWS_WITH(one_query_attention(q, torch::randn({4, 3, 8}), {}, {}, 2, 1.0),
                    Catch::Contains("kv [N, T, 2d]"));
  CHECK_THROWS_WITH(one_query_attention(q, kv, {}, {}, 3, 1.0), Catch::Contains("3 heads do not divide d = 8"));
  CHECK_THROWS_WITH(one_query_attention(q, kv, {}, torch::zeros({2}), 2, 1.0),
                    Catch::Contains("mask_row must be [T]"));
  const auto table = torch::randn({6, 16});
  CHECK_THROWS_WITH(one_query_attention(q, table, torch::zeros({4, 3}, torch::kLong).fill_(6), {}, 2, 1.0),
                    Catch::Contains("rows index outside the table's 6 rows"));
  CHECK_THROWS_WITH(one_query_attention(q, table, torch::zeros({3, 3}, torch::kLong), {}, 2, 1.0),
                    Catch::Contains("rows must be int64 [N, T] with N = 4"));
  CHECK_THROWS_WITH(one_query_attention(q, kv, torch::zeros({4, 3}, torch::kLong), {}, 2, 1.0),
                    Catch::Contains("with rows, kv must be a table [R, 2d]"));
}

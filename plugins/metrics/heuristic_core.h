// The pure pieces of heuristic_core (Bhaskar, Friedman & Chen 2024): head
// subsets, their overlap statistics, and hard-concrete gates (Louizos,
// Welling & Kingma 2018). Header-only so the tests use exactly these
// definitions (they see plugins/metrics through groklab_tree_projection's
// include directory).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <vector>

#include <torch/types.h>

namespace groklab::metrics::heuristic {

// A set of heads, as sorted flat indices l · heads + h.
using Subset = std::vector<int64_t>;

// The number of heads a subset keeps at a sparsity (fraction removed) of n
// heads: n − round(sparsity · n).
inline int64_t kept_heads(int64_t n, double sparsity) {
  return n - static_cast<int64_t>(std::llround(sparsity * static_cast<double>(n)));
}

// Every k-subset of {0, …, n−1}, in lexicographic order.
inline std::vector<Subset> combinations(int64_t n, int64_t k) {
  std::vector<Subset> out;
  if (k < 0 || k > n) return out;
  Subset s(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) s[static_cast<size_t>(i)] = i;
  while (true) {
    out.push_back(s);
    int64_t i = k - 1;
    while (i >= 0 && s[static_cast<size_t>(i)] == n - k + i) --i;
    if (i < 0) return out;
    ++s[static_cast<size_t>(i)];
    for (int64_t j = i + 1; j < k; ++j) s[static_cast<size_t>(j)] = s[static_cast<size_t>(j - 1)] + 1;
  }
}

// For each of n heads, the fraction of subsets that keep it (NaN without subsets).
inline std::vector<double> keep_frequency(const std::vector<Subset>& subsets, int64_t n) {
  std::vector<double> f(static_cast<size_t>(n), 0.0);
  for (const Subset& s : subsets)
    for (int64_t h : s) f[static_cast<size_t>(h)] += 1.0;
  for (double& x : f) x = subsets.empty() ? std::numeric_limits<double>::quiet_NaN() : x / static_cast<double>(subsets.size());
  return f;
}

// |A ∩ B| / |A ∪ B| of two sorted subsets; 1 when both are empty.
inline double jaccard(const Subset& a, const Subset& b) {
  Subset both, either;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
  std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(either));
  return either.empty() ? 1.0 : static_cast<double>(both.size()) / static_cast<double>(either.size());
}

// The mean Jaccard overlap over all unordered pairs of subsets (NaN for fewer than two).
inline double mean_pairwise_jaccard(const std::vector<Subset>& subsets) {
  double sum = 0;
  int64_t pairs = 0;
  for (size_t i = 0; i < subsets.size(); ++i)
    for (size_t j = i + 1; j < subsets.size(); ++j, ++pairs) sum += jaccard(subsets[i], subsets[j]);
  return pairs > 0 ? sum / static_cast<double>(pairs) : std::numeric_limits<double>::quiet_NaN();
}

// The heuristic core: the heads every subset keeps (empty without subsets).
inline Subset core_of(const std::vector<Subset>& subsets) {
  if (subsets.empty()) return {};
  Subset core = subsets.front();
  for (const Subset& s : subsets) {
    Subset both;
    std::set_intersection(core.begin(), core.end(), s.begin(), s.end(), std::back_inserter(both));
    core = std::move(both);
  }
  return core;
}

// Hard-concrete distribution: temperature β, stretch interval (left, right).
struct HardConcrete {
  double beta = 2.0 / 3.0;
  double left = -0.1;
  double right = 1.1;
};

// A gate sample from log α and uniform noise u ∈ (0, 1), differentiable in
// log α: s = σ((ln u − ln(1 − u) + log α) / β), z = clamp(s · (right − left) + left, 0, 1).
inline torch::Tensor hard_concrete_sample(const torch::Tensor& log_alpha, const torch::Tensor& u,
                                          const HardConcrete& hc = {}) {
  const torch::Tensor s = torch::sigmoid((torch::log(u) - torch::log(1 - u) + log_alpha) / hc.beta);
  return torch::clamp(s * (hc.right - hc.left) + hc.left, 0.0, 1.0);
}

// P(z > 0) = σ(log α − β ln(−left / right)): the expected L0 norm of one gate.
inline torch::Tensor hard_concrete_keep_probability(const torch::Tensor& log_alpha, const HardConcrete& hc = {}) {
  return torch::sigmoid(log_alpha - hc.beta * std::log(-hc.left / hc.right));
}

}  // namespace groklab::metrics::heuristic

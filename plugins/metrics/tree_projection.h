// Tree projections (Murty, Sharma, Andreas & Manning, ICLR 2023 and ACL 2023):
// the greedy top-down tree search over a span-contextual-invariance (SCI)
// table, the tree-structuredness score against random splits, and unlabelled
// bracketing F1. No LibTorch: the metrics plugin and the tests link it.
//
//   SciTable sci(n);  sci.at(i, j) = cos(ṽ(i, j), v(i, j));   // 0 ≤ i ≤ j < n
//   SplitMix64 rng(seed, "tree_structuredness");
//   Projection p = project(sci, rng);   // p.spans, p.score
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "splitmix.h"

namespace groklab::metrics {

// SCI(i, j) for the word spans 0 ≤ i ≤ j < n of one sentence.
class SciTable {
 public:
  explicit SciTable(int64_t n) : n_(n), v_(static_cast<size_t>(n * n), 0.0) {}
  int64_t words() const { return n_; }
  double& at(int64_t i, int64_t j) { return v_[static_cast<size_t>(i * n_ + j)]; }
  double at(int64_t i, int64_t j) const { return v_[static_cast<size_t>(i * n_ + j)]; }

 private:
  int64_t n_;
  std::vector<double> v_;
};

// An inclusive word span [first, second].
using Span = std::pair<int64_t, int64_t>;

// The projected tree of one sentence.
struct Projection {
  // Its internal nodes (spans of ≥ 2 words), root first, in preorder (left
  // subtree before right).
  std::vector<Span> spans;
  // Σ over internal nodes [i, j] of [SCI(i, k*) + SCI(k*+1, j)] −
  // [SCI(i, r) + SCI(r+1, j)], k* the best split and r a uniformly random one.
  double score = 0.0;
};

// Greedy top-down: at [i, j], k* = argmax_{i ≤ k < j} SCI(i, k) + SCI(k+1, j)
// (the first k on ties), recurse into [i, k*] and [k*+1, j]. r is drawn from
// rng at every internal node in preorder (rng.below(j − i), one draw per node).
Projection project(const SciTable& sci, SplitMix64& rng);

// Counts for corpus-level unlabelled bracketing F1 over spans of ≥ 2 words
// (root included): spans in both, predicted, gold.
struct Bracketing {
  int64_t matched = 0, predicted = 0, gold = 0;
  // Adds one sentence's trees (spans of fewer than 2 words are ignored;
  // duplicates count once).
  void add(const std::vector<Span>& predicted_spans, const std::vector<Span>& gold_spans);
  // 2PR / (P + R) with P = matched / predicted, R = matched / gold; 0 when
  // nothing matched.
  double f1() const;
};

}  // namespace groklab::metrics

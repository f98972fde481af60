#include "tree_projection.h"

#include <algorithm>
#include <set>

namespace groklab::metrics {
namespace {

void search(const SciTable& sci, int64_t i, int64_t j, SplitMix64& rng, Projection& out) {
  if (j <= i) return;
  out.spans.emplace_back(i, j);
  int64_t best = i;
  double best_v = sci.at(i, i) + sci.at(i + 1, j);
  for (int64_t k = i + 1; k < j; ++k) {
    const double v = sci.at(i, k) + sci.at(k + 1, j);
    if (v > best_v) {
      best_v = v;
      best = k;
    }
  }
  const auto r = i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(j - i)));
  out.score += best_v - (sci.at(i, r) + sci.at(r + 1, j));
  search(sci, i, best, rng, out);
  search(sci, best + 1, j, rng, out);
}

std::set<Span> long_spans(const std::vector<Span>& spans) {
  std::set<Span> s;
  for (const Span& x : spans)
    if (x.second > x.first) s.insert(x);
  return s;
}

}  // namespace

Projection project(const SciTable& sci, SplitMix64& rng) {
  Projection p;
  search(sci, 0, sci.words() - 1, rng, p);
  return p;
}

void Bracketing::add(const std::vector<Span>& predicted_spans, const std::vector<Span>& gold_spans) {
  const std::set<Span> p = long_spans(predicted_spans), g = long_spans(gold_spans);
  predicted += static_cast<int64_t>(p.size());
  gold += static_cast<int64_t>(g.size());
  for (const Span& x : p) matched += static_cast<int64_t>(g.count(x));
}

double Bracketing::f1() const {
  if (matched == 0) return 0.0;
  const double prec = static_cast<double>(matched) / static_cast<double>(predicted);
  const double rec = static_cast<double>(matched) / static_cast<double>(gold);
  return 2 * prec * rec / (prec + rec);
}

}  // namespace groklab::metrics

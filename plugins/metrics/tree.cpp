// tree_structuredness and tparseval: tree projections (Murty et al. 2023) of
// the model's final-layer states, through the forward hooks' attention masking.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "metrics.h"
#include "tree_projection.h"

namespace groklab::metrics {
namespace {

using torch::Tensor;

// Fills sci with SCI(i, j) = cos(ṽ(i, j), v(i, j)) of one sentence (inputs:
// start token and n words). v(i, j) = Σ_{k=i..j} h_k of the final-layer states
// of the normal pass; ṽ(i, j) the same sum from a pass in which every layer's
// keys are restricted to the start token and w_i…w_j (positions unchanged).
// The n(n+1)/2 masked passes run as batches of at most batch_size spans.
void fill_sci(Model& model, const std::vector<int64_t>& inputs, int64_t batch_size, SciTable& sci) {
  const int64_t n = sci.words(), T = n + 1;
  const Tensor x = torch::tensor(inputs, torch::kLong).unsqueeze(0);  // [1, T]
  ForwardHooks outer;
  outer.record_hidden = true;
  model.forward_hooked(x, outer);
  // cum[p] = Σ_{q ≤ p} h_q over positions 1…p (cum[0] = 0): v(i, j) = cum[j+1] − cum[i].
  const Tensor h = outer.hidden.back()[0].to(torch::kCPU, torch::kDouble).narrow(0, 1, n);  // [n, d]
  const Tensor cum = torch::cat({torch::zeros({1, h.size(1)}, torch::kDouble), h.cumsum(0)});

  std::vector<Span> spans;
  spans.reserve(static_cast<size_t>(n * (n + 1) / 2));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) spans.emplace_back(i, j);
  const auto total = static_cast<int64_t>(spans.size());
  const int64_t bs = batch_size > 0 ? batch_size : total;
  const Tensor pos = torch::arange(T, torch::kLong);
  for (int64_t start = 0; start < total; start += bs) {
    const int64_t B = std::min(bs, total - start);
    std::vector<int64_t> lo(static_cast<size_t>(B)), hi(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      lo[static_cast<size_t>(b)] = spans[static_cast<size_t>(start + b)].first + 1;  // positions
      hi[static_cast<size_t>(b)] = spans[static_cast<size_t>(start + b)].second + 1;
    }
    const Tensor l = torch::tensor(lo, torch::kLong).unsqueeze(1), r = torch::tensor(hi, torch::kLong).unsqueeze(1);
    const Tensor in_span = pos.unsqueeze(0).ge(l).logical_and(pos.unsqueeze(0).le(r));  // [B, T]
    ForwardHooks inner;
    inner.record_hidden = true;
    inner.attend = in_span.logical_or(pos.unsqueeze(0).eq(0));
    model.forward_hooked(x.expand({B, T}), inner);
    const Tensor hid = inner.hidden.back().to(torch::kCPU, torch::kDouble);     // [B, T, d]
    const Tensor inner_v = (hid * in_span.unsqueeze(2).to(torch::kDouble)).sum(1);  // [B, d]
    const Tensor outer_v = cum.index_select(0, r.squeeze(1)) - cum.index_select(0, l.squeeze(1) - 1);
    const Tensor cos = torch::cosine_similarity(inner_v, outer_v, 1, 1e-8).contiguous();
    const double* c = cos.data_ptr<double>();
    for (int64_t b = 0; b < B; ++b) {
      const Span& s = spans[static_cast<size_t>(start + b)];
      sci.at(s.first, s.second) = c[b];
    }
  }
}

// One class for both metrics: tree_structuredness reports the tscore (and the
// tparseval when the task's sentences have gold trees); tparseval reports the
// F1 alone and requires gold trees.
class TreeProjections final : public Metric {
 public:
  TreeProjections(const Params& p, bool parseval_only)
      : split_(p.get_string("split")),
        sentences_(p.get_int("sentences")),
        batch_size_(p.get_int("batch_size")),
        max_words_(p.get_int("max_words")),
        parseval_only_(parseval_only) {}

  std::map<std::string, double> evaluate(const EvalContext& ctx) override {
    const std::string name = parseval_only_ ? "tparseval" : "tree_structuredness";
    if (ctx.model == nullptr || ctx.task == nullptr) throw std::invalid_argument(name + " needs a model and a task");
    require_hooks(*ctx.model, name);
    Evaluating guard(ctx.model);
    const std::string split = split_or_train(*ctx.task, split_);
    Tensor idx;
    try {
      idx = ctx.task->sentence_indices(split);
    } catch (const std::logic_error& e) {
      throw std::invalid_argument(name + " needs a task with sentences: " + e.what());
    }
    idx = idx.to(torch::kLong).contiguous();
    if (max_words_ > 0) {  // only sentences of at most max_words words
      std::vector<int64_t> keep;
      for (int64_t k = 0; k < idx.numel(); ++k) {
        const int64_t i = idx.data_ptr<int64_t>()[k];
        if (static_cast<int64_t>(ctx.task->sentence(split, i).inputs.size()) - 1 <= max_words_) keep.push_back(i);
      }
      idx = torch::tensor(keep, torch::kLong);
    }
    idx = sample_indices(idx, sentences_, ctx.seed, split).contiguous();
    SplitMix64 rng(ctx.seed, "tree_structuredness");
    double score = 0;
    Bracketing brackets;
    bool all_gold = true;
    const int64_t* ip = idx.data_ptr<int64_t>();
    for (int64_t s = 0; s < idx.numel(); ++s) {
      const Sentence sen = ctx.task->sentence(split, ip[s]);
      const auto n = static_cast<int64_t>(sen.inputs.size()) - 1;
      if (n < 1) continue;
      all_gold = all_gold && (n < 2 || !sen.gold.empty());
      if (parseval_only_ && !all_gold)
        throw std::invalid_argument("tparseval needs gold trees; the task's sentences of split '" + split +
                                    "' have none");
      SciTable sci(n);
      fill_sci(*ctx.model, sen.inputs, batch_size_, sci);
      const Projection p = project(sci, rng);
      score += p.score;
      std::vector<Span> gold;
      for (const auto& g : sen.gold) gold.emplace_back(g.first - 1, g.second - 1);  // words from 0
      brackets.add(p.spans, gold);
    }
    const auto count = static_cast<double>(std::max<int64_t>(idx.numel(), 1));
    std::map<std::string, double> out;
    if (!parseval_only_) out[split + "_tscore"] = score / count;
    if (all_gold && idx.numel() > 0) out[split + "_tparseval"] = brackets.f1();
    return out;
  }

 private:
  std::string split_;
  int64_t sentences_, batch_size_, max_words_;
  bool parseval_only_;
};

Schema tree_schema() {
  return Schema()
      .string("split", std::string(), "split whose sentences are read (\"\": the training split)")
      .integer("sentences", 500, "a seeded sample of this many sentences (0: all)")
      .min(0)
      .integer("batch_size", 512, "masked span passes per forward pass (0: all of a sentence's at once)")
      .min(0)
      .integer("max_words", 0,
               "sample only sentences of at most this many words (0: any; the cost grows as n³)")
      .min(0);
}

}  // namespace

void register_tree(Registrar& r) {
  r.add_metric("tree_structuredness",
               "Murty et al. tree projections: mean over sentences of Σ over the greedy best tree's "
               "nodes of SCI(best split) − SCI(random split): {\"<split>_tscore\": v} (and "
               "\"<split>_tparseval\" when the task has gold trees)",
               tree_schema(), [](const Params& p) { return std::make_shared<TreeProjections>(p, false); });
  r.add_metric("tparseval",
               "Murty et al.: corpus-level unlabelled bracketing F1 of the projected trees against "
               "the task's gold binary trees (spans ≥ 2 words, root included): {\"<split>_tparseval\": v}",
               tree_schema(), [](const Params& p) { return std::make_shared<TreeProjections>(p, true); });
}

}  // namespace groklab::metrics

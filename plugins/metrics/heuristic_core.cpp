// heuristic_core (Bhaskar, Friedman & Chen 2024, adapted to small models):
// subsets of attention heads that keep training accuracy when every other
// head is mean-ablated, how much they overlap, and the accuracy of the heads
// they all keep (the core).
#include <ATen/core/Reduction.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/autograd.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "heuristic_core.h"
#include "metrics.h"

namespace groklab::metrics {
namespace {

using heuristic::Subset;
using torch::Tensor;

// A model whose heads are gated (ForwardHooks::head_gate) and whose ablated
// heads output head_fill: forward() is the wrapped model's forward_hooked(),
// so Task::correct_model (greedy decoding) sees the ablated network too.
// Inputs shorter than the fill use its first positions.
class Ablated final : public Model {
 public:
  Ablated(Model& model, Tensor gate, Tensor fill) : model_(model), gate_(std::move(gate)), fill_(std::move(fill)) {
    eval();
  }
  Tensor forward(const Tensor& inputs) override {
    ForwardHooks h;
    h.head_gate = gate_;
    const int64_t T = inputs.size(1);
    if (T > fill_.size(2))
      throw std::invalid_argument("heuristic_core: inputs of " + std::to_string(T) + " positions, but the head means " +
                                  "cover " + std::to_string(fill_.size(2)));
    h.head_fill = fill_.narrow(2, 0, T);
    return model_.forward_hooked(inputs, h);
  }
  ModelInternals internals() const override { return model_.internals(); }

 private:
  Model& model_;
  Tensor gate_, fill_;
};

class HeuristicCore final : public Metric {
 public:
  explicit HeuristicCore(const Params& p)
      : split_(p.get_string("split")),
        test_split_(p.get_string("test_split")),
        sparsity_(p.get_float("sparsity")),
        tolerance_(p.get_float("tolerance")),
        subsets_(p.get_int("subsets")),
        exhaustive_max_(p.get_int("exhaustive_max")),
        max_examples_(p.get_int("max_examples")),
        test_examples_(p.get_int("test_examples")),
        batch_size_(p.get_int("batch_size")),
        steps_(p.get_int("steps")),
        gate_batch_(p.get_int("gate_batch")),
        lr_(p.get_float("lr")),
        penalty_(p.get_float("penalty")) {}

  std::map<std::string, double> evaluate(const EvalContext& ctx) override {
    if (ctx.model == nullptr || ctx.task == nullptr)
      throw std::invalid_argument("heuristic_core needs a model and a task");
    const ModelInternals in = require_hooks(*ctx.model, "heuristic_core");
    Evaluating guard(ctx.model);
    const std::string train = split_or_train(*ctx.task, split_);
    const int64_t n = in.layers * in.heads, k = heuristic::kept_heads(n, sparsity_);
    const Tensor fill = head_means(ctx, train, in);
    const Tensor train_idx = sample_indices(ctx.task->scored(train), max_examples_, ctx.seed, train);
    const Tensor test_idx = sample_indices(ctx.task->scored(test_split_), test_examples_, ctx.seed, test_split_);

    const double full = accuracy(ctx, iota(n), n, fill, train, train_idx);
    std::vector<std::pair<double, Subset>> found;  // (training accuracy, subset)
    int64_t qualifying = 0;
    if (n <= exhaustive_max_) {
      for (Subset& s : heuristic::combinations(n, k)) {
        const double acc = accuracy(ctx, s, n, fill, train, train_idx);
        if (acc >= full - tolerance_) found.emplace_back(acc, std::move(s));
      }
      qualifying = static_cast<int64_t>(found.size());
      // Best training accuracy first; lexicographic among equals (stable).
      std::stable_sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
      if (static_cast<int64_t>(found.size()) > subsets_) found.resize(static_cast<size_t>(subsets_));
    } else {
      auto gen = at::make_generator<at::CPUGeneratorImpl>(ctx.seed);
      for (int64_t r = 0; r < subsets_; ++r) {
        Subset s = train_gates(ctx, in, k, fill, train, train_idx, gen);
        const double acc = accuracy(ctx, s, n, fill, train, train_idx);
        if (acc >= full - tolerance_) found.emplace_back(acc, std::move(s));
      }
      qualifying = static_cast<int64_t>(found.size());
    }

    const double nan = std::numeric_limits<double>::quiet_NaN();
    std::map<std::string, double> out{{"heuristic_core_train_accuracy", full},
                                      {"heuristic_core_subsets", static_cast<double>(found.size())},
                                      {"heuristic_core_qualifying", static_cast<double>(qualifying)},
                                      {"heuristic_core_kept", static_cast<double>(k)}};
    std::vector<Subset> sets;
    double sum = 0, lo = nan, hi = nan;
    for (size_t i = 0; i < found.size(); ++i) {
      sets.push_back(found[i].second);
      const double acc = accuracy(ctx, found[i].second, n, fill, test_split_, test_idx);
      out["heuristic_core_subset_" + std::to_string(i) + "_test_accuracy"] = acc;
      sum += acc;
      lo = i == 0 ? acc : std::min(lo, acc);
      hi = i == 0 ? acc : std::max(hi, acc);
    }
    out["heuristic_core_test_accuracy_mean"] = sets.empty() ? nan : sum / static_cast<double>(sets.size());
    out["heuristic_core_test_accuracy_min"] = lo;
    out["heuristic_core_test_accuracy_max"] = hi;
    const std::vector<double> freq = heuristic::keep_frequency(sets, n);
    for (int64_t l = 0; l < in.layers; ++l)
      for (int64_t h = 0; h < in.heads; ++h)
        out["heuristic_core_keep_L" + std::to_string(l) + "H" + std::to_string(h)] =
            freq[static_cast<size_t>(l * in.heads + h)];
    out["heuristic_core_jaccard"] = heuristic::mean_pairwise_jaccard(sets);
    const Subset core = heuristic::core_of(sets);
    out["heuristic_core_size"] = sets.empty() ? nan : static_cast<double>(core.size());
    out["heuristic_core_test_accuracy"] = sets.empty() ? nan : accuracy(ctx, core, n, fill, test_split_, test_idx);
    return out;
  }

 private:
  static Subset iota(int64_t n) {
    Subset s(static_cast<size_t>(n));
    std::iota(s.begin(), s.end(), int64_t{0});
    return s;
  }

  // Mean ablation values: each head's output averaged over the sampled
  // training examples at each position, [layers, heads, T, d_head].
  Tensor head_means(const EvalContext& ctx, const std::string& split, const ModelInternals& in) const {
    Tensor sum;
    int64_t count = 0;
    for_each_batch(ctx, split, max_examples_, batch_size_, [&](const Batch& b) {
      ForwardHooks h;
      h.record_heads = true;
      ctx.model->forward_hooked(b.inputs, h);
      const Tensor z = torch::stack(h.heads).to(torch::kDouble).sum(1);  // [layers, heads, T, d_head]
      sum = sum.defined() ? sum + z : z;
      count += b.inputs.size(0);
    });
    if (count == 0) throw std::invalid_argument("heuristic_core: split '" + split + "' has no examples");
    return (sum / static_cast<double>(count)).to(torch::kFloat);
  }

  // The task's accuracy on split's examples at idx with only the heads of s
  // kept (the others mean-ablated).
  double accuracy(const EvalContext& ctx, const Subset& s, int64_t n, const Tensor& fill, const std::string& split,
                  const Tensor& idx) const {
    const ModelInternals in = ctx.model->internals();
    Tensor gate = torch::zeros({n});
    for (int64_t h : s) gate[h] = 1.0;
    Ablated model(*ctx.model, gate.view({in.layers, in.heads}), fill);
    const int64_t total = idx.numel(), bs = batch_size_ > 0 ? batch_size_ : std::max<int64_t>(total, 1);
    double num = 0, den = 0;
    for (int64_t start = 0; start < total; start += bs)
      count_correct(model, *ctx.task, split, idx.narrow(0, start, std::min(bs, total - start)), num, den);
    return den > 0 ? num / den : std::numeric_limits<double>::quiet_NaN();
  }

  // One restart of hard-concrete gates on the frozen model: log α ~ N(10,
  // 0.01²), Adam on the training cross-entropy of the gated model plus
  // penalty · (mean P(z > 0) − k/n)²; returns the k heads of largest log α.
  Subset train_gates(const EvalContext& ctx, const ModelInternals& in, int64_t k, const Tensor& fill,
                     const std::string& split, const Tensor& idx, at::Generator& gen) const {
    const int64_t n = in.layers * in.heads, total = idx.numel();
    torch::AutoGradMode grad(true);
    Tensor log_alpha = (torch::randn({n}, gen) * 0.01 + 10.0).set_requires_grad(true);
    torch::optim::Adam opt({log_alpha}, torch::optim::AdamOptions(lr_));
    const double target = static_cast<double>(k) / static_cast<double>(n);
    for (int64_t step = 0; step < steps_ && total > 0; ++step) {
      const Tensor pick = gate_batch_ > 0 && gate_batch_ < total ? torch::randint(total, {gate_batch_}, gen) : Tensor();
      const Batch b = ctx.task->batch(split, pick.defined() ? idx.index_select(0, pick) : idx);
      const Tensor u = torch::rand({n}, gen).clamp(1e-6, 1 - 1e-6);
      ForwardHooks h;
      h.head_gate = heuristic::hard_concrete_sample(log_alpha, u).view({in.layers, in.heads});
      h.head_fill = fill.narrow(2, 0, b.inputs.size(1));
      const Tensor logits = ctx.model->forward_hooked(b.inputs, h);
      const int64_t L = logits.size(1), T = b.targets.size(1);
      const Tensor ce = at::cross_entropy_loss(logits.reshape({-1, logits.size(2)}),
                                               b.targets.narrow(1, T - L, L).reshape({-1}), {}, at::Reduction::Mean, -1);
      const Tensor kept = heuristic::hard_concrete_keep_probability(log_alpha).mean();
      const Tensor loss = ce + penalty_ * (kept - target).pow(2);
      // Only log α receives a gradient: the model's parameters stay untouched.
      log_alpha.mutable_grad() = torch::autograd::grad({loss}, {log_alpha})[0];
      opt.step();
    }
    const Tensor order = std::get<1>(log_alpha.detach().sort(/*stable=*/true, 0, /*descending=*/true));
    Subset s(order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + k);
    std::sort(s.begin(), s.end());
    return s;
  }

  std::string split_, test_split_;
  double sparsity_, tolerance_;
  int64_t subsets_, exhaustive_max_, max_examples_, test_examples_, batch_size_, steps_, gate_batch_;
  double lr_, penalty_;
};

}  // namespace

void register_heuristic_core(Registrar& r) {
  r.add_metric(
      "heuristic_core",
      "Bhaskar et al.: head subsets at a sparsity that keep training accuracy under mean ablation "
      "(exhaustive up to exhaustive_max heads, else hard-concrete gates), their test accuracies, keep "
      "frequencies, Jaccard overlap and the core: {\"heuristic_core_…\": v}",
      Schema()
          .real("sparsity", 0.5, "fraction of the heads a subset removes (mean-ablates)")
          .range(0, 1)
          .real("tolerance", 0.01, "a subset qualifies with training accuracy ≥ the full model's − tolerance")
          .min(0)
          .integer("subsets", 8, "subsets reported: the best qualifying (exhaustive), or restarts (gates)")
          .min(1)
          .integer("exhaustive_max", 12, "search every subset when the model has at most this many heads")
          .min(0)
          .string("split", std::string(), "split for the head means, accuracy and gates (\"\": the training split)")
          .string("test_split", std::string("test"), "split of the reported test accuracies")
          .integer("max_examples", 500, "seeded sample of training examples (0: all)")
          .min(0)
          .integer("test_examples", 500, "seeded sample of test examples (0: every scored one)")
          .min(0)
          .integer("batch_size", 500, "examples per forward pass (0: all at once)")
          .min(0)
          .integer("steps", 200, "Adam steps per restart of the hard-concrete gates")
          .min(1)
          .integer("gate_batch", 64, "training examples per gate step, drawn with the metric seed (0: all)")
          .min(0)
          .real("lr", 0.1, "Adam learning rate of log α")
          .min(0)
          .real("penalty", 10.0, "weight of (mean P(gate > 0) − kept fraction)², the L0 sparsity penalty")
          .min(0),
      [](const Params& p) { return std::make_shared<HeuristicCore>(p); });
}

}  // namespace groklab::metrics

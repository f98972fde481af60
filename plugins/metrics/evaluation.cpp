// accuracy, loss and weight_norm. Each evaluates without autograd and with
// the model in eval mode, restoring its mode afterwards.
#include <ATen/core/Reduction.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "groklab/components.h"
#include "metrics.h"

namespace groklab::metrics {
namespace {

using torch::Tensor;

// A metric over whole splits, in batches; subclasses sum per batch.
class SplitMetric : public Metric {
 public:
  SplitMetric(const Params& p, std::string suffix)
      : split_(p.get_string("split")), batch_size_(p.get_int("batch_size")), suffix_(std::move(suffix)) {}

  std::map<std::string, double> evaluate(const EvalContext& ctx) override {
    if (ctx.model == nullptr || ctx.task == nullptr)
      throw std::invalid_argument("metric needs a model and a task");
    Evaluating guard(ctx.model);
    std::vector<std::string> splits{split_};
    if (split_ == "all") splits = ctx.task->splits();
    std::map<std::string, double> out;
    for (const auto& s : splits) {
      const Tensor idx = indices(ctx, s);
      const int64_t n = idx.numel();
      const int64_t bs = batch_size_ > 0 ? batch_size_ : std::max<int64_t>(n, 1);
      double num = 0, den = 0;
      for (int64_t start = 0; start < n; start += bs)
        evaluate_batch(ctx, s, idx.narrow(0, start, std::min(bs, n - start)), num, den);
      out[s + "_" + suffix_] = den > 0 ? num / den : std::numeric_limits<double>::quiet_NaN();
    }
    return out;
  }

 protected:
  // The int64 indices of split's examples to measure. Default: all.
  virtual Tensor indices(const EvalContext& ctx, const std::string& split) {
    return torch::arange(ctx.task->size(split), torch::kLong);
  }
  // Adds the numerator and denominator of the examples at idx.
  virtual void evaluate_batch(const EvalContext& ctx, const std::string& split, const Tensor& idx,
                              double& num, double& den) = 0;

 private:
  std::string split_;
  int64_t batch_size_;
  std::string suffix_;
};

// Fraction of examples the task calls correct: Task::correct gives [B]
// bools. A task that scores positions instead gives [B, L] integers (1 right,
// 0 wrong, -1 not scored); the fraction is then over its scored positions.
//
// It counts the examples Task::scored lists (all by default), a seeded sample
// of max_examples of them if max_examples > 0 (the metric-sampling seed of the
// evaluation), and asks Task::correct_model first (tasks that decode), falling
// back to one forward pass and Task::correct.
class Accuracy final : public SplitMetric {
 public:
  explicit Accuracy(const Params& p) : SplitMetric(p, "accuracy"), max_examples_(p.get_int("max_examples")) {}

 private:
  Tensor indices(const EvalContext& ctx, const std::string& split) override {
    return sample_indices(ctx.task->scored(split), max_examples_, ctx.seed, split);
  }

  void evaluate_batch(const EvalContext& ctx, const std::string& split, const Tensor& idx, double& num,
                      double& den) override {
    count_correct(*ctx.model, *ctx.task, split, idx, num, den);
  }

  int64_t max_examples_;
};

// Mean cross-entropy (float64) over scored positions.
class Loss final : public SplitMetric {
 public:
  explicit Loss(const Params& p) : SplitMetric(p, "loss") {}

 private:
  void evaluate_batch(const EvalContext& ctx, const std::string& split, const Tensor& idx, double& num,
                      double& den) override {
    const Batch b = ctx.task->batch(split, idx);
    const Tensor logits = ctx.model->forward(b.inputs);
    const int64_t L = logits.size(1), T = b.targets.size(1);
    const Tensor targets = b.targets.narrow(1, T - L, L).reshape({-1});
    const Tensor lg = logits.reshape({-1, logits.size(2)}).to(torch::kDouble);
    num += at::cross_entropy_loss(lg, targets, {}, at::Reduction::Sum, -1).item<double>();
    den += static_cast<double>(targets.ge(0).sum().item<int64_t>());
  }
};

// √(Σ θ²) over all parameters, in float64; per layer over the parameters
// named `<layer_prefix><l>.…`; and Murty et al.'s comparison across depths,
// the norm divided by the number of layers L (Model::internals().layers, or
// the number of layers found by name).
class WeightNorm final : public Metric {
 public:
  explicit WeightNorm(const Params& p) : prefix_(p.get_string("layer_prefix")) {}
  std::map<std::string, double> evaluate(const EvalContext& ctx) override {
    if (ctx.model == nullptr) throw std::invalid_argument("weight_norm needs a model");
    torch::NoGradGuard no_grad;
    double sum = 0;
    std::map<int64_t, double> layers;
    for (const auto& p : ctx.model->named_parameters(true)) {
      const double sq = p.value().to(torch::kDouble).pow(2).sum().item<double>();
      sum += sq;
      if (const int64_t l = layer_of(p.key()); l >= 0) layers[l] += sq;
    }
    std::map<std::string, double> out{{"weight_norm", std::sqrt(sum)}};
    const int64_t L = std::max<int64_t>(ctx.model->internals().layers, static_cast<int64_t>(layers.size()));
    if (L > 0) out["weight_norm_per_layer"] = std::sqrt(sum) / static_cast<double>(L);
    for (const auto& [l, sq] : layers) out["weight_norm_layer_" + std::to_string(l)] = std::sqrt(sq);
    return out;
  }

 private:
  // The layer number in `<prefix><digits>.rest`, or -1.
  int64_t layer_of(const std::string& name) const {
    if (prefix_.empty() || name.compare(0, prefix_.size(), prefix_) != 0) return -1;
    size_t i = prefix_.size(), j = i;
    while (j < name.size() && name[j] >= '0' && name[j] <= '9') ++j;
    if (j == i || j - i > 9 || j >= name.size() || name[j] != '.') return -1;
    return std::stoll(name.substr(i, j - i));
  }

  std::string prefix_;
};

Schema split_schema(const char* what) {
  return Schema()
      .string("split", std::string("test"), std::string("split to measure ") + what + " on (\"all\": every split)")
      .integer("batch_size", 0, "examples per forward pass (0: the whole split at once)")
      .min(0);
}

}  // namespace

void register_evaluation(Registrar& r) {
  r.add_metric("accuracy", "fraction correct on a split: {\"<split>_accuracy\": v}",
               split_schema("accuracy")
                   .integer("max_examples", 0,
                            "0: every example the task scores; else a sample of this many, "
                            "drawn with the evaluation's metric-sampling seed")
                   .min(0),
               [](const Params& p) { return std::make_shared<Accuracy>(p); });
  r.add_metric("loss", "mean float64 cross-entropy at scored positions: {\"<split>_loss\": v}",
               split_schema("the loss"), [](const Params& p) { return std::make_shared<Loss>(p); });
  r.add_metric("weight_norm",
               "√(Σθ²) over all parameters (weight_norm), per layer (weight_norm_layer_<l>) and "
               "divided by the number of layers L as Murty et al. (weight_norm_per_layer)",
               Schema().string("layer_prefix", std::string("blocks."),
                               "a layer's parameters are named <layer_prefix><l>.…; \"\": no per-layer norms"),
               [](const Params& p) { return std::make_shared<WeightNorm>(p); });
}

}  // namespace groklab::metrics

// A good test plugin with one real component of each kind: a copy task, a
// one-layer linear model, plain SGD and a parameter-count metric.
#include <torch/torch.h>

#include "groklab/components.h"
#include "groklab/plugin.h"

namespace {

using namespace groklab;

class CopyTask final : public Task {
 public:
  explicit CopyTask(const Params& p)
      : vocab_(p.get_int("vocab")), base_(p.get_int("examples")), odd_extra_(p.get_int("odd_seed_examples")),
        n_(base_) {}
  TaskSpec spec() const override { return {vocab_, 4, vocab_}; }
  void prepare(uint64_t seed) override {
    n_ = base_ + (seed % 2 == 1 ? odd_extra_ : 0);
    auto g = torch::make_generator<at::CPUGeneratorImpl>(seed);
    x_ = torch::randint(vocab_, {n_, 4}, g, torch::kLong);
  }
  std::vector<std::string> splits() const override { return {"train"}; }
  int64_t size(const std::string&) const override { return n_; }
  Batch batch(const std::string&, const torch::Tensor& idx) const override {
    auto x = x_.index_select(0, idx);
    return {x, x.clone()};
  }

 private:
  int64_t vocab_, base_, odd_extra_, n_;
  torch::Tensor x_;
};

class LinearModel final : public Model {
 public:
  LinearModel(int64_t vocab, int64_t width) {
    emb_ = register_module("emb", torch::nn::Embedding(vocab, width));
    out_ = register_module("out", torch::nn::Linear(width, vocab));
  }
  torch::Tensor forward(const torch::Tensor& x) override { return out_(emb_(x)); }

 private:
  torch::nn::Embedding emb_{nullptr};
  torch::nn::Linear out_{nullptr};
};

class LinearArch final : public Architecture {
 public:
  explicit LinearArch(const Params& p) : width_(p.get_int("width")) {}
  std::shared_ptr<Model> build(const TaskSpec& s) const override {
    return std::make_shared<LinearModel>(s.vocab_size, width_);
  }

 private:
  int64_t width_;
};

class Sgd final : public Optimizer {
 public:
  explicit Sgd(const Params& p) : lr_(p.get_float("lr")) {}
  void attach(const std::vector<std::pair<std::string, torch::Tensor>>& params) override {
    params_ = params;
  }
  void step(int64_t) override {
    torch::NoGradGuard g;
    for (auto& p : params_)
      if (p.second.grad().defined()) p.second.sub_(p.second.grad() * lr_);
  }
  TensorMap state() const override { return {}; }  // plain SGD keeps no state
  void load_state(const TensorMap&) override {}

 private:
  double lr_;
};

class ParamCount final : public Metric {
 public:
  explicit ParamCount(const Params&) {}
  std::map<std::string, double> evaluate(const EvalContext& ctx) override {
    double n = 0;
    for (const auto& p : ctx.model->parameters()) n += static_cast<double>(p.numel());
    return {{"parameters", n}};
  }
};

// Mean cross-entropy over the whole train split: changes every step, so replay
// tests see metric divergences.
class TrainLoss final : public Metric {
 public:
  explicit TrainLoss(const Params&) {}
  std::map<std::string, double> evaluate(const EvalContext& ctx) override {
    auto b = ctx.task->batch("train", torch::arange(ctx.task->size("train")));
    auto logits = ctx.model->forward(b.inputs);
    auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}).to(torch::kDouble),
                                                     b.targets.reshape({-1}));
    return {{"train_loss", loss.item<double>()}};
  }
};

}  // namespace

GROKLAB_PLUGIN(test_components, "1.2.3",
               GROKLAB_KIND_TASK | GROKLAB_KIND_ARCHITECTURE | GROKLAB_KIND_OPTIMIZER | GROKLAB_KIND_METRIC,
               r) {
  r.add_task("test_copy", "copy random tokens",
             Schema().integer("vocab", 16, "vocabulary size").range(2, 1000)
                     .integer("examples", 64, "number of examples").min(1)
                     .integer("odd_seed_examples", 0, "extra examples when the split seed is odd").min(0),
             [](const Params& p) { return std::make_shared<CopyTask>(p); });
  r.add_architecture("test_linear", "embedding then a linear readout",
                     Schema().integer("width", 8, "embedding width").min(1),
                     [](const Params& p) { return std::make_shared<LinearArch>(p); });
  r.add_optimizer("test_sgd", "plain SGD", Schema().real("lr", 0.1, "learning rate").min(0),
                  [](const Params& p) { return std::make_shared<Sgd>(p); });
  r.add_metric("test_param_count", "number of parameters", Schema(),
               [](const Params& p) { return std::make_shared<ParamCount>(p); });
  r.add_metric("test_train_loss", "mean cross-entropy on the train split", Schema(),
               [](const Params& p) { return std::make_shared<TrainLoss>(p); });
}

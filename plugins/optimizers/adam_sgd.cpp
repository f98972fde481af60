// adamw, adam and sgd: the updates of PyTorch 1.13's torch.optim (the
// single-tensor code paths, op for op, so results match Python bit-for-bit),
// with learning-rate schedules, gradient-norm clipping and a choice of which
// parameters get weight decay.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "groklab/components.h"
#include "optimizers.h"

namespace groklab::optimizers {
namespace {

using torch::Tensor;

// Schedule, clipping and decay selection shared by every optimizer.
class Scheduled : public Optimizer {
 public:
  explicit Scheduled(const Params& p)
      : lr_(p.get_float("lr")),
        weight_decay_(p.get_float("weight_decay")),
        warmup_(p.get_int("warmup_steps")),
        schedule_(p.get_string("schedule")),
        decay_steps_(p.get_int("decay_steps")),
        clip_(p.get_float("clip_grad_norm")),
        decay_params_(p.get_string("decay_params")) {
    if (schedule_ != "constant" && decay_steps_ <= warmup_)
      throw std::invalid_argument("schedule \"" + schedule_ + "\" needs decay_steps (" +
                                  std::to_string(decay_steps_) + ") > warmup_steps (" +
                                  std::to_string(warmup_) + ")");
  }

  void attach(const std::vector<std::pair<std::string, Tensor>>& params) override {
    params_ = params;
    decays_.clear();
    for (const auto& [name, t] : params) {
      const bool embedding = name.rfind("embed", 0) == 0 || name.rfind("pos", 0) == 0;
      decays_.push_back(decay_params_ == "all" || (t.dim() >= 2 && !embedding));
    }
    on_attach();
  }

  void step(int64_t step) override {
    torch::NoGradGuard no_grad;
    if (clip_ > 0) clip_grad_norm();
    update(lr_ * multiplier(step - 1));
  }

  // The learning-rate multiplier for the update after s completed updates;
  // the k-th update (k from 1) uses m(k−1), as PyTorch's LambdaLR does.
  double multiplier(int64_t s) const {
    if (s < warmup_) return static_cast<double>(s) / static_cast<double>(std::max<int64_t>(1, warmup_));
    if (schedule_ == "constant") return 1.0;
    const double left = static_cast<double>(decay_steps_ - s);
    const double span = static_cast<double>(std::max<int64_t>(1, decay_steps_ - warmup_));
    if (schedule_ == "linear") return std::max(0.0, left / span);
    const double progress = std::min(1.0, static_cast<double>(s - warmup_) / span);
    return std::max(0.0, 0.5 * (1.0 + std::cos(std::acos(-1.0) * progress)));
  }

 protected:
  virtual void on_attach() {}
  virtual void update(double lr) = 0;

  // Weight decay for parameter i (0 where decay_params excludes it).
  double decay_of(size_t i) const { return decays_[i] ? weight_decay_ : 0.0; }

  // torch.nn.utils.clip_grad_norm_(params, clip) with the 2-norm.
  void clip_grad_norm() {
    std::vector<Tensor> grads, norms;
    for (auto& [name, p] : params_)
      if (p.grad().defined()) grads.push_back(p.grad());
    if (grads.empty()) return;
    auto all_dims = [](const Tensor& t) {
      std::vector<int64_t> d(static_cast<size_t>(t.dim()));
      for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<int64_t>(i);
      return d;
    };
    for (const auto& g : grads) norms.push_back(at::norm(g, 2.0, all_dims(g), false));
    const Tensor stacked = at::stack(norms);
    const Tensor total = at::norm(stacked, 2.0, all_dims(stacked), false);
    // Python: max_norm / (total + 1e-6) is (total + 1e-6).reciprocal() * max_norm.
    const Tensor coef = at::clamp((total + 1e-6).reciprocal() * clip_, c10::nullopt, 1.0);
    for (auto& g : grads) g.mul_(coef);
  }

  // A copy of state[key], which must have the shape of parameter i; throws naming the key.
  Tensor take(const TensorMap& state, const std::string& key, size_t i) const {
    auto it = state.find(key);
    if (it == state.end()) throw std::runtime_error("optimizer state: no entry '" + key + "'");
    if (it->second.sizes() != params_[i].second.sizes())
      throw std::runtime_error("optimizer state: '" + key + "' has the wrong shape");
    return it->second.clone();
  }

  double lr_, weight_decay_;
  int64_t warmup_;
  std::string schedule_;
  int64_t decay_steps_;
  double clip_;
  std::string decay_params_;
  std::vector<bool> decays_;
};

// The state key of one of a parameter's tensors, e.g. "exp_avg.blocks.0.mlp.fc1.weight".
std::string key_of(const std::string& name, const char* what) { return std::string(what) + "." + name; }

// torch.optim.AdamW (decoupled decay) or torch.optim.Adam (L2 added to the gradient).
class Adam final : public Scheduled {
 public:
  Adam(const Params& p, bool decoupled)
      : Scheduled(p),
        decoupled_(decoupled),
        beta1_(p.get_float("beta1")),
        beta2_(p.get_float("beta2")),
        eps_(p.get_float("eps")) {}

  // Per updated parameter: "step.<name>" (0-d int64), "exp_avg.<name>", "exp_avg_sq.<name>".
  TensorMap state() const override {
    TensorMap out;
    for (size_t i = 0; i < params_.size(); ++i) {
      const State& s = state_[i];
      if (!s.exp_avg.defined()) continue;  // never updated: no state, as in PyTorch
      const std::string& n = params_[i].first;
      out[key_of(n, "step")] = torch::tensor(s.step, torch::kLong);
      out[key_of(n, "exp_avg")] = s.exp_avg;
      out[key_of(n, "exp_avg_sq")] = s.exp_avg_sq;
    }
    return out;
  }

  void load_state(const TensorMap& state) override {
    for (size_t i = 0; i < params_.size(); ++i) {
      const std::string& n = params_[i].first;
      auto step = state.find(key_of(n, "step"));
      State s;
      if (step != state.end()) {
        s.step = step->second.item<int64_t>();
        s.exp_avg = take(state, key_of(n, "exp_avg"), i);
        s.exp_avg_sq = take(state, key_of(n, "exp_avg_sq"), i);
      }
      state_[i] = s;
    }
  }

 private:
  struct State {
    int64_t step = 0;
    Tensor exp_avg, exp_avg_sq;
  };

  void on_attach() override { state_.assign(params_.size(), State()); }

  void update(double lr) override {
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor& param = params_[i].second;
      Tensor grad = param.grad();
      if (!grad.defined()) continue;
      State& s = state_[i];
      if (!s.exp_avg.defined()) {
        s.exp_avg = torch::zeros_like(param, at::MemoryFormat::Preserve);
        s.exp_avg_sq = torch::zeros_like(param, at::MemoryFormat::Preserve);
      }
      s.step += 1;
      const double wd = decay_of(i);
      if (decoupled_) {
        param.mul_(1 - lr * wd);
      } else if (wd != 0) {
        grad = grad.add(param, wd);
      }
      s.exp_avg.mul_(beta1_).add_(grad, 1 - beta1_);
      s.exp_avg_sq.mul_(beta2_).addcmul_(grad, grad, 1 - beta2_);
      const double step = static_cast<double>(s.step);
      const double bias_correction1 = 1 - std::pow(beta1_, step);
      const double bias_correction2 = 1 - std::pow(beta2_, step);
      const double step_size = lr / bias_correction1;
      const double bias_correction2_sqrt = std::sqrt(bias_correction2);
      const Tensor denom = (s.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps_);
      param.addcdiv_(s.exp_avg, denom, -step_size);
    }
  }

  bool decoupled_;
  double beta1_, beta2_, eps_;
  std::vector<State> state_;
};

// torch.optim.SGD (dampening 0).
class Sgd final : public Scheduled {
 public:
  explicit Sgd(const Params& p)
      : Scheduled(p), momentum_(p.get_float("momentum")), nesterov_(p.get_bool("nesterov")) {
    if (nesterov_ && momentum_ <= 0)
      throw std::invalid_argument("sgd: nesterov needs momentum > 0");
  }

  // Per parameter with momentum: "momentum_buffer.<name>".
  TensorMap state() const override {
    TensorMap out;
    for (size_t i = 0; i < params_.size(); ++i)
      if (buf_[i].defined()) out[key_of(params_[i].first, "momentum_buffer")] = buf_[i];
    return out;
  }

  void load_state(const TensorMap& state) override {
    for (size_t i = 0; i < params_.size(); ++i) {
      const std::string key = key_of(params_[i].first, "momentum_buffer");
      buf_[i] = state.count(key) ? take(state, key, i) : Tensor();
    }
  }

 private:
  void on_attach() override { buf_.assign(params_.size(), Tensor()); }

  void update(double lr) override {
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor& param = params_[i].second;
      Tensor d_p = param.grad();
      if (!d_p.defined()) continue;
      const double wd = decay_of(i);
      if (wd != 0) d_p = d_p.add(param, wd);
      if (momentum_ != 0) {
        if (!buf_[i].defined()) {
          buf_[i] = torch::clone(d_p).detach();
        } else {
          buf_[i].mul_(momentum_).add_(d_p, 1.0);
        }
        d_p = nesterov_ ? d_p.add(buf_[i], momentum_) : buf_[i];
      }
      param.add_(d_p, -lr);
    }
  }

  double momentum_;
  bool nesterov_;
  std::vector<Tensor> buf_;
};

// The parameters every optimizer shares, after its own.
Schema& common(Schema& s, double lr, double weight_decay) {
  return s.real("lr", lr, "learning rate (peak, after warmup)").min(0.0)
      .real("weight_decay", weight_decay, "weight decay").min(0.0)
      .choice("decay_params", "all", {"all", "matrices"},
              "which parameters decay: all, or matrices only (no biases, LayerNorm, embed*, pos*)")
      .integer("warmup_steps", 0, "linear warmup: update k uses lr·(k−1)/warmup_steps").min(0)
      .choice("schedule", "constant", {"constant", "linear", "cosine"},
              "after warmup: constant, or linear/cosine decay to 0 at decay_steps")
      .integer("decay_steps", 0, "update count at which linear/cosine reach lr 0").min(0)
      .real("clip_grad_norm", 0.0, "clip the global gradient 2-norm to this (0: off)").min(0.0);
}

}  // namespace

void register_adam_sgd(Registrar& r) {
  auto adam_schema = [](double weight_decay) {
    Schema s;
    s.real("beta1", 0.9, "first-moment decay").range(0.0, 1.0)
        .real("beta2", 0.999, "second-moment decay").range(0.0, 1.0)
        .real("eps", 1e-8, "denominator epsilon").min(0.0);
    return common(s, 1e-3, weight_decay);
  };
  r.add_optimizer("adamw", "torch.optim.AdamW (decoupled weight decay), bit-identical to PyTorch 1.13",
                  adam_schema(0.01),
                  [](const Params& p) { return std::make_shared<Adam>(p, true); });
  r.add_optimizer("adam", "torch.optim.Adam (weight decay as L2 on the gradient)", adam_schema(0.0),
                  [](const Params& p) { return std::make_shared<Adam>(p, false); });
  Schema sgd;
  sgd.real("momentum", 0.0, "momentum (dampening 0)").min(0.0)
      .boolean("nesterov", false, "Nesterov momentum");
  r.add_optimizer("sgd", "torch.optim.SGD with momentum and Nesterov", common(sgd, 0.01, 0.0),
                  [](const Params& p) { return std::make_shared<Sgd>(p); });
}

}  // namespace groklab::optimizers

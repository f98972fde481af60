// adamw, adam and sgd: the updates of PyTorch 1.13's torch.optim (the
// single-tensor code paths, op for op, so results match Python bit-for-bit),
// with learning-rate schedules, gradient-norm clipping, a choice of which
// parameters get weight decay, and the grokking interventions:
//
//   grokfast = "ema"  Lee et al. 2024: μ₀ = g₀, μ_t = α·μ_{t−1} + (1−α)·g_t,
//                     the update uses g_t + λ·μ_t (grokfast_alpha, grokfast_lambda).
//   grokfast = "ma"   the moving-average variant: the mean of the last w gradients
//                     (the current one included), used as g_t + λ·mean once w
//                     gradients have been seen (grokfast_window).
//   fixed_norm        Liu et al. 2023 (Omnigrok): after every update, every
//                     parameter is multiplied by ‖θ₀‖/‖θ‖ (the global 2-norm over
//                     all the optimizer's parameters), so ‖θ‖ stays at its initial value.
//   init_scale        the parameters are multiplied by this when the optimizer is
//                     attached, before ‖θ₀‖ is taken (Omnigrok's initialisation scale).
//                     Only the parameters: buffers (a readout_center copy θ₀) keep
//                     the values the architecture drew.
//
// One step: Grokfast filter on the raw gradients, then clipping, then the
// update, then the fixed-norm rescale. Everything the interventions carry
// (μ, the gradient window and its count, ‖θ₀‖) is in state(), so a resumed run
// is bit-identical to an uninterrupted one.
#include <algorithm>
#include <cmath>
#include <map>
#include <utility>
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
        decay_params_(p.get_string("decay_params")),
        grokfast_(p.get_string("grokfast")),
        gf_alpha_(p.get_float("grokfast_alpha")),
        gf_lambda_(p.get_float("grokfast_lambda")),
        gf_window_(p.get_int("grokfast_window")),
        fixed_norm_(p.get_bool("fixed_norm")),
        init_scale_(p.get_float("init_scale")) {
    if (schedule_ != "constant" && decay_steps_ <= warmup_)
      throw std::invalid_argument("schedule \"" + schedule_ + "\" needs decay_steps (" +
                                  std::to_string(decay_steps_) + ") > warmup_steps (" +
                                  std::to_string(warmup_) + ")");
    if (!(init_scale_ > 0)) throw std::invalid_argument("init_scale must be > 0");
  }

  void attach(const std::vector<std::pair<std::string, Tensor>>& params) override {
    params_ = params;
    decays_.clear();
    for (const auto& [name, t] : params) {
      const bool embedding = name.rfind("embed", 0) == 0 || name.rfind("pos", 0) == 0;
      decays_.push_back(decay_params_ == "all" || (t.dim() >= 2 && !embedding));
    }
    filter_.assign(params_.size(), Filter());
    if (init_scale_ != 1.0) {
      torch::NoGradGuard no_grad;
      for (auto& [name, t] : params_) t.mul_(init_scale_);
    }
    init_norm_ = fixed_norm_ ? global_norm() : 0.0;
    on_attach();
  }

  void step(int64_t step) override {
    torch::NoGradGuard no_grad;
    if (grokfast_ != "off") grokfast_filter();
    if (clip_ > 0) clip_grad_norm();
    update(lr_ * multiplier(step - 1));
    if (fixed_norm_) rescale_to_initial_norm();
  }

  // The update's own state (see update_state()) and the interventions':
  // "grokfast_ema.<name>"; "grokfast_window.<name>" [w, ...] and
  // "grokfast_count.<name>" (0-d int64); "fixed_norm.init_norm" (0-d double).
  TensorMap state() const final {
    TensorMap out = update_state();
    for (size_t i = 0; i < params_.size(); ++i) {
      const Filter& f = filter_[i];
      const std::string& n = params_[i].first;
      if (f.ema.defined()) out["grokfast_ema." + n] = f.ema;
      if (f.window.defined()) {
        out["grokfast_window." + n] = f.window;
        out["grokfast_count." + n] = torch::tensor(f.count, torch::kLong);
      }
    }
    if (fixed_norm_) out["fixed_norm.init_norm"] = torch::tensor(init_norm_, torch::kDouble);
    return out;
  }

  void load_state(const TensorMap& state) final {
    load_update_state(state);
    for (size_t i = 0; i < params_.size(); ++i) {
      const std::string& n = params_[i].first;
      Filter f;
      if (state.count("grokfast_ema." + n)) f.ema = take(state, "grokfast_ema." + n, i);
      auto win = state.find("grokfast_window." + n);
      if (win != state.end()) {
        std::vector<int64_t> shape{gf_window_};
        for (int64_t d : params_[i].second.sizes()) shape.push_back(d);
        if (win->second.sizes() != torch::IntArrayRef(shape))
          throw std::runtime_error("optimizer state: 'grokfast_window." + n +
                                   "' does not fit grokfast_window = " + std::to_string(gf_window_));
        auto count = state.find("grokfast_count." + n);
        if (count == state.end())
          throw std::runtime_error("optimizer state: no entry 'grokfast_count." + n + "'");
        f.window = win->second.clone();
        f.count = count->second.item<int64_t>();
      }
      filter_[i] = f;
    }
    if (fixed_norm_) {
      auto it = state.find("fixed_norm.init_norm");
      if (it == state.end()) throw std::runtime_error("optimizer state: no entry 'fixed_norm.init_norm'");
      init_norm_ = it->second.item<double>();
    }
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
  // The update's own state, and loading it back (keys it does not know are ignored).
  virtual TensorMap update_state() const = 0;
  virtual void load_update_state(const TensorMap& state) = 0;

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

 private:
  // Grokfast's per-parameter state.
  struct Filter {
    Tensor ema;         // μ (grokfast = "ema")
    Tensor window;      // [w, ...] the last w gradients, a ring (grokfast = "ma")
    int64_t count = 0;  // gradients seen; the next goes to window[count % w]
  };

  // Replaces each gradient g by g + λ·μ (ema) or g + λ·mean(window) (ma, once full).
  void grokfast_filter() {
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor g = params_[i].second.grad();
      if (!g.defined()) continue;
      Filter& f = filter_[i];
      if (grokfast_ == "ema") {
        if (!f.ema.defined()) f.ema = g.clone();  // μ₀ = g₀
        else f.ema.mul_(gf_alpha_).add_(g, 1 - gf_alpha_);
        g.add_(f.ema, gf_lambda_);
      } else {
        if (!f.window.defined()) {
          std::vector<int64_t> shape{gf_window_};
          for (int64_t d : g.sizes()) shape.push_back(d);
          f.window = torch::zeros(shape, g.options());
        }
        f.window.select(0, f.count % gf_window_).copy_(g);
        f.count += 1;
        if (f.count >= gf_window_) g.add_(f.window.sum(0).div_(static_cast<double>(gf_window_)), gf_lambda_);
      }
    }
  }

  // ‖θ‖: the 2-norm over every parameter, accumulated in double.
  double global_norm() const {
    double sum = 0;
    for (const auto& [name, t] : params_) sum += t.detach().to(torch::kDouble).pow(2).sum().item<double>();
    return std::sqrt(sum);
  }

  void rescale_to_initial_norm() {
    const double norm = global_norm();
    if (!(norm > 0)) return;  // all zero: nothing to scale
    const double factor = init_norm_ / norm;
    for (auto& [name, t] : params_) t.mul_(factor);
  }

  std::string grokfast_;
  double gf_alpha_, gf_lambda_;
  int64_t gf_window_;
  bool fixed_norm_;
  double init_scale_;
  double init_norm_ = 0.0;  // ‖θ₀‖ after init_scale (fixed_norm)
  std::vector<Filter> filter_;
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
  TensorMap update_state() const override {
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

  void load_update_state(const TensorMap& state) override {
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

  void on_attach() override {
    state_.assign(params_.size(), State());
    scratch_ = Tensor();
    views_.clear();
  }

  void update(double lr) override {
    scalars_.clear();
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
        param.mul_(scalar(1 - lr * wd, param));
      } else if (wd != 0) {
        grad = grad.add(param, wd);
      }
      s.exp_avg.mul_(scalar(beta1_, param)).add_(grad, 1 - beta1_);
      s.exp_avg_sq.mul_(scalar(beta2_, param)).addcmul_(grad, grad, 1 - beta2_);
      const double step = static_cast<double>(s.step);
      const double bias_correction1 = 1 - std::pow(beta1_, step);
      const double bias_correction2 = 1 - std::pow(beta2_, step);
      const double step_size = lr / bias_correction1;
      const double bias_correction2_sqrt = std::sqrt(bias_correction2);
      // denom = sqrt(v) / √bc2 + eps, computed in place in one scratch buffer
      // (the same kernels and bits as the out-of-place ops): two fresh
      // parameter-sized tensors per parameter per step otherwise, and
      // their page faults: 50 of 400 ms a step on the 6-layer d 512 model.
      Tensor& denom = scratch(i);
      at::sqrt_out(denom, s.exp_avg_sq);
      denom.div_(scalar(bias_correction2_sqrt, param)).add_(scalar(eps_, param));
      param.addcdiv_(s.exp_avg, denom, -step_size);
    }
  }

  // A tensor of parameter i's shape, dtype and device, its values undefined:
  // a view of one buffer kept across parameters and steps (the views too).
  Tensor& scratch(size_t i) {
    const Tensor& like = params_[i].second;
    if (!scratch_.defined() || scratch_.numel() < like.numel() || scratch_.scalar_type() != like.scalar_type() ||
        scratch_.device() != like.device()) {
      int64_t most = 0;
      for (const auto& p : params_) most = std::max(most, p.second.numel());
      scratch_ = torch::empty({most}, like.options());
      views_.assign(params_.size(), Tensor());
    }
    Tensor& v = views_[i];
    if (!v.defined() || v.scalar_type() != like.scalar_type() || v.device() != like.device())
      v = scratch_.narrow(0, 0, like.numel()).view(like.sizes());
    return v;
  }

  // v as the operand PyTorch makes of a Python float in `tensor * v`: a 0-d
  // CPU tensor in the parameter's dtype, so the op computes the same bits.
  // Passed as a double, LibTorch wraps v in a double tensor and converts it
  // on every call (five conversions per parameter per step, most of the
  // update's dispatches on a small model); here each value is made once per
  // update.
  const Tensor& scalar(double v, const Tensor& like) {
    const auto key = std::make_pair(v, like.scalar_type());
    auto it = scalars_.find(key);
    if (it == scalars_.end())
      it = scalars_.emplace(key, torch::scalar_tensor(v, torch::TensorOptions().dtype(like.scalar_type()))).first;
    return it->second;
  }

  bool decoupled_;
  double beta1_, beta2_, eps_;
  std::vector<State> state_;
  std::map<std::pair<double, c10::ScalarType>, Tensor> scalars_;  // scalar()'s, this update's
  Tensor scratch_;                                                 // scratch()'s buffer
  std::vector<Tensor> views_;                                      // and its view per parameter
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
  TensorMap update_state() const override {
    TensorMap out;
    for (size_t i = 0; i < params_.size(); ++i)
      if (buf_[i].defined()) out[key_of(params_[i].first, "momentum_buffer")] = buf_[i];
    return out;
  }

  void load_update_state(const TensorMap& state) override {
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
      .real("clip_grad_norm", 0.0, "clip the global gradient 2-norm to this (0: off)").min(0.0)
      .choice("grokfast", "off", {"off", "ema", "ma"},
              "Grokfast gradient filter (Lee et al. 2024): g + λ·EMA(g), or g + λ·mean of the last w")
      .real("grokfast_alpha", 0.98, "Grokfast EMA decay α: μ_t = α·μ_{t−1} + (1−α)·g_t").range(0.0, 1.0)
      .real("grokfast_lambda", 2.0, "Grokfast amplification λ (the paper uses 2 for ema, 5 for ma)")
      .min(0.0)
      .integer("grokfast_window", 100, "Grokfast ma window w (applied once w gradients are seen)")
      .min(1)
      .boolean("fixed_norm", false,
               "Omnigrok (Liu et al. 2023): rescale θ to its initial global 2-norm after every step")
      .real("init_scale", 1.0, "multiply the initial parameters by this (Omnigrok's α; > 0)").min(0.0);
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

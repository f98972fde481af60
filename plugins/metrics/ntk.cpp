// ntk_distance: how far the empirical neural tangent kernel has moved from
// its value at initialisation, ‖K_t − K₀‖_F / ‖K₀‖_F, on a small fixed
// subsample (Fort et al. 2020 follow the kernel's motion with a cosine
// distance; this is the relative Frobenius distance the issue asks for).
#include <torch/autograd.h>

#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "metrics.h"

namespace groklab::metrics {
namespace {

using torch::Tensor;

// Copies other parameter values into a model for its lifetime and restores
// the model's own values afterwards, also when an exception unwinds.
class SwappedParams {
 public:
  SwappedParams(Model& model, const TensorMap& values) {
    torch::NoGradGuard no_grad;
    for (auto& p : model.named_parameters(true)) {
      auto it = values.find(p.key());
      if (it == values.end()) {
        if (!p.value().requires_grad()) continue;
        restore();
        throw std::invalid_argument("ntk_distance: no initial value of parameter '" + p.key() + "'");
      }
      saved_.emplace_back(p.value(), p.value().detach().clone());
      p.value().copy_(it->second);
    }
  }
  ~SwappedParams() { restore(); }
  SwappedParams(const SwappedParams&) = delete;
  SwappedParams& operator=(const SwappedParams&) = delete;

 private:
  void restore() {
    torch::NoGradGuard no_grad;
    for (auto& [param, value] : saved_) param.copy_(value);
    saved_.clear();
  }
  std::vector<std::pair<Tensor, Tensor>> saved_;
};

// K = J Jᵀ, J [M, P] the Jacobian of M logits (a fixed set of output
// coordinates: example, scored position, class) with respect to the P
// trainable parameters, float64 [M, M].
class NtkDistance final : public Metric {
 public:
  explicit NtkDistance(const Params& p)
      : split_(p.get_string("split")),
        examples_(p.get_int("examples")),
        outputs_(p.get_int("outputs")),
        sample_seed_(static_cast<uint64_t>(p.get_int("sample_seed"))) {}

  std::map<std::string, double> evaluate(const EvalContext& ctx) override {
    if (ctx.model == nullptr || ctx.task == nullptr)
      throw std::invalid_argument("ntk_distance needs a model and a task");
    const std::string split = split_or_train(*ctx.task, split_);
    const std::string key = split + "_ntk_distance";
    if (ctx.initial_params == nullptr) return {{key, std::numeric_limits<double>::quiet_NaN()}};
    Evaluating guard(ctx.model);
    if (!k0_.defined()) {
      SwappedParams initial(*ctx.model, *ctx.initial_params);
      k0_ = kernel(ctx, split);
    }
    const Tensor k = kernel(ctx, split);
    return {{key, ((k - k0_).norm() / k0_.norm()).item<double>()}};
  }

 private:
  Tensor kernel(const EvalContext& ctx, const std::string& split) {
    const Tensor idx =
        sample_indices(torch::arange(ctx.task->size(split), torch::kLong), examples_, sample_seed_, "ntk_distance");
    const Batch b = ctx.task->batch(split, idx);
    std::vector<Tensor> params;
    for (const auto& p : ctx.model->parameters(true))
      if (p.requires_grad()) params.push_back(p);
    torch::AutoGradMode grad(true);
    // One example's logits [L, C], flattened: examples are independent, so a
    // row of J needs only its own example's pass.
    auto forward_one = [&](int64_t i) { return ctx.model->forward(b.inputs.narrow(0, i, 1)); };
    Tensor out = forward_one(0);  // [1, L, C]
    int64_t current = 0;
    const int64_t L = out.size(1), C = out.size(2), T = b.targets.size(1);
    // The output coordinates: every class at every scored position, flattened
    // (example, position, class); a fixed sample of `outputs` of them.
    const Tensor scored = b.targets.narrow(1, T - L, L).ge(0).reshape({-1}).nonzero().reshape({-1});
    const Tensor coords = (scored.unsqueeze(1) * C + torch::arange(C, torch::kLong).unsqueeze(0)).reshape({-1});
    if (!chosen_.defined())
      chosen_ = sample_indices(torch::arange(coords.numel(), torch::kLong), outputs_, sample_seed_, "ntk_distance:outputs");
    const Tensor pick = coords.index_select(0, chosen_).contiguous();  // ascending
    const int64_t m = pick.numel();
    int64_t width = 0;
    for (const Tensor& p : params) width += p.numel();
    const torch::Device device = params.empty() ? out.device() : params[0].device();
    Tensor jac = torch::empty({m, width}, out.options().device(device));
    const int64_t* at_coord = pick.data_ptr<int64_t>();
    for (int64_t j = 0; j < m; ++j) {
      const int64_t example = at_coord[j] / (L * C);
      if (example != current) {
        out = forward_one(example);
        current = example;
      }
      const auto g = torch::autograd::grad({out.reshape({-1})[at_coord[j] - example * L * C]}, params, {},
                                           /*retain_graph=*/true, /*create_graph=*/false, /*allow_unused=*/true);
      int64_t at = 0;
      for (size_t i = 0; i < g.size(); ++i) {
        const int64_t size = params[i].numel();
        Tensor row = jac[j].narrow(0, at, size);
        if (g[i].defined()) row.copy_(g[i].reshape({-1}));
        else row.zero_();
        at += size;
      }
    }
    const Tensor j64 = jac.to(torch::kDouble);  // K summed in float64, not rounded to float32 first
    return j64.mm(j64.t()).cpu();
  }

  std::string split_;
  int64_t examples_, outputs_;
  uint64_t sample_seed_;
  Tensor k0_, chosen_;  // K₀ and the output coordinates, fixed at the first evaluation
};

}  // namespace

void register_ntk(Registrar& r) {
  r.add_metric("ntk_distance",
               "‖K_t − K₀‖_F / ‖K₀‖_F of the empirical NTK K = J Jᵀ (J: Jacobian of a fixed sample of logit "
               "coordinates w.r.t. the parameters) against initialisation: {\"<split>_ntk_distance\": v}",
               Schema()
                   .string("split", std::string(), "split of the subsample (\"\": the training split)")
                   .integer("examples", 16, "examples in the fixed subsample (0: all)")
                   .min(0)
                   .integer("outputs", 128,
                            "logit coordinates (example, scored position, class) in the kernel, a fixed sample "
                            "(0: all of them)")
                   .min(0)
                   .integer("sample_seed", 0, "seed of the subsamples, fixed for the whole run")
                   .min(0),
               [](const Params& p) { return std::make_shared<NtkDistance>(p); });
}

}  // namespace groklab::metrics

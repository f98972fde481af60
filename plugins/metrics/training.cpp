// grad_norm and update_norm: what one optimisation step did, from the
// parameters and gradients the trainer keeps for the evaluated step.
#include <cmath>
#include <limits>
#include <stdexcept>

#include "common.h"
#include "metrics.h"

namespace groklab::metrics {
namespace {

// √(Σ ‖t‖²) over a map's tensors, in float64.
double norm_of(const TensorMap& m) {
  double sum = 0;
  for (const auto& [name, t] : m) sum += t.to(torch::kDouble).pow(2).sum().item<double>();
  return std::sqrt(sum);
}

// ‖g_t‖: the gradient of step t's training loss, before the optimizer's
// clipping or filtering. NaN outside a training run.
class GradNorm final : public Metric {
 public:
  explicit GradNorm(const Params&) {}
  std::map<std::string, double> evaluate(const EvalContext& ctx) override {
    if (ctx.gradients == nullptr) return {{"grad_norm", std::numeric_limits<double>::quiet_NaN()}};
    return {{"grad_norm", norm_of(*ctx.gradients)}};
  }
};

// ‖θ_t − θ_{t−1}‖ (update_norm) and ‖θ_t − θ_{t−1}‖ / ‖θ_{t−1}‖
// (relative_update_norm) over the parameters. NaN outside a training run.
class UpdateNorm final : public Metric {
 public:
  explicit UpdateNorm(const Params&) {}
  std::map<std::string, double> evaluate(const EvalContext& ctx) override {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    if (ctx.params_before == nullptr || ctx.model == nullptr)
      return {{"update_norm", nan}, {"relative_update_norm", nan}};
    torch::NoGradGuard no_grad;
    double sum = 0;
    for (const auto& p : ctx.model->named_parameters(true)) {
      auto it = ctx.params_before->find(p.key());
      if (it == ctx.params_before->end())
        throw std::invalid_argument("update_norm: no previous value of parameter '" + p.key() + "'");
      sum += (p.value().to(torch::kDouble) - it->second.to(torch::kDouble)).pow(2).sum().item<double>();
    }
    const double before = norm_of(*ctx.params_before);
    return {{"update_norm", std::sqrt(sum)}, {"relative_update_norm", before > 0 ? std::sqrt(sum) / before : nan}};
  }
};

}  // namespace

void register_training(Registrar& r) {
  r.add_metric("grad_norm",
               "‖g_t‖ of the evaluated step's training-loss gradient (before clipping): "
               "{\"grad_norm\": v}",
               Schema(), [](const Params& p) { return std::make_shared<GradNorm>(p); });
  r.add_metric("update_norm",
               "‖θ_t − θ_{t−1}‖ of the evaluated step and its ratio to ‖θ_{t−1}‖: "
               "{\"update_norm\", \"relative_update_norm\"}",
               Schema(), [](const Params& p) { return std::make_shared<UpdateNorm>(p); });
}

}  // namespace groklab::metrics

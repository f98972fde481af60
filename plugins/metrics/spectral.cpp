// feature_compressibility and fourier_sparsity (Singh, Misra & Orvieto 2026).
#include <ATen/ops/fft_fft.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "common.h"
#include "metrics.h"

namespace groklab::metrics {
namespace {

using torch::Tensor;

// Clauset, Shalizi & Newman (2009)'s continuous power-law fit, as their
// plfit.m: for each candidate x_min (the distinct values but the largest,
// with at least min_tail values ≥ it), α̂ = 1 + n / Σ ln(x_i / x_min) over
// the n values x_i ≥ x_min, and the Kolmogorov–Smirnov distance
// D = max_k |(1 − (x_min/x_(k))^(α̂−1)) − (k−1)/n| over the sorted tail;
// the fit is the x_min with the least D (the smallest such x_min on ties).
struct PowerLaw {
  double alpha = std::numeric_limits<double>::quiet_NaN();
  double xmin = std::numeric_limits<double>::quiet_NaN();
  double ks = std::numeric_limits<double>::quiet_NaN();
};

PowerLaw fit_power_law(std::vector<double> x, int64_t min_tail) {
  std::sort(x.begin(), x.end());
  PowerLaw best;
  const auto n_all = static_cast<int64_t>(x.size());
  for (int64_t start = 0; start < n_all; ++start) {
    if (start > 0 && x[static_cast<size_t>(start)] == x[static_cast<size_t>(start - 1)]) continue;
    const double xmin = x[static_cast<size_t>(start)];
    const int64_t n = n_all - start;
    if (n < std::max<int64_t>(min_tail, 2) || xmin == x.back()) break;
    double logs = 0;
    for (int64_t i = start; i < n_all; ++i) logs += std::log(x[static_cast<size_t>(i)] / xmin);
    const double a = static_cast<double>(n) / logs;  // α̂ − 1
    double d = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double cf = 1 - std::pow(xmin / x[static_cast<size_t>(start + k)], a);
      d = std::max(d, std::abs(cf - static_cast<double>(k) / static_cast<double>(n)));
    }
    if (!(d >= best.ks)) best = {1 + a, xmin, d};  // strict improvement (NaN at first)
  }
  return best;
}

// C = ZᵀZ of the last-position residual Z [N, d] before the readout (the
// last hidden state of the forward hooks) on a split, in float64; reports
// rank(C) (eigenvalues above λ_max·d·2⁻²³, float32's resolution), the stable
// rank ‖C‖_F/‖C‖₂, the effective rank exp(−Σ pᵢ ln pᵢ) with pᵢ = λᵢ/Σλ,
// and the power-law exponent of C's positive eigenvalues (fit_power_law).
class FeatureCompressibility final : public Metric {
 public:
  explicit FeatureCompressibility(const Params& p)
      : split_(p.get_string("split")),
        max_examples_(p.get_int("max_examples")),
        batch_size_(p.get_int("batch_size")),
        min_tail_(p.get_int("min_tail")) {}

  std::map<std::string, double> evaluate(const EvalContext& ctx) override {
    if (ctx.model == nullptr || ctx.task == nullptr)
      throw std::invalid_argument("feature_compressibility needs a model and a task");
    const ModelInternals in = require_hooks(*ctx.model, "feature_compressibility");
    Evaluating guard(ctx.model);
    const std::string split = split_or_train(*ctx.task, split_);
    Tensor C = torch::zeros({in.d_model, in.d_model}, torch::kDouble);
    for_each_batch(ctx, split, max_examples_, batch_size_, [&](const Batch& b) {
      ForwardHooks hooks;
      hooks.record_hidden = true;
      ctx.model->forward_hooked(b.inputs, hooks);
      const Tensor z = hooks.hidden.back().select(1, -1).to(torch::kDouble);  // [B, d]
      C += z.t().matmul(z);
    });
    const Tensor lambda = torch::linalg_eigvalsh(C).clamp_min(0.0);
    const double lmax = lambda.max().item<double>();
    const double tol = lmax * static_cast<double>(in.d_model) * std::ldexp(1.0, -23);
    const Tensor kept = lambda.masked_select(lambda.gt(tol));
    const double sum = lambda.sum().item<double>();
    std::map<std::string, double> out;
    const std::string k = split + "_feature_";
    out[k + "rank"] = static_cast<double>(kept.numel());
    out[k + "stable_rank"] = lmax > 0 ? C.norm().item<double>() / lmax : 0.0;
    out[k + "effective_rank"] = sum > 0 ? std::exp(entropy(lambda / sum).item<double>()) : 0.0;
    std::vector<double> x(kept.data_ptr<double>(), kept.data_ptr<double>() + kept.numel());
    const PowerLaw pl = fit_power_law(std::move(x), min_tail_);
    if (std::isfinite(pl.alpha)) {  // absent with fewer than min_tail distinct positive eigenvalues
      out[k + "powerlaw_alpha"] = pl.alpha;
      out[k + "powerlaw_xmin"] = pl.xmin;
    }
    return out;
  }

 private:
  std::string split_;
  int64_t max_examples_, batch_size_, min_tail_;
};

// C_Fourier of the embeddings E of the first num_classes tokens (modular
// arithmetic: the residues 0…p−1): F = |DFT over the token axis of E| [p, d],
// m_k = mean over d of F[k] for the non-constant frequencies k = 1…⌊(p−1)/2⌋,
// and C = Var_k(m) / mean_k(m²): 0 when every frequency carries the same
// magnitude, 1 − 1/K when one of the K frequencies carries it all.
class FourierSparsity final : public Metric {
 public:
  explicit FourierSparsity(const Params& p) : weights_(p.get_string("weights")) {}

  std::map<std::string, double> evaluate(const EvalContext& ctx) override {
    if (ctx.model == nullptr || ctx.task == nullptr)
      throw std::invalid_argument("fourier_sparsity needs a model and a task");
    torch::NoGradGuard no_grad;
    const auto params = ctx.model->named_parameters(true);
    const Tensor* w = params.find(weights_);
    if (w == nullptr) throw std::invalid_argument("fourier_sparsity: the model has no parameter '" + weights_ + "'");
    const int64_t p = ctx.task->spec().num_classes;
    if (w->dim() != 2 || w->size(0) < p || p < 3)
      throw std::invalid_argument("fourier_sparsity: '" + weights_ + "' must be [≥ num_classes, d] with num_classes ≥ 3");
    const Tensor F = at::fft_fft(w->narrow(0, 0, p).to(torch::kDouble), c10::nullopt, 0).abs();
    const Tensor m = F.narrow(0, 1, (p - 1) / 2).mean(1);
    const double mean_sq = m.pow(2).mean().item<double>();
    const double var = m.var(/*unbiased=*/false).item<double>();
    return {{"fourier_sparsity", mean_sq > 0 ? var / mean_sq : 0.0}};
  }

 private:
  std::string weights_;
};

}  // namespace

void register_spectral(Registrar& r) {
  r.add_metric("feature_compressibility",
               "Singh et al.: rank, stable rank, effective rank and Clauset power-law exponent of "
               "C = ZᵀZ, Z the last-position residual before the readout: {\"<split>_feature_rank\", "
               "…_stable_rank, …_effective_rank, …_powerlaw_alpha, …_powerlaw_xmin}",
               Schema()
                   .string("split", std::string(), "split whose examples are read (\"\": the training split)")
                   .integer("max_examples", 0, "a seeded sample of this many examples (0: all)")
                   .min(0)
                   .integer("batch_size", 0, "examples per forward pass (0: all at once)")
                   .min(0)
                   .integer("min_tail", 10, "least number of eigenvalues ≥ x_min in the power-law fit")
                   .min(2),
               [](const Params& p) { return std::make_shared<FeatureCompressibility>(p); });
  r.add_metric("fourier_sparsity",
               "Singh et al.'s C_Fourier of the token embeddings of the residues: Var_k(m_k)/mean_k(m_k²), "
               "m_k = mean over d of |DFT_k|: {\"fourier_sparsity\": v}",
               Schema().string("weights", std::string("embed.weight"), "the [vocab, d] embedding parameter"),
               [](const Params& p) { return std::make_shared<FourierSparsity>(p); });
}

}  // namespace groklab::metrics

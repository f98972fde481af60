// attention_sparsity (Murty et al. 2023) and attention_entropy (Singh et al.
// 2026), from the attention probabilities of the forward hooks.
#include <stdexcept>
#include <string>

#include "common.h"
#include "metrics.h"

namespace groklab::metrics {
namespace {

using torch::Tensor;

// The entropy H(ā) of the head-averaged attention row ā_{l,i} of every
// layer l and query position i < the example's length, summed per example
// and layer. Murty: attention_sparsity = −mean_s (1/L) Σ_l Σ_i H(ā_{s,l,i}).
// Singh: attention_entropy = mean over examples, layers and positions of H.
class AttentionEntropy final : public Metric {
 public:
  AttentionEntropy(const Params& p, bool murty)
      : split_(p.get_string("split")),
        max_examples_(p.get_int("max_examples")),
        batch_size_(p.get_int("batch_size")),
        murty_(murty) {}

  std::map<std::string, double> evaluate(const EvalContext& ctx) override {
    const char* name = murty_ ? "attention_sparsity" : "attention_entropy";
    if (ctx.model == nullptr || ctx.task == nullptr)
      throw std::invalid_argument(std::string(name) + " needs a model and a task");
    const ModelInternals in = require_hooks(*ctx.model, name);
    Evaluating guard(ctx.model);
    const std::string split = split_or_train(*ctx.task, split_);
    double total = 0, positions = 0;
    int64_t examples = 0;
    for_each_batch(ctx, split, max_examples_, batch_size_, [&](const Batch& b) {
      ForwardHooks hooks;
      hooks.record_attention = true;
      ctx.model->forward_hooked(b.inputs, hooks);
      const Tensor len = example_lengths(b);
      const int64_t T = b.inputs.size(1);
      const Tensor valid = torch::arange(T, torch::kLong).unsqueeze(0).lt(len.unsqueeze(1));  // [B, T]
      for (const Tensor& a : hooks.attention) {                  // [B, H, T, T]
        const Tensor h = entropy(a.mean(1)).masked_fill(valid.logical_not(), 0.0);  // [B, T]
        total += h.sum().item<double>();
      }
      positions += static_cast<double>(valid.sum().item<int64_t>()) * static_cast<double>(in.layers);
      examples += b.inputs.size(0);
    });
    double v;
    if (murty_) v = examples > 0 ? -total / static_cast<double>(in.layers) / static_cast<double>(examples) : 0.0;
    else v = positions > 0 ? total / positions : 0.0;
    return {{split + "_" + name, v}};
  }

 private:
  std::string split_;
  int64_t max_examples_, batch_size_;
  bool murty_;
};

Schema attention_schema() {
  return Schema()
      .string("split", std::string(), "split whose examples are read (\"\": the training split)")
      .integer("max_examples", 500, "a seeded sample of this many examples (0: all)")
      .min(0)
      .integer("batch_size", 100, "examples per forward pass (0: all at once)")
      .min(0);
}

}  // namespace

void register_attention(Registrar& r) {
  r.add_metric("attention_sparsity",
               "Murty et al.: −mean over examples of (1/L) Σ_layers Σ_positions i H(head-averaged "
               "attention of query i): {\"<split>_attention_sparsity\": v}",
               attention_schema(), [](const Params& p) { return std::make_shared<AttentionEntropy>(p, true); });
  r.add_metric("attention_entropy",
               "Singh et al.: mean over examples, layers and positions of H(head-averaged attention "
               "row), nats: {\"<split>_attention_entropy\": v}",
               attention_schema(), [](const Params& p) { return std::make_shared<AttentionEntropy>(p, false); });
}

}  // namespace groklab::metrics

#include "groklab/components.h"

#include <torch/torch.h>

#include <stdexcept>

namespace groklab {

// Out-of-line virtual destructors anchor each interface's vtable and
// type_info in libgroklab, so host and plugins agree on them.
Task::~Task() = default;
Model::~Model() = default;
Architecture::~Architecture() = default;
Optimizer::~Optimizer() = default;
Metric::~Metric() = default;

torch::Tensor Task::correct(const torch::Tensor& logits, const Batch& batch) const {
  const int64_t L = logits.size(1);
  auto targets = batch.targets.narrow(1, batch.targets.size(1) - L, L).to(logits.device());
  auto scored = targets.ge(0);
  auto right = logits.argmax(-1).eq(targets).logical_or(scored.logical_not());
  return right.all(1);
}

torch::Tensor Task::scored(const std::string& split) const {
  return torch::arange(size(split), torch::kLong);
}

torch::Tensor Task::sentence_indices(const std::string&) const {
  throw std::logic_error("the task offers no sentences for structural metrics (Task::sentence_indices)");
}

Sentence Task::sentence(const std::string&, int64_t) const {
  throw std::logic_error("the task offers no sentences for structural metrics (Task::sentence)");
}

torch::Tensor Task::correct_model(Model&, const std::string&, const torch::Tensor&) const {
  return torch::Tensor();
}

ModelInternals Model::internals() const { return {}; }

torch::Tensor Model::forward_hooked(const torch::Tensor&, ForwardHooks&) {
  throw std::logic_error("this model offers no forward hooks (Model::forward_hooked)");
}

void Optimizer::zero_grad() {
  for (auto& p : params_) {
    auto& g = p.second.mutable_grad();
    if (g.defined()) g = torch::Tensor();
  }
}

}  // namespace groklab

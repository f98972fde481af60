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

std::shared_ptr<Model> Architecture::build_ensemble(const TaskSpec&,
                                                    const std::vector<std::shared_ptr<Model>>&) const {
  return nullptr;
}

void bind_members(torch::nn::Module& ensemble, const std::vector<std::shared_ptr<Model>>& members) {
  const int64_t S = static_cast<int64_t>(members.size());
  torch::NoGradGuard no_grad;
  auto fill = [&](const std::string& name, const torch::Tensor& stacked, bool parameter) {
    if (stacked.dim() < 1 || stacked.size(0) != S)
      throw std::logic_error("bind_members: ensemble tensor '" + name + "' has no leading dimension of " +
                             std::to_string(S) + " members");
    for (int64_t s = 0; s < S; ++s) {
      auto& m = *members[static_cast<size_t>(s)];
      auto tensors = parameter ? m.named_parameters(true) : m.named_buffers(true);
      torch::Tensor* t = tensors.find(name);
      if (t == nullptr)
        throw std::logic_error("bind_members: member " + std::to_string(s) + " has no " +
                               (parameter ? "parameter" : "buffer") + " '" + name + "'");
      torch::Tensor slice = stacked.detach().select(0, s);
      if (slice.sizes() != t->sizes() || slice.scalar_type() != t->scalar_type())
        throw std::logic_error("bind_members: member " + std::to_string(s) + "'s '" + name + "' is " +
                               c10::toString(t->scalar_type()) + " " + c10::str(t->sizes()) + ", the ensemble's slice " +
                               c10::toString(slice.scalar_type()) + " " + c10::str(slice.sizes()));
      slice.copy_(*t);
      // The member's parameter now aliases the slice: it stays a leaf of the
      // member (its own autograd identity) on the ensemble's storage.
      if (parameter) t->set_data(slice);
    }
  };
  auto count = [](const auto& dict) { return dict.size(); };
  for (const auto& p : ensemble.named_parameters(true)) fill(p.key(), p.value(), true);
  for (const auto& b : ensemble.named_buffers(true)) fill(b.key(), b.value(), false);
  for (size_t s = 0; s < members.size(); ++s) {
    if (count(members[s]->named_parameters(true)) != count(ensemble.named_parameters(true)) ||
        count(members[s]->named_buffers(true)) != count(ensemble.named_buffers(true)))
      throw std::logic_error("bind_members: member " + std::to_string(s) +
                             " has other tensors than the ensemble");
  }
}

void Optimizer::zero_grad() {
  for (auto& p : params_) {
    auto& g = p.second.mutable_grad();
    if (g.defined()) g = torch::Tensor();
  }
}

}  // namespace groklab

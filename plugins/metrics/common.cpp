#include "common.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "splitmix.h"

namespace groklab::metrics {

torch::Tensor sample_indices(const torch::Tensor& idx_in, int64_t count, uint64_t seed, const std::string& salt) {
  torch::Tensor idx = idx_in.to(torch::kLong).contiguous();
  const int64_t n = idx.numel();
  if (count <= 0 || n <= count) return idx;
  SplitMix64 rng(seed, salt);
  std::vector<int64_t> all(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + n);
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t x = rng.below(static_cast<uint64_t>(n - i));
    std::swap(all[static_cast<size_t>(i)], all[static_cast<size_t>(i) + static_cast<size_t>(x)]);
  }
  all.resize(static_cast<size_t>(count));
  std::sort(all.begin(), all.end());
  return torch::tensor(all, torch::kLong);
}

std::string split_or_train(const Task& task, const std::string& split) {
  if (!split.empty()) return split;
  const auto splits = task.splits();
  if (splits.empty()) throw std::invalid_argument("the task has no splits");
  return splits.front();
}

ModelInternals require_hooks(const Model& model, const std::string& metric) {
  const ModelInternals in = model.internals();
  if (in.layers < 1)
    throw std::invalid_argument(metric + " needs a model with forward hooks (Model::internals() "
                                         "reports no layers)");
  return in;
}

torch::Tensor example_lengths(const Batch& b) {
  const int64_t T = b.targets.size(1);
  const torch::Tensor pos = torch::arange(1, T + 1, torch::kLong).expand({b.targets.size(0), T});
  return pos.masked_fill(b.targets.lt(0), 0).amax(1);
}

torch::Tensor entropy(const torch::Tensor& p) {
  const torch::Tensor q = p.to(torch::kDouble);
  return -(q * torch::log(q)).nan_to_num(0.0, 0.0, 0.0).sum(-1);
}

void for_each_batch(const EvalContext& ctx, const std::string& split, int64_t max_examples,
                    int64_t batch_size, const std::function<void(const Batch&)>& f) {
  const torch::Tensor idx =
      sample_indices(torch::arange(ctx.task->size(split), torch::kLong), max_examples, ctx.seed, split);
  const int64_t n = idx.numel();
  const int64_t bs = batch_size > 0 ? batch_size : std::max<int64_t>(n, 1);
  for (int64_t start = 0; start < n; start += bs)
    f(ctx.task->batch(split, idx.narrow(0, start, std::min(bs, n - start))));
}

void add_correct(const Task& task, const torch::Tensor& logits, const Batch& b, double& num, double& den) {
  const torch::Tensor c = task.correct(logits, b);
  if (c.dim() == 1) {
    num += static_cast<double>(c.sum().item<int64_t>());
    den += static_cast<double>(b.inputs.size(0));
  } else if (c.dim() == 2 && c.scalar_type() != torch::kBool && !c.is_floating_point()) {
    num += static_cast<double>(c.eq(1).sum().item<int64_t>());
    den += static_cast<double>(c.ge(0).sum().item<int64_t>());
  } else {
    throw std::invalid_argument("accuracy: Task::correct returned a " + std::to_string(c.dim()) + "-d " +
                                std::string(c10::toString(c.scalar_type())) +
                                " tensor; expected [B] bools or [B, L] integers (1 right, 0 wrong, -1 not scored)");
  }
}

void count_correct(Model& model, const Task& task, const std::string& split, const torch::Tensor& idx,
                   double& num, double& den) {
  const torch::Tensor c = task.correct_model(model, split, idx);
  if (!c.defined()) {
    const Batch b = task.batch(split, idx);
    add_correct(task, model.forward(b.inputs), b, num, den);
    return;
  }
  if (c.dim() != 1 || c.size(0) != idx.numel())
    throw std::invalid_argument("accuracy: Task::correct_model returned a tensor of shape " + c10::str(c.sizes()) +
                                "; expected [" + std::to_string(idx.numel()) + "]");
  num += static_cast<double>(c.to(torch::kLong).sum().item<int64_t>());
  den += static_cast<double>(idx.numel());
}

}  // namespace groklab::metrics

// Helpers shared by the built-in metrics (plugin-internal; uses LibTorch).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "groklab/components.h"

namespace groklab::metrics {

// Puts a model in eval mode and no-grad for its lifetime, then restores the mode.
class Evaluating {
 public:
  explicit Evaluating(Model* m) : m_(m), was_training_(m->is_training()) { m_->eval(); }
  ~Evaluating() {
    if (was_training_) m_->train(true);
  }
  Evaluating(const Evaluating&) = delete;
  Evaluating& operator=(const Evaluating&) = delete;

 private:
  Model* m_;
  bool was_training_;
  torch::NoGradGuard no_grad_;
};

// Returns the sorted int64 indices of a seeded sample of `count` of idx's
// entries (all of idx, unchanged, when count <= 0 or count >= its size):
// partial Fisher-Yates with SplitMix64 seeded by seed and salt.
torch::Tensor sample_indices(const torch::Tensor& idx, int64_t count, uint64_t seed, const std::string& salt);

// The split a metric measures: `split`, or the task's training split (its
// first) when split is "".
std::string split_or_train(const Task& task, const std::string& split);

// Returns the model's internals; throws std::invalid_argument naming the
// metric when the model offers no forward hooks.
ModelInternals require_hooks(const Model& model, const std::string& metric);

// The length of each example of a batch: one past its last scored target
// position (positions after it are padding). [B] int64.
torch::Tensor example_lengths(const Batch& b);

// Shannon entropy (nats) of distributions along the last dimension, in
// float64, with 0·ln 0 = 0.
torch::Tensor entropy(const torch::Tensor& p);

// Calls f on the batches (of at most batch_size examples; 0: all at once) of
// split's examples: all of them, or a sample of max_examples drawn with the
// evaluation's seed (sample_indices, salted with the split's name).
void for_each_batch(const EvalContext& ctx, const std::string& split, int64_t max_examples,
                    int64_t batch_size, const std::function<void(const Batch&)>& f);

// Adds the task's accuracy counts of logits on batch b to num (right) and den
// (counted): Task::correct gives [B] bools (examples) or [B, L] integers (1
// right, 0 wrong, -1 not scored: positions). Throws on any other shape.
void add_correct(const Task& task, const torch::Tensor& logits, const Batch& b, double& num, double& den);

// Adds the accuracy counts of model on split's examples at idx: from
// Task::correct_model when the task decodes, else from one forward() pass and
// add_correct(). The `accuracy` metric's definition.
void count_correct(Model& model, const Task& task, const std::string& split, const torch::Tensor& idx,
                   double& num, double& den);

}  // namespace groklab::metrics

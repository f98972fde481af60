// The four component interfaces a plugin implements: Task, Architecture
// (building a Model), Optimizer and Metric. Includes LibTorch; include it only
// where tensors are used.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "groklab/export.h"
#include "groklab/registry.h"

namespace groklab {

class Model;

// Named tensors, sorted by name (state dicts, optimizer state).
using TensorMap = std::map<std::string, torch::Tensor>;

// Shapes a task imposes on a model.
struct TaskSpec {
  int64_t vocab_size = 0;   // input tokens are in [0, vocab_size)
  int64_t seq_len = 0;      // inputs are [batch, seq_len]
  int64_t num_classes = 0;  // logits are [batch, L, num_classes]
};

// A batch of examples. targets holds -1 where a position carries no loss.
struct Batch {
  torch::Tensor inputs;   // [B, T] int64 tokens
  torch::Tensor targets;  // [B, T] int64 classes, -1 = ignored
};

// One sentence for structural metrics (tree projections): the model inputs of
// its words, and optionally its gold binary tree.
struct Sentence {
  // Model input tokens: a start token (position 0), then the words w₁…wₙ at
  // positions 1…n.
  std::vector<int64_t> inputs;
  // The gold binary tree's constituents of at least two words, root included,
  // as inclusive word spans [i, j] (1 ≤ i < j ≤ n); empty: no gold tree.
  std::vector<std::pair<int64_t, int64_t>> gold;
};

// A dataset with named splits; the first split is the training split.
class GROKLAB_API Task {
 public:
  virtual ~Task();
  virtual TaskSpec spec() const = 0;
  // Builds the splits deterministically from seed (the data-split stream).
  virtual void prepare(uint64_t seed) = 0;
  virtual std::vector<std::string> splits() const = 0;
  virtual int64_t size(const std::string& split) const = 0;
  // The examples of split at the given int64 indices.
  virtual Batch batch(const std::string& split, const torch::Tensor& indices) const = 0;
  // Correctness of logits [B, L, C] aligned with the last L target positions:
  // either per example, [B] bool (accuracy = fraction of examples), or per
  // position, [B, L] integers with 1 right, 0 wrong, -1 not scored (accuracy
  // = fraction of scored positions, as Dyck's closing-bracket accuracy).
  // Default: [B], argmax right at every scored position.
  virtual torch::Tensor correct(const torch::Tensor& logits, const Batch& batch) const;
  // The int64 indices [N] of split's examples that accuracy counts (numerator
  // and denominator). Default: all of them, arange(size(split)).
  virtual torch::Tensor scored(const std::string& split) const;
  // Per-example correctness [B] (bool) of model on split's examples at
  // indices, for tasks whose accuracy needs more than one forward pass (e.g.
  // greedy decoding). Called in eval mode without autograd. Default: an
  // undefined tensor, meaning "run model.forward() on batch() and use correct()".
  //   Tensor ok = task.correct_model(model, "test", idx);
  //   if (!ok.defined()) ok = task.correct(model.forward(b.inputs), b);
  virtual torch::Tensor correct_model(Model& model, const std::string& split,
                                      const torch::Tensor& indices) const;
  // The int64 indices [N] of split's examples that have a sentence() for
  // structural metrics. Default: throws std::logic_error (the task offers none).
  virtual torch::Tensor sentence_indices(const std::string& split) const;
  // The sentence of split's example at index (one of sentence_indices()).
  // Default: throws std::logic_error (the task offers none).
  //   for (int64_t i : idx) { Sentence s = task.sentence("train", i); … }
  virtual Sentence sentence(const std::string& split, int64_t index) const;
};

// The sizes a model's internals have in ForwardHooks; layers == 0 means the
// model offers no hooks.
struct ModelInternals {
  int64_t layers = 0;   // attention layers (blocks)
  int64_t heads = 0;    // attention heads per layer
  int64_t d_model = 0;  // residual stream width
  int64_t d_head = 0;   // width of one head's output (before the output projection)
};

// The hook interface through which metrics read and change a model's
// internals in one forward pass (Model::forward_hooked). Inputs left
// undefined change nothing; outputs are filled only when asked for. Shapes
// use B examples of T positions, as in the pass's inputs.
//
//   ForwardHooks h;
//   h.record_attention = true;
//   model.forward_hooked(inputs, h);   // h.attention[l]: [B, heads, T, T]
// Tensors in ForwardHooks are on the device of the inputs passed to
// forward_hooked(), whatever device the model lives on.
struct ForwardHooks {
  // In, attention masking: bool [B, T] (the keys every query may attend to)
  // or [B, T, T] (query, key). Applied in every layer on top of the model's
  // own mask (causal); positions and everything else are unchanged. A query
  // left with no key gets NaN: keep at least one key per query.
  torch::Tensor attend;
  // In, head ablation: float [layers, heads] gates g. Each head's output z
  // (its attention-weighted values, before the output projection) becomes
  // g·z + (1 − g)·head_fill. Autograd flows into g (hard-concrete gates).
  torch::Tensor head_gate;
  // In, with head_gate: what an ablated head outputs, broadcastable to
  // [layers, heads, T, d_head] (e.g. per-position means over a split:
  // mean ablation). Undefined: zeros (zero ablation).
  torch::Tensor head_fill;

  bool record_hidden = false;     // fill hidden
  bool record_attention = false;  // fill attention
  bool record_heads = false;      // fill heads

  // Out: the residual stream [B, T, d_model]: hidden[0] after the embeddings
  // (and positions), hidden[l] after block l; layers + 1 tensors. The last is
  // what the readout reads (before a final LayerNorm, if any).
  std::vector<torch::Tensor> hidden;
  // Out: per layer, the attention probabilities [B, heads, T, T] (rows are
  // queries; after the softmax, before dropout).
  std::vector<torch::Tensor> attention;
  // Out: per layer, each head's output [B, heads, T, d_head] before gating.
  std::vector<torch::Tensor> heads;
};

// A trainable network. forward() maps inputs [B, T] to logits [B, L, C]
// aligned with the last L positions of the targets (L = 1 reads out the last
// position only). The logits are on the device of the inputs, wherever the
// model lives (a model moved to a GPU still takes the task's CPU batches).
class GROKLAB_API Model : public torch::nn::Module {
 public:
  ~Model() override;
  virtual torch::Tensor forward(const torch::Tensor& inputs) = 0;
  // The sizes of its internals. Default: layers 0 (no hooks).
  virtual ModelInternals internals() const;
  // forward() with hooks: the same logits when the hooks change nothing.
  // Default: throws std::logic_error (the model offers no hooks).
  virtual torch::Tensor forward_hooked(const torch::Tensor& inputs, ForwardHooks& hooks);
};

// Builds models. Initialisation draws from torch's default generator, which
// the trainer seeds from the run's parameter-init stream just before build().
class GROKLAB_API Architecture {
 public:
  virtual ~Architecture();
  virtual std::shared_ptr<Model> build(const TaskSpec& spec) const = 0;
  // A seed-vectorised ensemble (run.ensemble = S) of members, S models this
  // architecture built (each initialised from its own seed): one model whose
  // every tensor has the members' tensors stacked on a new leading dimension,
  // under the same names, and whose forward() maps the members' batches
  // concatenated member-major, [S·B, T], to their logits [S·B, L, C] (member
  // s's rows are s·B … s·B + B − 1), with batched matmuls. Implementations
  // call bind_members(), so each member model keeps working (metrics,
  // checkpoints) on its slice. Default: nullptr (the architecture trains no
  // ensembles).
  virtual std::shared_ptr<Model> build_ensemble(const TaskSpec& spec,
                                                const std::vector<std::shared_ptr<Model>>& members) const;
};

// For Architecture::build_ensemble(): fills each tensor of ensemble (S × the
// members' shape) from the members' tensors of the same name, then makes every
// member parameter a view of its slice of the ensemble's, so updates to the
// ensemble's parameters are the members' updates. Throws std::logic_error when
// names or shapes do not line up.
GROKLAB_API void bind_members(torch::nn::Module& ensemble, const std::vector<std::shared_ptr<Model>>& members);

// Updates parameters from their gradients and owns its state.
class GROKLAB_API Optimizer {
 public:
  virtual ~Optimizer();
  // Called once with the model's named parameters before the first step.
  virtual void attach(const std::vector<std::pair<std::string, torch::Tensor>>& params) = 0;
  // Applies one update; step counts from 1.
  virtual void step(int64_t step) = 0;
  virtual void zero_grad();
  // All optimizer state as named tensors for checkpoints (keys such as
  // "exp_avg.blocks.0.fc1.weight", "step"); loading it back must make the next
  // step() bit-identical to an uninterrupted run. Checkpoints are pickled so
  // Python's torch.load reads them: use tensors only (scalars as 0-d tensors).
  virtual TensorMap state() const = 0;
  virtual void load_state(const TensorMap& state) = 0;

 protected:
  std::vector<std::pair<std::string, torch::Tensor>> params_;
};

// What a metric sees at an evaluation. The trainer calls metrics in eval
// mode without autograd, and restores torch's default generator afterwards:
// a metric that samples draws from its own generator seeded with `seed`.
struct EvalContext {
  Model* model = nullptr;
  const Task* task = nullptr;
  int64_t step = 0;
  uint64_t seed = 0;  // this evaluation's metric-sampling seed
  // During training: this step's parameters before its update and the
  // gradients of its training loss (before the optimizer's clipping or
  // filtering), by parameter name. nullptr outside a training run.
  const TensorMap* params_before = nullptr;
  const TensorMap* gradients = nullptr;
  // The parameters at initialisation (step 0), by name, on the model's
  // device; nullptr outside a training run. E.g. for distances from θ₀.
  const TensorMap* initial_params = nullptr;
};

// Measures a model; returns named scalar values for the series. Every
// metric's schema also has `every` (added by Registrar::add_metric): its
// evaluation cadence in steps, 0 = the run's eval_every.
class GROKLAB_API Metric {
 public:
  virtual ~Metric();
  virtual std::map<std::string, double> evaluate(const EvalContext& ctx) = 0;
};

}  // namespace groklab

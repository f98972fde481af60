// The deterministic trainer: task → batches, architecture → model,
// optimizer → updates, metrics on the eval cadence, checkpoints on the
// checkpoint cadence. Torch-free header; what the trainer produces reaches the
// caller through a TrainObserver (the ledger recorder, or a replay checker).
//
// The training loss is cross-entropy over the scored positions (targets -1
// ignored), computed in float64 (logits cast to double, as the reference
// peer does) unless the run says loss_dtype = "float32".
//
//   groklab::Trainer t(config, host.registry());
//   MyObserver obs;
//   t.run(obs);
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "groklab/export.h"
#include "groklab/manifest.h"
#include "groklab/registry.h"

namespace groklab {

// The purposes that get their own random stream. Adding one never shifts the
// others: each stream's seed depends only on the root seed and its name.
struct Seeds {
  uint64_t root = 0;
  uint64_t init = 0;     // parameter initialisation (torch's default generator before build())
  uint64_t split = 0;    // the task's train/test split (Task::prepare)
  uint64_t order = 0;    // minibatch order
  uint64_t dropout = 0;  // torch's default generator during training
  uint64_t metric = 0;   // metric sampling (mixed with the step)
};

// Returns the streams of a root seed. policy "derived" (the default): each
// stream is XXH3-64(root, name); "shared": every stream is the root itself,
// as a plain script that calls torch.manual_seed(seed) and Random(seed) does.
GROKLAB_API Seeds derive_seeds(uint64_t root, const std::string& policy = "derived");

// A checkpoint as the trainer hands it over.
struct Checkpoint {
  int64_t step = 0;
  std::string bytes;        // a pickle (torch.load reads it): model, optimizer, rng, cursor
  std::string params_hash;  // XXH3-128 over (name, dtype, shape, bytes) of every parameter
  std::vector<std::pair<std::string, std::string>> tensor_hashes;  // per parameter, by name
};

// Receives what a run produces, in order.
class GROKLAB_API TrainObserver {
 public:
  virtual ~TrainObserver();
  // After each evaluation: at every step where some metric's cadence (its
  // `every`, default run.eval_every) falls, and at the last step; values
  // holds what the metrics that ran at this step report.
  virtual void on_eval(int64_t step, const std::map<std::string, double>& values) = 0;
  // After each checkpoint (every checkpoint_every steps and at the last step).
  virtual void on_checkpoint(const Checkpoint& ckpt) = 0;
  // After every step, with its training loss (progress display).
  virtual void on_step(int64_t step, double loss) {}
};

// Where a run starts and stops.
struct TrainPlan {
  std::string resume_from;  // checkpoint bytes to restore ("" = fresh start)
  int64_t stop_step = 0;    // last step to run (0 = run.steps)
  // An ensemble: per member, the checkpoint to restore ("" = fresh start; all
  // empty or all given) and whether that member had already stopped there
  // (it trains no further).
  std::vector<std::string> member_resume;
  std::vector<bool> member_stopped;
};

class GROKLAB_API Trainer {
 public:
  // Builds the components from the registry; throws std::runtime_error
  // naming the component if a factory fails.
  Trainer(const ResolvedConfig& config, const Registry& registry);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // The run's random streams (an ensemble: member 0's; member s's are those
  // of member_config(config, s)).
  const Seeds& seeds() const;
  // Trains per the plan, reporting to obs. Returns the last step run.
  // Throws std::logic_error for an ensemble (use run_ensemble()).
  int64_t run(TrainObserver& obs, const TrainPlan& plan = {});

  // run.ensemble = S > 1: S members, member s being the run of
  // member_config(config, s), trained as one batched model (the
  // architecture's build_ensemble()): one forward and backward pass for all,
  // then each member's own optimizer, metrics, early stop and checkpoints
  // (each a single run's checkpoint of that member). A member that reaches
  // its stop metric stops updating while the others go on.
  int64_t members() const;
  // Trains the members per the plan, reporting member s to *obs[s]. Returns
  // each member's last step.
  std::vector<int64_t> run_ensemble(const std::vector<TrainObserver*>& obs, const TrainPlan& plan = {});
  // Member s of an ensemble config as a single run: seed + s, ensemble = 1.
  static ResolvedConfig member_config(const ResolvedConfig& config, int64_t member);
  // The seed a metric gets at an evaluation at step (EvalContext::seed),
  // from the run's metric stream seed.
  static uint64_t metric_seed(uint64_t metric_stream, int64_t step);

  // The step a checkpoint was taken at.
  static int64_t checkpoint_step(const std::string& bytes);
  // The per-parameter hashes of a checkpoint, by name.
  static std::vector<std::pair<std::string, std::string>> checkpoint_tensor_hashes(const std::string& bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Sets LibTorch's intra-op threads (and, once per process, inter-op threads);
// call before any tensor work.
GROKLAB_API void set_threads(int64_t threads);

}  // namespace groklab

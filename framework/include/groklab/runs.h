// Runs recorded in the ledger: run (start entry, checkpoint entries, result
// entry), resume after a crash, replay bit-for-bit, and spot-check.
//
// Entry kinds written here (all other fields are documented in docs/ledger.md):
//   "run"        a run started: config object + hash, seeds, environment, plugins
//   "checkpoint" a checkpoint of a run: step, parameter hash, checkpoint + series objects
//   "resume"     a run continued from its last checkpoint (environment of the new process)
//   "result"     a run ended: status, final metrics, every checkpoint's hash, series object
//   "replay"     a replay or spot-check of a run and its verdict
//   "ensemble"   an ensemble (run.ensemble = S > 1) started: its config, environment, and
//                then S "run" entries, one per member, each with "ensemble" and "member"
//   "ensemble_result"  an ensemble ended: status, its members' run and result entries
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "groklab/export.h"
#include "groklab/host.h"
#include "groklab/ledger/ledger.h"
#include "groklab/manifest.h"
#include "groklab/trainer.h"

namespace groklab {

// The facts a run's bits depend on: host binary and plugin hashes, LibTorch,
// BLAS (and OpenBLAS core), threads, CPU model and ISA flags, compiler, OS;
// for a CUDA device also the GPU model, driver, CUDA and cuDNN versions and
// the determinism settings (use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG).
GROKLAB_API nlohmann::json environment(const PluginHost& host, int64_t threads,
                                       const std::string& device = "cpu");

// Returns "key.path: recorded → now" for every field that differs.
GROKLAB_API std::vector<std::string> environment_diff(const nlohmann::json& recorded,
                                                      const nlohmann::json& now);

// Everything the ledger says about one run.
struct GROKLAB_API RunRecord {
  ledger::Entry start;                    // the "run" entry
  std::vector<ledger::Entry> checkpoints;  // "checkpoint" entries, in step order
  std::vector<ledger::Entry> resumes;      // "resume" entries
  std::optional<ledger::Entry> result;     // the "result" entry, if the run ended
  std::vector<ledger::Entry> replays;      // "replay" entries of this run
  // "finished", "failed", "interrupted", or "started" (no result: still running or killed).
  std::string status() const;
};

// Collects a run's entries; ID may be any entry of the run (or a prefix).
// Throws std::runtime_error if it names no run.
GROKLAB_API RunRecord load_run(const ledger::Ledger& ledger, const std::string& id);

// Every run in the ledger, in ledger order, in one pass over the entries.
GROKLAB_API std::vector<RunRecord> load_runs(const ledger::Ledger& ledger);

// The outcome of a run or resume.
struct RunOutcome {
  std::string run_id;     // the "run" entry
  std::string result_id;  // the "result" entry
  std::string status;     // "finished" (else an exception was thrown)
  int64_t steps = 0;
  std::string params_hash;  // of the last checkpoint
  std::map<std::string, double> final_metrics;
};

// Extra facts for the start entry (manifest path, overrides, sweep parent).
struct Provenance {
  std::string manifest;
  std::vector<std::string> overrides;
  std::string sweep;  // id of the sweep entry this run belongs to, if any
  int64_t sweep_child = -1;  // its child index in that sweep (with sweep)
};

// Trains config and records it in the ledger. progress (optional) also sees
// every step. On an exception, records a "failed" (or "interrupted") result
// and rethrows. An ensemble config (run.ensemble > 1) is an error here: use
// run_ensemble_recorded().
GROKLAB_API RunOutcome run_recorded(const ResolvedConfig& config, const PluginHost& host,
                                    ledger::Ledger& ledger, const Provenance& provenance,
                                    TrainObserver* progress = nullptr);

// Continues a run that has no result from its last checkpoint (or from the
// start, if it has none) and records the rest in the ledger.
GROKLAB_API RunOutcome resume_recorded(const std::string& run, const PluginHost& host,
                                       const Composer& composer, ledger::Ledger& ledger,
                                       TrainObserver* progress = nullptr);

// What an ensemble produced: its "ensemble" entry and each member's run, in
// member order.
struct EnsembleOutcome {
  std::string ensemble_id;
  std::string result_id;  // the "ensemble_result" entry
  std::string status;     // "finished" (else an exception was thrown)
  std::vector<RunOutcome> members;
};

// Trains an ensemble config (run.ensemble = S > 1) as one batched model and
// records an "ensemble" entry, then per member a "run" entry (its config is
// Trainer::member_config(config, s): a single run of seed + s) with its own
// checkpoints and result, then an "ensemble_result". progress sees the
// steps. On an exception, every member still training gets a "failed" (or
// "interrupted") result, and the ensemble too; then it rethrows.
GROKLAB_API EnsembleOutcome run_ensemble_recorded(const ResolvedConfig& config, const PluginHost& host,
                                                  ledger::Ledger& ledger, const Provenance& provenance,
                                                  TrainObserver* progress = nullptr);

// Continues an ensemble that has no ensemble_result: entry is the "ensemble"
// entry or any entry of a member. Each member still training restarts from its
// checkpoint at the last step every such member reached; members that had
// stopped stay stopped.
GROKLAB_API EnsembleOutcome resume_ensemble_recorded(const std::string& entry, const PluginHost& host,
                                                     const Composer& composer, ledger::Ledger& ledger,
                                                     TrainObserver* progress = nullptr);

// The "ensemble" entry id that entry (the ensemble entry, a member's run, or
// any entry of a member) belongs to; "" when it belongs to no ensemble.
GROKLAB_API std::string ensemble_of(const ledger::Ledger& ledger, const std::string& entry);

// What a replay found.
struct GROKLAB_API ReplayReport {
  std::string run_id;
  std::string replay_id;      // the "replay" entry appended
  bool identical = false;     // every compared checkpoint and metric matched
  std::string mode;           // "full" or "spot-check"
  int64_t checkpoints_compared = 0;
  int64_t metrics_compared = 0;
  std::vector<int64_t> intervals;     // spot-check: end steps of the intervals re-trained
  std::vector<std::string> env_diff;  // environment fields that differ from the record
  std::vector<std::string> binary_diff;  // host/plugin binaries that differ (said up front)
  std::string divergence;     // "" or the first divergence, human readable
  // An ensemble's replay: run_id is the "ensemble" entry, replay_id the first
  // member's "replay" entry, and member_replays every member's.
  std::vector<std::string> member_replays;
  std::string summary() const;  // multi-line report for the terminal
};

// Replays a finished run and compares every checkpoint hash and metric; with
// spot_check = K > 0, re-trains only K recorded checkpoint intervals (chosen
// from the run id, or from seed). Appends a "replay" entry. An ensemble (run
// names its "ensemble" entry or one of its members) is replayed whole, as it
// was trained, and every member is compared; each member gets a "replay" entry.
GROKLAB_API ReplayReport replay_recorded(const std::string& run, const PluginHost& host,
                                         const Composer& composer, ledger::Ledger& ledger,
                                         int64_t spot_check = 0,
                                         std::optional<uint64_t> seed = std::nullopt,
                                         const std::vector<std::string>& overrides = {},
                                         TrainObserver* progress = nullptr);

// Thrown by a TrainObserver to stop a run on request (Ctrl-C); the run is
// recorded as "interrupted" and can be resumed.
struct GROKLAB_API Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

}  // namespace groklab

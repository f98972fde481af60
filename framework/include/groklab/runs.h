// Runs recorded in the ledger: run (start entry, checkpoint entries, result
// entry), resume after a crash, replay bit-for-bit, and spot-check.
//
// Entry kinds written here (all other fields are documented in docs/ledger.md):
//   "run"        a run started: config object + hash, seeds, environment, plugins
//   "checkpoint" a checkpoint of a run: step, parameter hash, checkpoint + series objects
//   "resume"     a run continued from its last checkpoint (environment of the new process)
//   "result"     a run ended: status, final metrics, every checkpoint's hash, series object
//   "replay"     a replay or spot-check of a run and its verdict
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
// and rethrows.
GROKLAB_API RunOutcome run_recorded(const ResolvedConfig& config, const PluginHost& host,
                                    ledger::Ledger& ledger, const Provenance& provenance,
                                    TrainObserver* progress = nullptr);

// Continues a run that has no result from its last checkpoint (or from the
// start, if it has none) and records the rest in the ledger.
GROKLAB_API RunOutcome resume_recorded(const std::string& run, const PluginHost& host,
                                       const Composer& composer, ledger::Ledger& ledger,
                                       TrainObserver* progress = nullptr);

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
  std::string summary() const;  // multi-line report for the terminal
};

// Replays a finished run and compares every checkpoint hash and metric; with
// spot_check = K > 0, re-trains only K recorded checkpoint intervals (chosen
// from the run id, or from seed). Appends a "replay" entry.
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

// Sweeps recorded in the ledger: freeze a manifest's children, run one child,
// and read back each child's state. `groklab sweep` (local processes, -j N)
// and `groklab sweep --slurm` (a job array) are thin layers over this; both
// run every child through run_child(), so a child's config hash and bits do
// not depend on where it ran.
//
// A "sweep" entry freezes the resolved children before anything runs:
//   {"kind": "sweep", "manifest", "overrides", "launcher": "local" | "slurm",
//    "children": [{"index", "config_hash", "varied": {"key.path": value}}, …],
//    "objects": {"child.0": <canonical config>, "child.1": …}}
// so editing the manifest afterwards changes nothing. A child's run names the
// sweep in its "run" entry ("sweep": id, "sweep_child": index).
//
//   auto frozen = groklab::sweep::freeze(ledger, composer.expand("m.toml"), prov, "local");
//   for (const auto& c : frozen.children) groklab::sweep::run_child(ledger, host, composer, frozen.id, c.index);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "groklab/export.h"
#include "groklab/host.h"
#include "groklab/ledger/ledger.h"
#include "groklab/manifest.h"
#include "groklab/runs.h"

namespace groklab::sweep {

// One frozen child of a sweep entry.
struct GROKLAB_API Child {
  int64_t index = 0;
  std::string config_hash;
  std::string config_object;  // hash of its canonical config in the object store
  nlohmann::json varied;      // {"key.path": value} of the swept keys
  // "architecture.depth=4 run.seed=1" (or "-" when nothing is varied).
  std::string varied_text() const;
};

// A sweep entry read back.
struct GROKLAB_API Frozen {
  std::string id;  // full id of the "sweep" entry
  std::string manifest;
  std::string launcher;  // "local" or "slurm"
  std::vector<Child> children;
};

// Appends a "sweep" entry freezing every child's canonical config into the
// object store; returns it read back. launcher is recorded as given.
GROKLAB_API Frozen freeze(ledger::Ledger& ledger, const std::vector<SweepChild>& children,
                          const Provenance& provenance, const std::string& launcher);

// Reads a sweep entry (full id, unique prefix or HEAD). Throws
// std::runtime_error if the entry is not a sweep.
GROKLAB_API Frozen load(const ledger::Ledger& ledger, const std::string& id);

// Where a child stands, from the ledger alone.
struct GROKLAB_API ChildState {
  int64_t index = 0;
  // "pending" (no run yet), "started" (running, or killed), "interrupted",
  // "failed", "finished" — or "done before" when a finished run of the same
  // config hash from outside this sweep already exists.
  std::string status = "pending";
  std::string run_id;  // the run that decides the status ("" if pending)
  int64_t step = 0;    // steps trained (the result's, else the last checkpoint's)
  int64_t steps = 0;   // steps configured
  std::map<std::string, double> final_metrics;  // of a run with a result
};

// The state of every child of a sweep, in child order.
GROKLAB_API std::vector<ChildState> status(const ledger::Ledger& ledger, const Frozen& sweep);

// Config hashes of every finished run in the ledger -> the run's id (the
// first finished run of each hash).
GROKLAB_API std::map<std::string, std::string> finished_configs(const ledger::Ledger& ledger);

// Runs child index of the sweep to the end, recorded in the ledger:
// a child whose run of this sweep already finished is left as it is; one whose
// run was started or interrupted (a requeued or preempted Slurm task) resumes
// from its last checkpoint; otherwise a new run starts (after a failed one,
// too). Throws std::runtime_error for an unknown child, or what the run throws.
GROKLAB_API RunOutcome run_child(ledger::Ledger& ledger, const PluginHost& host,
                                 const Composer& composer, const std::string& sweep_id,
                                 int64_t index, TrainObserver* progress = nullptr);

}  // namespace groklab::sweep

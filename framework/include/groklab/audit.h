// Reading runs back out of the ledger: select them by their resolved config,
// load their metric series, take a metric at a step, group and aggregate, and
// audit them (replayed? diverged? built from the binaries installed now?).
// The ledger commands (`groklab ledger list|show|diff|query|export|audit`) and
// the report are thin layers over this. LibTorch-free.
//
//   auto ledger = groklab::ledger::Ledger::open("groklab-ledger");
//   std::vector<groklab::audit::RunInfo> runs = groklab::audit::list_runs(ledger);
//   groklab::audit::Selection sel;
//   sel.where = {{"architecture.depth", "4"}};
//   runs = groklab::audit::select_runs(runs, sel);          // throws SelectionError
//   groklab::audit::Series s = groklab::audit::load_series(ledger, runs[0].record);
//   double acc = s.rbegin()->second.at("test_accuracy");   // last evaluation
//
// Metric expressions (parse_metric), as given to `--metric`:
//   NAME                       the metric NAME (e.g. test_accuracy, train_loss),
//                              taken at a step (see At)
//   first_step(NAME OP X)      the first evaluated step where NAME OP X holds,
//                              e.g. first_step(test_accuracy>=0.995): steps to grok;
//                              no value if it never holds. OP: >= > <= < == !=
//   at_best(NAME, KEY)         NAME at the evaluation where KEY is best (its
//                              maximum; minimum for a KEY containing "loss"; the
//                              first such step on ties) among the evaluations
//                              recording both, e.g. at_best(test_accuracy,
//                              val_accuracy): Murty et al.'s early stopping
// Conditions (parse_condition), as given to `--frac`: NAME OP X, evaluated on
// the metric NAME taken at the same step as the query's metric.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "groklab/export.h"
#include "groklab/ledger/ledger.h"
#include "groklab/runs.h"

namespace groklab::audit {

// A resolved config flattened to key paths, as overrides write them:
// "task.plugin", "architecture.depth", "optimizer.lr", "metrics.0.split",
// "run.seed" -> the value (a JSON string, integer, float or boolean).
using Config = std::map<std::string, nlohmann::json>;

// Flattens a canonical config text (ResolvedConfig::canonical(), the run's
// "config" object). Throws std::invalid_argument if it is not TOML.
GROKLAB_API Config flatten_config(const std::string& canonical_toml);

// One run and what a listing needs to know about it.
struct GROKLAB_API RunInfo {
  RunRecord record;      // every entry of the run (start, checkpoints, result, replays...)
  std::string id;        // full id of the "run" entry
  std::string time;      // the run entry's time (ISO 8601 UTC)
  std::string status;    // "finished", "failed", "interrupted" or "started"
  std::string task;      // component plugin names
  std::string architecture;
  std::string optimizer;
  std::string sweep;     // id of the sweep entry the run belongs to, "" if none
  int64_t steps = 0;     // steps trained (the result's; the last checkpoint's if none)
  Config config;         // the resolved config, flattened
  std::map<std::string, double> final_metrics;  // the result's "final" (NaN/inf restored)
};

// Every run in the ledger, in ledger order. Reads each run's config object.
// Throws LedgerError / std::runtime_error for an unreadable ledger or object.
GROKLAB_API std::vector<RunInfo> list_runs(const ledger::Ledger& ledger);

// One run's RunInfo from its record (load_run); reads its config object.
GROKLAB_API RunInfo run_info(const ledger::Ledger& ledger, RunRecord record);

// A run's metric series: evaluated step -> {metric name -> value}.
using Series = std::map<int64_t, std::map<std::string, double>>;

// Loads a run's series from its result's "series" object, else from its last
// checkpoint's (a run still going or killed); empty if it has neither.
GROKLAB_API Series load_series(const ledger::Ledger& ledger, const RunRecord& run);

// What to select (every field optional; all given ones must hold).
struct GROKLAB_API Selection {
  // key path = value, compared canonically: numbers by value (1e-3 matches
  // 0.001, 4 matches 4.0), booleans as true/false, strings exactly.
  std::vector<std::pair<std::string, std::string>> where;
  std::string task, architecture, optimizer;  // component plugin names
  std::string status;                         // finished|started|failed|interrupted
  std::string since, until;  // ISO 8601 times or dates (prefix compare): since <= time, time <= until
  // Parses "key=value" into where; throws SelectionError if there is no '='.
  void add_where(const std::string& key_equals_value);
};

// A selection that cannot be applied (unknown key, bad status, bad syntax).
class GROKLAB_API SelectionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Returns the runs the selection keeps, in order. Throws SelectionError for a
// `where` key that no run's config has (the message names the key and the
// closest known keys) or an unknown status. An empty result is not an error here.
GROKLAB_API std::vector<RunInfo> select_runs(const std::vector<RunInfo>& runs, const Selection& selection);

// True if a recorded config value equals TEXT canonically (see Selection::where).
GROKLAB_API bool value_matches(const nlohmann::json& recorded, const std::string& text);

// Up to MAX keys of KNOWN closest to KEY (edit distance, then shared suffix), best first.
GROKLAB_API std::vector<std::string> close_keys(const std::string& key, const std::set<std::string>& known,
                                                std::size_t max = 3);

// A value as plain text: strings unquoted, numbers in JSON's shortest form.
GROKLAB_API std::string value_text(const nlohmann::json& value);

// NAME OP X.
struct GROKLAB_API Condition {
  std::string metric;
  std::string op;  // ">=", ">", "<=", "<", "==", "!="
  double threshold = 0;
  bool holds(double value) const;
  std::string text() const;  // "test_accuracy>=0.8"
};

// Parses "NAME OP X"; throws std::invalid_argument with what was expected.
GROKLAB_API Condition parse_condition(const std::string& text);

// A metric expression (see the header comment).
struct GROKLAB_API MetricSpec {
  std::string name;                   // the metric, for NAME
  std::optional<Condition> first_step;  // set for first_step(COND)
  std::string best_of;                // KEY of at_best(NAME, KEY); empty otherwise
  std::string text() const;           // as written canonically
};

// Parses a metric expression; throws std::invalid_argument.
GROKLAB_API MetricSpec parse_metric(const std::string& text);

// Where a metric is taken: "final" (the last evaluation), "best" (the maximum;
// the minimum for a metric whose name contains "loss"), or a step number (the
// evaluation at exactly that step).
struct GROKLAB_API At {
  enum Kind { kFinal, kBest, kStep } kind = kFinal;
  int64_t step = 0;
  std::string text() const;
};

// Parses "final", "best" or a non-negative step; throws std::invalid_argument.
GROKLAB_API At parse_at(const std::string& text);

// The value of SPEC for a run with series SERIES, taken AT; nullopt if the
// run has no such value (metric never evaluated, step not evaluated, or
// first_step's condition never held). first_step and at_best ignore AT.
GROKLAB_API std::optional<double> metric_value(const Series& series, const MetricSpec& spec, const At& at);

// The value of a condition's metric taken AT, tested; false if it has no value.
GROKLAB_API bool condition_holds(const Series& series, const Condition& cond, const At& at);

// A query: group runs by config keys, aggregate a metric taken at a step.
struct GROKLAB_API QuerySpec {
  std::vector<std::string> group_by;  // config key paths ({} = one group of all runs)
  MetricSpec metric;
  At at;
  std::optional<Condition> frac;      // also report the fraction of runs meeting it
};

// One group's aggregates. Runs without a value of the metric count in `runs`
// but not in `count`, mean, std, min or max; for `frac` they count as not meeting it.
struct GROKLAB_API GroupRow {
  std::vector<nlohmann::json> key;  // the group's values of the group_by keys (null: key absent)
  std::size_t runs = 0;             // runs in the group
  std::size_t count = 0;            // runs with a value of the metric
  double mean = 0, std = 0, min = 0, max = 0;  // NaN when count == 0 (std: NaN when count < 2)
  double frac = 0;                  // fraction of `runs` meeting QuerySpec::frac (0 if none given)
  std::size_t frac_count = 0;       // how many met it
  std::vector<std::string> run_ids; // the group's runs
};

// Groups RUNS by SPEC.group_by (groups sorted by key: numbers by value) and
// aggregates. std is the sample standard deviation (n - 1, as pandas). Throws
// SelectionError for a group_by key no run has. Loads each run's series once.
GROKLAB_API std::vector<GroupRow> query(const ledger::Ledger& ledger, const std::vector<RunInfo>& runs,
                                        const QuerySpec& spec);

// One key path where two configs (or environments) differ; null = absent on that side.
struct GROKLAB_API Difference {
  std::string key;
  nlohmann::json a, b;
};

// Every key path where A and B differ, in key order.
GROKLAB_API std::vector<Difference> diff_config(const Config& a, const Config& b);

// Flattens any JSON (an "environment") to key paths like Config.
GROKLAB_API Config flatten_json(const nlohmann::json& value);

// The first step at which METRIC differs between two series: a step evaluated
// in one but not the other, or a different value (bitwise, NaN equals NaN);
// nullopt if the series agree on METRIC everywhere.
GROKLAB_API std::optional<int64_t> first_difference(const Series& a, const Series& b, const std::string& metric);

// What `groklab ledger audit` reports.
struct GROKLAB_API AuditReport {
  ledger::VerifyResult verify;  // the chain and objects; the lists below are empty if !verify.ok
  struct Run {
    std::string id;       // run entry id
    std::string status;   // the run's status
    std::string detail;   // diverged: "replay ID: divergence"; binaries: the differing fields
  };
  std::vector<Run> never_replayed;   // finished runs with no replay entry
  std::vector<Run> replay_diverged;  // runs with at least one replay whose outcome is "diverged"
  std::vector<Run> binaries_differ;  // runs whose recorded host or plugin binaries differ from now
  std::size_t runs = 0;              // runs examined
};

// Verifies LEDGER, then examines every run. ENVIRONMENT_NOW is groklab::environment()
// of the running process (host hash and loaded plugins' hashes); a run's
// recorded "host.hash" and each "plugins.NAME.hash" are compared with it (a
// recorded plugin not loaded now counts as different).
GROKLAB_API AuditReport audit_ledger(const ledger::Ledger& ledger, const nlohmann::json& environment_now);

// Fields where two environments differ in their binaries: "host.hash: A → B",
// "plugins.NAME.hash: A → B", "plugins.NAME: not installed now".
GROKLAB_API std::vector<std::string> binary_differences(const nlohmann::json& recorded,
                                                        const nlohmann::json& now);

}  // namespace groklab::audit

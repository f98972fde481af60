// groklab report [RUN…] [--where key=value…] [--task T] … [--ledger DIR] [-o FILE]
// One self-contained HTML page of the selected runs (groklab/report.h).
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "commands.h"
#include "common.h"
#include "groklab/audit.h"
#include "groklab/report.h"
#include "ledger_query.h"

namespace groklab::cli {
namespace {

struct ReportArgs {
  std::vector<std::string> runs;   // run ids or prefixes (any entry of a run)
  SelectionArgs select;            // --where, --task, … (shared with ledger list/query/export)
  std::vector<std::string> group_by;
  std::string ledger;
  std::string output = "report.html";
  std::string title = "groklab report";
};

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "groklab report: %s\n", message.c_str());
  throw Exit{2};
}

void report_command(const ReportArgs& a) {
  audit::Selection sel;
  try {
    sel = a.select.selection();
  } catch (const audit::SelectionError& e) {
    fail(e.what());
  }
  // The selection as the page shows it.
  std::vector<std::string> shown = a.select.where;
  for (const auto& [what, value] : {std::pair<const char*, const std::string&>{"task", a.select.task},
                                    {"architecture", a.select.architecture},
                                    {"optimizer", a.select.optimizer},
                                    {"status", a.select.status},
                                    {"since", a.select.since},
                                    {"until", a.select.until}})
    if (!value.empty()) shown.push_back(std::string(what) + "=" + value);

  auto ledger = ledger::Ledger::open(ledger_dir(a.ledger));
  const std::vector<audit::RunInfo> all = audit::list_runs(ledger);
  std::vector<audit::RunInfo> runs;
  try {
    runs = audit::select_runs(all, sel);
  } catch (const audit::SelectionError& e) {
    fail(e.what());
  }
  if (!a.runs.empty()) {
    std::set<std::string> wanted;
    for (const auto& r : a.runs) {
      try {
        wanted.insert(load_run(ledger, r).start.id);
      } catch (const std::exception& e) {
        fail(e.what());
      }
      shown.push_back("run " + r);
    }
    std::vector<audit::RunInfo> kept;
    for (auto& r : runs)
      if (wanted.count(r.id)) kept.push_back(std::move(r));
    runs = std::move(kept);
  }
  if (runs.empty()) {
    std::string what = shown.empty() ? std::string("the ledger has no runs") : "no run matches";
    for (std::size_t i = 0; i < shown.size(); ++i) what += (i == 0 ? " " : ", ") + shown[i];
    fail(what + " (" + std::to_string(all.size()) + " runs in ledger " + ledger.dir() + "); no report written");
  }
  std::set<std::string> keys;
  for (const auto& r : runs)
    for (const auto& [k, v] : r.config) keys.insert(k);
  for (const auto& k : a.group_by) {
    if (keys.count(k)) continue;
    std::string hint;
    for (const auto& c : audit::close_keys(k, keys)) hint += (hint.empty() ? "; did you mean '" : "', '") + c;
    fail("--group-by: no selected run's config has the key '" + k + "'" + (hint.empty() ? "" : hint + "'?"));
  }
  report::Options o;
  o.title = a.title;
  o.selection = shown;
  o.group_by = a.group_by;
  report::write_report(ledger, runs, o, a.output);
  std::printf("report: %s (%zu %s)\n", a.output.c_str(), runs.size(), runs.size() == 1 ? "run" : "runs");
}

}  // namespace

void add_report_command(CLI::App& app) {
  auto args = std::make_shared<ReportArgs>();
  auto* cmd = app.add_subcommand(
      "report", "Write one self-contained HTML page of runs: grokking curves, grouped charts, provenance");
  cmd->add_option("RUNS", args->runs, "Only these runs (ids or unique prefixes; default: every selected run)");
  add_selection_options(cmd, args->select);
  cmd->add_option("--group-by", args->group_by,
                  "Config keys for the grouped charts (default: every key the runs vary in but run.seed)")
      ->allow_extra_args(false);
  cmd->add_option("--title", args->title, "Page title");
  cmd->add_option("-o,--output", args->output, "The HTML file to write (default: report.html)");
  cmd->add_option("--ledger", args->ledger, "Ledger directory (default: $GROKLAB_LEDGER, else ./groklab-ledger)");
  cmd->callback([args] { report_command(*args); });
}

}  // namespace groklab::cli

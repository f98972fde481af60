// The text the ledger query commands print (list --runs, show, diff, query,
// export, audit), over groklab/audit.h. cmd_ledger.cpp parses options and
// calls these.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "groklab/audit.h"
#include "groklab/ledger/ledger.h"

namespace groklab::cli {

// The run filters shared by list, query and export.
struct SelectionArgs {
  std::vector<std::string> where;  // KEY=VALUE
  std::string task, architecture, optimizer, status, since, until;
  bool any() const;  // true if any filter was given
  audit::Selection selection() const;  // throws audit::SelectionError for a bad --where
  std::string describe() const;        // the filters as given, for messages
};

// Registers --where, --task, --architecture, --optimizer, --status, --since, --until.
void add_selection_options(CLI::App* cmd, SelectionArgs& args);

// Thrown when a selection keeps no run; what() says so and why.
struct EmptySelection : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The runs of the ledger the filters keep. Throws audit::SelectionError for a
// bad filter and EmptySelection if no run is left.
std::vector<audit::RunInfo> selected_runs(const ledger::Ledger& ledger, const SelectionArgs& args);

// The run (of RUNS) that has the entry with full id ID; nullptr if none.
const audit::RunInfo* run_of(const std::vector<audit::RunInfo>& runs, const std::string& id);

// One line: short id, time, status, task/architecture/optimizer, steps, final metrics.
std::string run_line(const audit::RunInfo& run);

// A run in full: config, seeds, environment, plugins, results, replay history,
// resumes, its sweep and the children of a sweep.
std::string show_run(const ledger::Ledger& ledger, const audit::RunInfo& run,
                     const std::vector<audit::RunInfo>& all);

// Config, environment and result differences of two runs.
std::string diff_runs(const ledger::Ledger& ledger, const audit::RunInfo& a, const audit::RunInfo& b);

// A table with a header row, columns padded to align (numbers right-aligned).
std::string format_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows);

// One CSV field, quoted if needed (RFC 4180).
std::string csv_field(const std::string& s);

// A number for a table (6 significant digits) or for CSV/JSON (shortest round-trip); NaN as "nan".
std::string number_text(double v, bool exact);

// Prints a query's groups as "table", "csv" or "json". AGGS: the aggregates to
// show, from runs, count, mean, std, min, max (frac is added when spec.frac is set).
std::string format_query(const audit::QuerySpec& spec, const std::vector<audit::GroupRow>& rows,
                         const std::vector<std::string>& aggs, const std::string& format);

// Writes tidy rows (entry, config keys…, step, metric, value) as "csv" or "jsonl".
// Returns the number of rows written.
std::size_t write_export(const ledger::Ledger& ledger, const std::vector<audit::RunInfo>& runs,
                         const std::string& format, std::FILE* out);

// The audit's findings, for the terminal.
std::string format_audit(const audit::AuditReport& report, const std::vector<audit::RunInfo>& runs);

}  // namespace groklab::cli

// The groklab subcommands. Each add_*_command registers one top-level
// subcommand (and its callback) on the CLI11 app; main.cpp wires them.
#pragma once

#include <CLI/CLI.hpp>

namespace groklab::cli {

void add_plugins_command(CLI::App& app);
void add_ledger_command(CLI::App& app);
void add_compose_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_data_command(CLI::App& app);  // cmd_data.cpp: generate / check McCoy task data
void add_report_command(CLI::App& app);  // cmd_report.cpp: the HTML report of runs
void add_sweep_command(CLI::App& app);   // cmd_sweep.cpp: local and Slurm sweeps
void add_bench_command(CLI::App& app);   // cmd_bench.cpp: training throughput vs the peers
void add_bench_metrics_command(CLI::App& app);  // bench_metrics.cpp: each metric's cost vs training

// Thrown by a command to exit with a message and status, without a stack of
// logs: main prints "groklab: <what>" and returns code.
struct Exit {
  int code;
};

}  // namespace groklab::cli

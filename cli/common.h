// Pieces the groklab subcommands share: where the ledger is, loading plugins,
// and the progress display of a training run.
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "groklab/host.h"
#include "groklab/ledger/ledger.h"
#include "groklab/runs.h"
#include "groklab/trainer.h"

namespace groklab::cli {

// The ledger directory: the --ledger value if given, else $GROKLAB_LEDGER,
// else ./groklab-ledger.
std::string ledger_dir(const std::string& option);

// A host with every plugin from the default search path loaded; broken
// libraries are logged as warnings.
void load_plugins(PluginHost& host);

// Times a run's steps after the first `warmup` (from the trainer's step
// callbacks, for the benchmarks) and keeps the last checkpoint's bytes.
struct StepClock final : TrainObserver {
  explicit StepClock(int64_t w) : warmup(w) {}
  void on_step(int64_t step, double) override {
    if (step == warmup) start = std::chrono::steady_clock::now();
    end = std::chrono::steady_clock::now();
  }
  void on_eval(int64_t, const std::map<std::string, double>&) override {}
  void on_checkpoint(const Checkpoint& c) override { checkpoint = c.bytes; }
  // Seconds from the end of step `warmup` to the end of the last step.
  double seconds() const { return std::chrono::duration<double>(end - start).count(); }

  int64_t warmup;
  std::chrono::steady_clock::time_point start, end;
  std::string checkpoint;
};

// Shows a run's progress: a redrawn bar on a terminal (step, steps/s, ETA,
// latest train/test accuracy), plain log lines every few seconds otherwise.
// Throws groklab::Interrupted from on_step after SIGINT/SIGTERM.
class Progress final : public TrainObserver {
 public:
  Progress(std::string label, int64_t total_steps);
  ~Progress() override;
  void on_step(int64_t step, double loss) override;
  void on_eval(int64_t step, const std::map<std::string, double>& values) override;
  void on_checkpoint(const Checkpoint& ckpt) override {}
  // Ends the bar's line (call once the run is over).
  void finish();

 private:
  void draw(int64_t step, bool force);
  std::string label_;
  int64_t total_;
  int64_t first_step_ = -1;
  int64_t last_step_ = 0;
  int64_t drawn_step_ = -1;
  double loss_ = 0;
  bool tty_;
  bool finished_ = false;
  std::string metrics_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// Runs a shell command; returns its exit status (-1 if it did not exit) and
// appends its stdout to out.
int capture(const std::string& cmd, std::string& out);

// Prints a finished run's id, steps, parameter hash and final metrics.
void print_outcome(const RunOutcome& o);

// Writes the run's page to LEDGER/reports/ID.html and prints its path; the run
// is recorded either way, so a report that cannot be written is a warning.
void write_report(const ledger::Ledger& ledger, const RunOutcome& o);

// Installs SIGINT/SIGTERM handlers that ask Progress to stop the run. They
// interrupt blocking calls (no SA_RESTART): waitpid() returns EINTR.
void install_interrupt_handlers();

// True once SIGINT or SIGTERM arrived after install_interrupt_handlers().
bool interrupt_requested();

}  // namespace groklab::cli

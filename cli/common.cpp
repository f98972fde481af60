#include "common.h"

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "groklab/log.h"
#include "groklab/report.h"
#include "groklab/runs.h"

namespace groklab::cli {
namespace {
volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_signal(int) { g_interrupted = 1; }

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "--:--";
  auto t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  return buf;
}
}  // namespace

std::string ledger_dir(const std::string& option) {
  if (!option.empty()) return option;
  if (const char* env = std::getenv("GROKLAB_LEDGER"); env != nullptr && *env != '\0') return env;
  return "groklab-ledger";
}

void load_plugins(PluginHost& host) { host.load_default_paths(); }

int capture(const std::string& cmd, std::string& out) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = ::pclose(p);
  return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void print_outcome(const RunOutcome& o) {
  std::printf("run %s finished: %lld steps, params %s\n", o.run_id.c_str(),
              static_cast<long long>(o.steps), o.params_hash.c_str());
  for (const auto& [k, v] : o.final_metrics) std::printf("  %-24s %.6g\n", k.c_str(), v);
}

void write_report(const ledger::Ledger& ledger, const RunOutcome& o) {
  try {
    std::printf("report: %s\n", report::write_run_report(ledger, o.run_id).c_str());
  } catch (const std::exception& e) {
    logger()->warn("could not write the report of run {}: {}", o.run_id, e.what());
  }
}

bool interrupt_requested() { return g_interrupted != 0; }

void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

Progress::Progress(std::string label, int64_t total_steps)
    : label_(std::move(label)), total_(total_steps), tty_(::isatty(STDERR_FILENO) == 1) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

void Progress::on_step(int64_t step, double loss) {
  if (g_interrupted) throw Interrupted();
  // The clock starts when the first step of this process ends, so the rate
  // excludes start-up (plugin loading, data, the model's first allocation).
  if (first_step_ < 0) {
    first_step_ = step;
    start_ = std::chrono::steady_clock::now();
  }
  last_step_ = step;
  loss_ = loss;
  draw(step, false);
}

void Progress::on_eval(int64_t step, const std::map<std::string, double>& values) {
  metrics_.clear();
  for (const char* key : {"train_accuracy", "test_accuracy"}) {
    auto it = values.find(key);
    if (it == values.end()) continue;
    char buf[64];
    std::snprintf(buf, sizeof buf, " %s %.3f", key, it->second);
    metrics_ += buf;
  }
  draw(step, false);
}

void Progress::draw(int64_t step, bool force) {
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  if (!force && since < (tty_ ? 0.1 : 10.0)) return;
  last_draw_ = now;
  drawn_step_ = step;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double rate = step > first_step_ && elapsed > 0
                    ? static_cast<double>(step - first_step_) / elapsed : 0;
  double eta = rate > 0 ? static_cast<double>(total_ - step) / rate : -1;
  char speed[32] = "-- steps/s";
  if (rate > 0) std::snprintf(speed, sizeof speed, "%.1f steps/s", rate);
  char head[160];
  std::snprintf(head, sizeof head, "%s step %lld/%lld %s ETA %s loss %.4g", label_.c_str(),
                static_cast<long long>(step), static_cast<long long>(total_), speed,
                format_duration(eta).c_str(), loss_);
  if (tty_) {
    const int width = 20;
    int filled = total_ > 0 ? static_cast<int>(width * step / total_) : 0;
    std::string bar = "[" + std::string(static_cast<size_t>(filled), '#') +
                      std::string(static_cast<size_t>(width - filled), '.') + "]";
    std::fprintf(stderr, "\r\033[K%s %s%s", bar.c_str(), head, metrics_.c_str());
    std::fflush(stderr);
  } else {
    logger()->info("{}{}", head, metrics_);
  }
}

void Progress::finish() {
  if (finished_ || last_step_ == 0) return;
  finished_ = true;
  if (tty_ || drawn_step_ != last_step_) draw(last_step_, true);
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace groklab::cli

// groklab sweep MANIFEST [overrides…] [-j N] [--force] [--ledger DIR]
// groklab sweep MANIFEST [overrides…] --slurm [--partition P --time T --cpus-per-task C
//                        --gres G --max-parallel N --dry-run]
// groklab sweep status SWEEP     each child's state from the ledger (and squeue)
// groklab sweep child SWEEP I    runs (or resumes) child I of a frozen sweep
//
// Both launchers freeze the children into a "sweep" entry first, then run each
// child as `groklab sweep child SWEEP I` (a local process, or a Slurm array
// task), so a child's config and bits do not depend on where it ran.
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "common.h"
#include "groklab/audit.h"
#include "groklab/log.h"
#include "groklab/manifest.h"
#include "groklab/sweep.h"

extern char** environ;

namespace groklab::cli {
namespace {

namespace fs = std::filesystem;

struct SlurmArgs {
  bool enabled = false;
  std::string partition, time, gres;
  int cpus_per_task = 0;  // 0: the children's largest run.threads
  int max_parallel = 0;   // 0: no limit
  bool dry_run = false;
};

struct SweepArgs {
  std::string manifest;
  std::vector<std::string> overrides;
  std::string ledger;
  int jobs = 1;
  bool force = false;
  SlurmArgs slurm;
  std::string sweep;  // status / child
  int64_t child = -1;
};

std::string self_exe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot find the groklab executable (/proc/self/exe): " + ec.message());
  return p.string();
}

// 'text' for a POSIX shell.
std::string shell_quote(const std::string& text) {
  std::string q = "'";
  for (char c : text) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':'))
    if (!dir.empty() && ::access((fs::path(dir) / program).c_str(), X_OK) == 0) return true;
  return false;
}

std::string format_metric(const std::map<std::string, double>& m, const char* key) {
  auto it = m.find(key);
  if (it == m.end()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", it->second);
  return buf;
}

// One line per child: index, status, run, steps, accuracies, varied keys
// (and the Slurm state of its array task, when slurm_state is given).
void print_children(const sweep::Frozen& frozen, const std::vector<sweep::ChildState>& states,
                    const std::map<int64_t, std::string>* slurm_state) {
  std::printf("%-6s %-12s %-13s %-13s %-9s %-9s %s%s\n", "child", "status", "run", "steps", "train_acc",
              "test_acc", slurm_state != nullptr ? "slurm      " : "", "varied");
  for (std::size_t i = 0; i < states.size(); ++i) {
    const auto& s = states[i];
    std::string steps = s.status == "pending" ? "-" : std::to_string(s.step) + "/" + std::to_string(s.steps);
    std::string slurm;
    if (slurm_state != nullptr) {
      auto it = slurm_state->find(s.index);
      char buf[24];
      std::snprintf(buf, sizeof buf, "%-10s ", it == slurm_state->end() ? "-" : it->second.c_str());
      slurm = buf;
    }
    std::printf("%-6lld %-12s %-13s %-13s %-9s %-9s %s%s\n", static_cast<long long>(s.index), s.status.c_str(),
                s.run_id.empty() ? "-" : s.run_id.substr(0, 12).c_str(), steps.c_str(),
                format_metric(s.final_metrics, "train_accuracy").c_str(),
                format_metric(s.final_metrics, "test_accuracy").c_str(), slurm.c_str(),
                frozen.children[i].varied_text().c_str());
  }
}

// The folder for a sweep's logs and scripts: LEDGER/sweeps/ID12.
fs::path sweep_folder(const ledger::Ledger& ledger, const std::string& id) {
  fs::path dir = fs::absolute(fs::path(ledger.dir()) / "sweeps" / id.substr(0, 12));
  fs::create_directories(dir);
  return dir;
}

// The children to launch: all with --force, else those without a finished
// run of the same config hash anywhere in the ledger.
std::vector<int64_t> to_run(const ledger::Ledger& ledger, const std::vector<SweepChild>& children, bool force) {
  const auto finished = force ? std::map<std::string, std::string>{} : sweep::finished_configs(ledger);
  std::vector<int64_t> todo;
  for (std::size_t i = 0; i < children.size(); ++i) {
    auto it = finished.find(children[i].config.hash());
    if (it == finished.end()) todo.push_back(static_cast<int64_t>(i));
    else
      std::printf("child %zu: skipped, finished before as run %s (--force runs it again)\n", i,
                  it->second.substr(0, 12).c_str());
  }
  return todo;
}

// --- local: N processes at a time -------------------------------------------

struct Running {
  int64_t index;
  std::string log;
  std::chrono::steady_clock::time_point start;
};

pid_t spawn_child(const std::string& exe, const std::string& ledger_dir, const std::string& sweep_id,
                  int64_t index, const std::string& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  const std::string idx = std::to_string(index);
  std::vector<std::string> args = {exe, "sweep", "child", sweep_id, idx, "--ledger", ledger_dir};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start child " + idx + ": " + std::strerror(rc));
  return pid;
}

// The last non-empty line of a file (a failed child's error).
std::string last_line(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return last;
}

void run_local(ledger::Ledger& ledger, const sweep::Frozen& frozen, const std::vector<int64_t>& todo,
               int jobs) {
  const std::string exe = self_exe();
  const std::string dir = fs::absolute(ledger.dir()).string();
  const fs::path logs = sweep_folder(ledger, frozen.id);
  std::printf("sweep %s: %zu children, %zu to run, %d at a time; logs in %s/\n", frozen.id.substr(0, 12).c_str(),
              frozen.children.size(), todo.size(), jobs, logs.c_str());
  std::fflush(stdout);
  install_interrupt_handlers();
  std::map<pid_t, Running> running;
  std::size_t next = 0, done = 0;
  bool forwarded = false;
  while (next < todo.size() || !running.empty()) {
    while (!interrupt_requested() && running.size() < static_cast<std::size_t>(jobs) && next < todo.size()) {
      const int64_t i = todo[next++];
      const std::string log = (logs / ("child-" + std::to_string(i) + ".log")).string();
      pid_t pid = spawn_child(exe, dir, frozen.id, i, log);
      running[pid] = {i, log, std::chrono::steady_clock::now()};
      std::printf("child %lld started (%s)\n", static_cast<long long>(i),
                  frozen.children[static_cast<std::size_t>(i)].varied_text().c_str());
      std::fflush(stdout);
    }
    if (running.empty()) break;
    int st = 0;
    pid_t pid = ::waitpid(-1, &st, 0);
    if (pid < 0) {
      if (errno != EINTR) throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
      if (interrupt_requested() && !forwarded) {  // stop: each child records "interrupted"
        for (const auto& [p, r] : running) ::kill(p, SIGTERM);
        forwarded = true;
        std::printf("interrupted: stopping %zu running children; no more start\n", running.size());
      }
      continue;
    }
    auto it = running.find(pid);
    if (it == running.end()) continue;
    const Running r = it->second;
    running.erase(it);
    ++done;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - r.start).count();
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
      std::printf("child %lld finished in %.1f s [%zu/%zu]\n", static_cast<long long>(r.index), secs, done,
                  todo.size());
    else
      std::printf("child %lld failed (%s %d) after %.1f s [%zu/%zu]: %s (log: %s)\n",
                  static_cast<long long>(r.index), WIFEXITED(st) ? "exit" : "signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), secs, done, todo.size(),
                  last_line(r.log).c_str(), r.log.c_str());
    std::fflush(stdout);
  }
}

// --- Slurm: one job array ----------------------------------------------------

std::string slurm_script(const SlurmArgs& s, const std::string& exe, const std::string& ledger_dir,
                         const std::string& sweep_id, const std::string& folder, const std::vector<int64_t>& todo,
                         int cpus) {
  std::string array;
  for (int64_t i : todo) array += (array.empty() ? "" : ",") + std::to_string(i);
  if (s.max_parallel > 0) array += "%" + std::to_string(s.max_parallel);
  std::ostringstream o;
  o << "#!/bin/bash\n"
    << "# groklab sweep " << sweep_id << ": one array task per child; each runs (or, when\n"
    << "# requeued or preempted, resumes) its child's frozen config into the ledger.\n"
    << "#SBATCH --job-name=groklab-" << sweep_id.substr(0, 8) << "\n"
    << "#SBATCH --array=" << array << "\n"
    << "#SBATCH --cpus-per-task=" << cpus << "\n"
    << "#SBATCH --output=" << folder << "/slurm-%A_%a.log\n"
    << "#SBATCH --open-mode=append\n"
    << "#SBATCH --requeue\n";
  if (!s.partition.empty()) o << "#SBATCH --partition=" << s.partition << "\n";
  if (!s.time.empty()) o << "#SBATCH --time=" << s.time << "\n";
  if (!s.gres.empty()) o << "#SBATCH --gres=" << s.gres << "\n";
  if (const char* pp = std::getenv("GROKLAB_PLUGIN_PATH"); pp != nullptr && *pp != '\0')
    o << "export GROKLAB_PLUGIN_PATH=" << shell_quote(pp) << "\n";
  o << "exec " << shell_quote(exe) << " sweep child " << sweep_id << " \"$SLURM_ARRAY_TASK_ID\" --ledger "
    << shell_quote(ledger_dir) << "\n";
  return o.str();
}

// --cpus-per-task, else the children's largest run.threads.
int cpus_per_task(const std::vector<SweepChild>& children, const SlurmArgs& s) {
  int cpus = s.cpus_per_task;
  if (cpus <= 0)
    for (const auto& c : children) cpus = std::max(cpus, static_cast<int>(c.config.run.threads));
  return std::max(cpus, 1);
}

void print_dry_run(const std::string& ledger_dir, const std::vector<SweepChild>& children,
                   const std::vector<int64_t>& todo, const SlurmArgs& s) {
  const std::string dir = fs::absolute(ledger_dir).string();
  std::printf("# dry run: nothing frozen or submitted; SWEEP is the id the sweep entry will get\n%s",
              slurm_script(s, self_exe(), dir, "SWEEP", dir + "/sweeps/SWEEP", todo, cpus_per_task(children, s))
                  .c_str());
}

void run_slurm(ledger::Ledger& ledger, const std::vector<SweepChild>& children, const Provenance& prov,
               const std::vector<int64_t>& todo, const SlurmArgs& s) {
  if (s.dry_run) {
    print_dry_run(ledger.dir(), children, todo, s);
    return;
  }
  const int cpus = cpus_per_task(children, s);
  const std::string exe = self_exe();
  const std::string dir = fs::absolute(ledger.dir()).string();
  if (!on_path("sbatch"))
    throw std::runtime_error("--slurm: sbatch is not on PATH (install a Slurm client, e.g. Debian's slurm-client, "
                             "or run the sweep locally with -j N)");
  const sweep::Frozen frozen = sweep::freeze(ledger, children, prov, "slurm");
  const fs::path folder = sweep_folder(ledger, frozen.id);
  const std::string script = slurm_script(s, exe, dir, frozen.id, folder.string(), todo, cpus);
  const fs::path path = folder / "sweep.sbatch";
  {
    std::ofstream out(path);
    out << script;
    if (!out.flush()) throw std::runtime_error("cannot write " + path.string());
  }
  std::string out;
  const int rc = capture("sbatch --parsable " + shell_quote(path.string()) + " 2>&1", out);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  if (rc != 0)
    throw std::runtime_error("sbatch failed (exit " + std::to_string(rc) + "): " + out +
                             "\n(sweep " + frozen.id.substr(0, 12) + " is frozen; its script is " + path.string() + ")");
  const std::string job = out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
  const std::string job_id = job.substr(0, job.find(';'));
  ledger.append({{"kind", "sweep_submission"},
                 {"time", ledger::utc_timestamp()},
                 {"sweep", frozen.id},
                 {"scheduler", "slurm"},
                 {"job_id", job_id},
                 {"array_tasks", todo},
                 {"objects", {{"script", ledger.objects().put(script)}}}});
  std::printf("sweep %s: submitted Slurm job array %s (%zu tasks); script %s\n"
              "follow it with: groklab sweep status %s --ledger %s\n",
              frozen.id.substr(0, 12).c_str(), job_id.c_str(), todo.size(), path.c_str(),
              frozen.id.substr(0, 12).c_str(), shell_quote(dir).c_str());
}

// Array task index -> Slurm state (PENDING, RUNNING, …) for the sweep's latest
// submission, from squeue; empty when there is none or squeue is missing.
std::map<int64_t, std::string> slurm_states(const ledger::Ledger& ledger, const std::string& sweep_id,
                                            std::string& job_id) {
  std::map<int64_t, std::string> states;
  ledger.for_each_entry([&](const ledger::Entry& e) {
    if (e.json.value("kind", std::string()) == "sweep_submission" && e.json.value("sweep", std::string()) == sweep_id)
      job_id = e.json.value("job_id", std::string());
    return true;
  });
  if (job_id.empty() || !on_path("squeue")) return states;
  std::string out;
  if (capture("squeue -h -r -j " + shell_quote(job_id) + " -o '%K %T' 2>/dev/null", out) != 0) return states;
  std::istringstream lines(out);
  std::string task, state;
  while (lines >> task >> state) {
    try {
      states[std::stoll(task)] = state;
    } catch (const std::exception&) {  // not an array task line
    }
  }
  return states;
}

// --- commands -----------------------------------------------------------------

void launch(const SweepArgs& a) {
  if (a.manifest.empty()) throw std::runtime_error("sweep: give a MANIFEST (or: sweep status SWEEP)");
  if (a.jobs < 1) throw std::runtime_error("sweep: -j must be at least 1");
  PluginHost host;
  load_plugins(host);
  Composer composer(host.registry());
  const std::vector<SweepChild> children = composer.expand(a.manifest, a.overrides);
  Provenance prov;
  prov.manifest = a.manifest;
  prov.overrides = a.overrides;
  const std::string dir = ledger_dir(a.ledger);
  if (a.slurm.dry_run && !fs::exists(fs::path(dir) / "entries.jsonl")) {  // touch nothing
    std::vector<int64_t> all(children.size());
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
    print_dry_run(dir, children, all, a.slurm);
    return;
  }
  auto ledger = ledger::Ledger::create(dir);
  const std::vector<int64_t> todo = to_run(ledger, children, a.force);
  if (todo.empty()) {
    std::printf("nothing to run: all %zu children finished before (--force runs them again)\n", children.size());
    return;
  }
  if (a.slurm.enabled) {
    run_slurm(ledger, children, prov, todo, a.slurm);
    return;
  }
  int64_t threads = 0;
  for (int64_t i : todo) threads = std::max(threads, children[static_cast<std::size_t>(i)].config.run.threads);
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores > 0 && static_cast<int64_t>(a.jobs) * threads > static_cast<int64_t>(cores))
    logger()->warn("-j {} children × run.threads {} exceeds the {} cores: they will slow each other down", a.jobs,
                   threads, cores);
  const sweep::Frozen frozen = sweep::freeze(ledger, children, prov, "local");
  run_local(ledger, frozen, todo, a.jobs);
  const auto states = sweep::status(ledger, frozen);
  std::printf("\nsweep %s summary:\n", frozen.id.substr(0, 12).c_str());
  print_children(frozen, states, nullptr);
  std::size_t bad = 0;
  for (const auto& s : states) bad += s.status != "finished" && s.status != "done before";
  if (bad > 0) {
    std::printf("%zu of %zu children did not finish; re-run the same command to run them again\n", bad,
                states.size());
    throw Exit{1};
  }
}

void show_status(const SweepArgs& a) {
  auto ledger = ledger::Ledger::open(ledger_dir(a.ledger));
  const sweep::Frozen frozen = sweep::load(ledger, a.sweep);
  const auto states = sweep::status(ledger, frozen);
  std::string job_id;
  const auto slurm = slurm_states(ledger, frozen.id, job_id);
  std::printf("sweep %s (%s, %zu children, manifest %s)%s\n", frozen.id.c_str(), frozen.launcher.c_str(),
              frozen.children.size(), frozen.manifest.c_str(),
              job_id.empty() ? "" : (", Slurm job " + job_id).c_str());
  print_children(frozen, states, job_id.empty() ? nullptr : &slurm);
}

void run_one_child(const SweepArgs& a) {
  PluginHost host;
  load_plugins(host);
  Composer composer(host.registry());
  auto ledger = ledger::Ledger::open(ledger_dir(a.ledger));
  install_interrupt_handlers();
  int64_t steps = 0;  // for the progress display
  for (const auto& c : sweep::load(ledger, a.sweep).children)
    if (c.index == a.child) {
      const auto config = audit::flatten_config(ledger.objects().get(c.config_object));
      if (auto it = config.find("run.steps"); it != config.end() && it->second.is_number_integer())
        steps = it->second.get<int64_t>();
    }
  Progress progress("child " + std::to_string(a.child), steps);
  RunOutcome o = sweep::run_child(ledger, host, composer, a.sweep, a.child, &progress);
  progress.finish();
  print_outcome(o);
  write_report(ledger, o);
}

}  // namespace

void add_sweep_command(CLI::App& app) {
  auto args = std::make_shared<SweepArgs>();
  const char* ledger_help = "Ledger directory (default: $GROKLAB_LEDGER, else ./groklab-ledger)";
  auto* cmd = app.add_subcommand("sweep", "Run every child of a manifest's sweep: local processes (-j N) or a Slurm job array");
  cmd->require_subcommand(0, 1);
  cmd->add_option("MANIFEST", args->manifest, "Experiment manifest (TOML) with a [sweep] or key=a,b overrides");
  cmd->add_option("OVERRIDES", args->overrides, "key=value overrides; key=a,b,c sweeps over the values");
  cmd->add_option("--ledger", args->ledger, ledger_help);
  cmd->add_option("-j,--jobs", args->jobs, "Children run at once, each a process with its own run.threads")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--force", args->force, "Also run children whose config already finished in the ledger");
  auto* slurm = cmd->add_flag("--slurm", args->slurm.enabled, "Submit one Slurm job array (a task per child)");
  cmd->add_option("--partition", args->slurm.partition, "Slurm partition")->needs(slurm);
  cmd->add_option("--time", args->slurm.time, "Slurm time limit per task, e.g. 02:00:00")->needs(slurm);
  cmd->add_option("--cpus-per-task", args->slurm.cpus_per_task,
                  "CPUs per array task (default: the children's largest run.threads)")
      ->check(CLI::PositiveNumber)->needs(slurm);
  cmd->add_option("--gres", args->slurm.gres, "Generic resources per task, e.g. gpu:1")->needs(slurm);
  cmd->add_option("--max-parallel", args->slurm.max_parallel, "Array tasks running at once (the %N of --array)")
      ->check(CLI::PositiveNumber)->needs(slurm);
  cmd->add_flag("--dry-run", args->slurm.dry_run, "Print the sbatch script; freeze and submit nothing")->needs(slurm);
  cmd->callback([cmd, args] {
    if (cmd->get_subcommands().empty()) launch(*args);
  });

  auto* status = cmd->add_subcommand("status", "Each child's state from the ledger (and squeue for a Slurm sweep)");
  status->add_option("SWEEP", args->sweep, "Sweep entry (id or unique prefix)")->required();
  status->add_option("--ledger", args->ledger, ledger_help);
  status->callback([args] { show_status(*args); });

  auto* child = cmd->add_subcommand("child", "Run (or resume) one child of a frozen sweep; what each array task runs");
  child->add_option("SWEEP", args->sweep, "Sweep entry (id or unique prefix)")->required();
  child->add_option("INDEX", args->child, "Child index (0-based, as `groklab compose --sweep` lists them)")
      ->required()->check(CLI::NonNegativeNumber);
  child->add_option("--ledger", args->ledger, ledger_help);
  child->callback([args] { run_one_child(*args); });
}

}  // namespace groklab::cli

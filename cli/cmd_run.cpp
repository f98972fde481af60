// groklab run MANIFEST [overrides…] [--ledger DIR] | groklab run --resume ENTRY
// groklab replay ENTRY [--spot-check K] [--seed S] [overrides…]
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "common.h"
#include "groklab/log.h"
#include "groklab/manifest.h"
#include "groklab/runs.h"

namespace groklab::cli {
namespace {

// One line per member of a finished ensemble, and where to see them together.
void print_ensemble(const EnsembleOutcome& o) {
  std::printf("ensemble %s %s: %zu members\n", o.ensemble_id.c_str(), o.status.c_str(), o.members.size());
  std::printf("  %-6s %-12s %8s %-12s %12s %12s\n", "member", "run", "steps", "params", "train_acc", "test_acc");
  std::string ids;
  for (size_t s = 0; s < o.members.size(); ++s) {
    const RunOutcome& m = o.members[s];
    auto metric = [&](const char* k) {
      auto it = m.final_metrics.find(k);
      return it == m.final_metrics.end() ? std::string("-") : std::to_string(it->second);
    };
    std::printf("  %-6zu %-12s %8lld %-12s %12s %12s\n", s, m.run_id.substr(0, 12).c_str(),
                static_cast<long long>(m.steps), m.params_hash.substr(0, 12).c_str(), metric("train_accuracy").c_str(),
                metric("test_accuracy").c_str());
    ids += " " + m.run_id.substr(0, 12);
  }
  std::printf("report: groklab report%s -o ensemble.html\n", ids.c_str());
}

struct RunArgs {
  std::string manifest;
  std::vector<std::string> overrides;
  std::string ledger;
  std::string resume;
};

void run_command(const RunArgs& a) {
  PluginHost host;
  load_plugins(host);
  Composer composer(host.registry());
  install_interrupt_handlers();
  if (!a.resume.empty()) {
    auto ledger = ledger::Ledger::open(ledger_dir(a.ledger));
    if (!a.manifest.empty() || !a.overrides.empty())
      throw std::runtime_error("--resume takes no manifest or overrides: the run's recorded config is used");
    if (const std::string ens = ensemble_of(ledger, a.resume); !ens.empty()) {
      Progress progress("resume " + ens.substr(0, 8), 0);
      logger()->info("resuming ensemble {}", ens);
      EnsembleOutcome o = resume_ensemble_recorded(ens, host, composer, ledger, &progress);
      progress.finish();
      print_ensemble(o);
      return;
    }
    RunRecord rec = load_run(ledger, a.resume);
    Progress progress("resume " + rec.start.id.substr(0, 8), 0);
    logger()->info("resuming run {} ({})", rec.start.id, rec.status());
    RunOutcome o = resume_recorded(a.resume, host, composer, ledger, &progress);
    progress.finish();
    print_outcome(o);
    write_report(ledger, o);
    return;
  }
  if (a.manifest.empty()) throw std::runtime_error("run: give a MANIFEST (or --resume ENTRY)");
  ResolvedConfig config = composer.compose(a.manifest, a.overrides);
  auto ledger = ledger::Ledger::create(ledger_dir(a.ledger));
  Provenance prov;
  prov.manifest = a.manifest;
  prov.overrides = a.overrides;
  Progress progress("run", config.run.steps);
  logger()->info("config {} → ledger {}", config.hash(), ledger.dir());
  if (config.run.ensemble > 1) {
    logger()->info("ensemble of {} seeds ({} … {}) in one batched model", config.run.ensemble, config.run.seed,
                   config.run.seed + static_cast<uint64_t>(config.run.ensemble) - 1);
    EnsembleOutcome o = run_ensemble_recorded(config, host, ledger, prov, &progress);
    progress.finish();
    print_ensemble(o);
    return;
  }
  RunOutcome o = run_recorded(config, host, ledger, prov, &progress);
  progress.finish();
  print_outcome(o);
  write_report(ledger, o);
}

struct ReplayArgs {
  std::string entry;
  std::vector<std::string> overrides;
  std::string ledger;
  int64_t spot_check = 0;
  int64_t seed = -1;
};

void replay_command(const ReplayArgs& a) {
  PluginHost host;
  load_plugins(host);
  Composer composer(host.registry());
  auto ledger = ledger::Ledger::open(ledger_dir(a.ledger));
  install_interrupt_handlers();
  std::optional<uint64_t> seed;
  if (a.seed >= 0) seed = static_cast<uint64_t>(a.seed);
  Progress progress(a.spot_check > 0 ? "spot-check" : "replay", 0);
  ReplayReport r = replay_recorded(a.entry, host, composer, ledger, a.spot_check, seed, a.overrides, &progress);
  progress.finish();
  std::printf("%s\n", r.summary().c_str());
  if (!r.identical) throw Exit{3};
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  auto* cmd = app.add_subcommand("run", "Train a manifest's experiment and record it in the ledger");
  cmd->add_option("MANIFEST", args->manifest, "Experiment manifest (TOML)");
  cmd->add_option("OVERRIDES", args->overrides, "key=value overrides, e.g. architecture.depth=4");
  cmd->add_option("--ledger", args->ledger, "Ledger directory (default: $GROKLAB_LEDGER, else ./groklab-ledger)");
  cmd->add_option("--resume", args->resume, "Continue a killed or interrupted run from its last checkpoint");
  cmd->callback([args] { run_command(*args); });

  auto rargs = std::make_shared<ReplayArgs>();
  auto* rep = app.add_subcommand("replay", "Re-run a recorded run and check it bit-for-bit");
  rep->add_option("ENTRY", rargs->entry,
                  "Run id (or any entry of the run; a unique prefix); an ensemble's entry or member replays the ensemble")
      ->required();
  rep->add_option("OVERRIDES", rargs->overrides, "Overrides to perturb the replay (it then should diverge)");
  rep->add_option("--spot-check", rargs->spot_check, "Re-train only K recorded checkpoint intervals")
      ->check(CLI::NonNegativeNumber);
  rep->add_option("--seed", rargs->seed, "Seed for choosing spot-check intervals (default: from the run id)");
  rep->add_option("--ledger", rargs->ledger, "Ledger directory (default: $GROKLAB_LEDGER, else ./groklab-ledger)");
  rep->callback([rargs] { replay_command(*rargs); });
}

}  // namespace groklab::cli

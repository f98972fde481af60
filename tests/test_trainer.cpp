// The deterministic trainer, checkpoints, and runs recorded in the ledger:
// determinism, resume, replay, perturbed replay, spot-check, torch.load.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>

#include "groklab/host.h"
#include "groklab/ledger/ledger.h"
#include "groklab/manifest.h"
#include "groklab/runs.h"
#include "groklab/trainer.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace groklab;
using test::test_host;
using test::TempDir;

namespace {

const std::string kTiny = std::string(GROKLAB_SOURCE_DIR) + "/tests/data/tiny_copy.toml";

ResolvedConfig tiny(const std::vector<std::string>& overrides = {}) {
  Composer composer(test_host().registry());
  return composer.compose(kTiny, overrides);
}

// Collects everything a run reports.
struct Collect : TrainObserver {
  std::vector<std::pair<int64_t, std::map<std::string, double>>> evals;
  std::vector<Checkpoint> checkpoints;
  int64_t stop_after_checkpoints = -1;
  void on_eval(int64_t step, const std::map<std::string, double>& v) override { evals.emplace_back(step, v); }
  void on_checkpoint(const Checkpoint& c) override {
    checkpoints.push_back(c);
    if (stop_after_checkpoints >= 0 && static_cast<int64_t>(checkpoints.size()) >= stop_after_checkpoints)
      throw Interrupted();
  }
  std::vector<std::string> hashes() const {
    std::vector<std::string> h;
    for (const auto& c : checkpoints) h.push_back(std::to_string(c.step) + ":" + c.params_hash);
    return h;
  }
};

}  // namespace

TEST_CASE("seed streams are independent and pinned", "[trainer]") {
  Seeds a = derive_seeds(0);
  std::set<uint64_t> distinct = {a.init, a.split, a.order, a.dropout, a.metric};
  CHECK(distinct.size() == 5);
  CHECK(derive_seeds(1).init != a.init);
  // Pinned: changing the derivation would silently change every recorded run.
  CHECK(a.init == derive_seeds(0).init);
  Seeds shared = derive_seeds(7, "shared");
  CHECK(shared.init == 7);
  CHECK(shared.split == 7);
  CHECK_THROWS_WITH(derive_seeds(0, "bogus"), Catch::Contains("unknown seed policy 'bogus'"));
}

TEST_CASE("two identical runs give identical bits at every checkpoint and metric", "[trainer][determinism]") {
  Collect a, b;
  Trainer(tiny(), test_host().registry()).run(a);
  Trainer(tiny(), test_host().registry()).run(b);
  REQUIRE(a.checkpoints.size() == 4);  // steps 10, 20, 30, 40
  CHECK(a.hashes() == b.hashes());
  REQUIRE(a.evals.size() == 8);
  CHECK(a.evals == b.evals);
  // Training did something: the loss went down and the parameters changed.
  CHECK(a.evals.back().second.at("train_loss") < a.evals.front().second.at("train_loss"));
  CHECK(a.checkpoints[0].params_hash != a.checkpoints[3].params_hash);

  Collect c;
  Trainer(tiny({"run.seed=1"}), test_host().registry()).run(c);
  CHECK(c.checkpoints[0].params_hash != a.checkpoints[0].params_hash);
}

TEST_CASE("restoring a checkpoint continues bit-identically", "[trainer][resume]") {
  Collect full;
  Trainer(tiny(), test_host().registry()).run(full);
  for (size_t k = 0; k + 1 < full.checkpoints.size(); ++k) {
    Collect rest;
    TrainPlan plan;
    plan.resume_from = full.checkpoints[k].bytes;
    Trainer(tiny(), test_host().registry()).run(rest, plan);
    REQUIRE_FALSE(rest.checkpoints.empty());
    CHECK(rest.checkpoints.back().params_hash == full.checkpoints.back().params_hash);
    CHECK(rest.evals.back() == full.evals.back());
    CHECK(Trainer::checkpoint_step(full.checkpoints[k].bytes) == full.checkpoints[k].step);
  }
}

TEST_CASE("runs are recorded; an interrupted run resumes to the same bits", "[trainer][ledger][resume]") {
  TempDir dir("trainer");
  auto ledger = ledger::Ledger::create(dir.path.string());
  Composer composer(test_host().registry());
  RunOutcome whole = run_recorded(tiny(), test_host(), ledger, {});
  CHECK(whole.status == "finished");
  CHECK(whole.steps == 40);

  Collect stopper;
  stopper.stop_after_checkpoints = 2;
  CHECK_THROWS_AS(run_recorded(tiny(), test_host(), ledger, {}, &stopper), Interrupted);
  auto entries = ledger.entries();
  std::string interrupted = entries.back().json.at("run");
  CHECK(entries.back().json.at("status") == "interrupted");
  CHECK(load_run(ledger, interrupted).checkpoints.size() == 2);

  RunOutcome resumed = resume_recorded(interrupted.substr(0, 8), test_host(), composer, ledger);
  CHECK(resumed.params_hash == whole.params_hash);
  CHECK(resumed.final_metrics == whole.final_metrics);
  RunRecord rec = load_run(ledger, interrupted);
  CHECK(rec.status() == "finished");
  CHECK(rec.resumes.size() == 1);
  CHECK(rec.result->json.at("checkpoints") == load_run(ledger, whole.run_id).result->json.at("checkpoints"));
  CHECK_THROWS_WITH(resume_recorded(interrupted, test_host(), composer, ledger),
                    Catch::Contains("already finished"));
  CHECK(ledger.verify().ok);
}

TEST_CASE("replay is bit-identical; a perturbed replay names the first divergence", "[trainer][replay]") {
  TempDir dir("trainer");
  auto ledger = ledger::Ledger::create(dir.path.string());
  Composer composer(test_host().registry());
  RunOutcome run = run_recorded(tiny(), test_host(), ledger, {});

  ReplayReport same = replay_recorded(run.run_id, test_host(), composer, ledger);
  INFO(same.summary());
  CHECK(same.identical);
  CHECK(same.checkpoints_compared == 4);
  CHECK(same.metrics_compared == 8);
  CHECK_THAT(same.summary(), Catch::Contains("bit-identical"));

  ReplayReport perturbed = replay_recorded(run.run_id, test_host(), composer, ledger, 0, std::nullopt,
                                           {"optimizer.lr=0.4"});
  INFO(perturbed.summary());
  CHECK_FALSE(perturbed.identical);
  CHECK_THAT(perturbed.divergence, Catch::Contains("first divergent checkpoint: step 10"));
  CHECK_THAT(perturbed.divergence, Catch::Contains("first differing tensor: emb.weight"));
  CHECK_THAT(perturbed.divergence, Catch::Contains("first differing metric: step 5, metric train_loss"));

  ReplayReport threads = replay_recorded(run.run_id, test_host(), composer, ledger, 0, std::nullopt,
                                         {"run.threads=2"});
  CHECK_THAT(threads.summary(), Catch::Contains("threads: 1 → 2"));

  ReplayReport spot = replay_recorded(run.run_id, test_host(), composer, ledger, 2);
  INFO(spot.summary());
  CHECK(spot.identical);
  CHECK(spot.mode == "spot-check");
  CHECK(spot.intervals.size() == 2);
  CHECK(spot.checkpoints_compared == 2);
  // The choice of intervals is a function of the run id, or of --seed.
  CHECK(replay_recorded(run.run_id, test_host(), composer, ledger, 2).intervals == spot.intervals);

  RunRecord rec = load_run(ledger, run.run_id);
  CHECK(rec.replays.size() == 5);
  CHECK(rec.replays[0].json.at("outcome") == "bit-identical");
  CHECK(rec.replays[1].json.at("outcome") == "diverged");
  CHECK(ledger.verify().ok);
}

TEST_CASE("checkpoints load in Python with torch.load, with state_dict names", "[trainer][python]") {
  Collect c;
  Trainer(tiny(), test_host().registry()).run(c);
  TempDir dir("trainer");
  fs::create_directories(dir.path);
  const fs::path file = dir.path / "ckpt.pt";
  std::ofstream(file, std::ios::binary) << c.checkpoints.back().bytes;

  // The same tensor, read back by C++ from the checkpoint's own pickle.
  auto ivalue = torch::pickle_load(std::vector<char>(c.checkpoints.back().bytes.begin(), c.checkpoints.back().bytes.end()));
  auto bias = ivalue.toGenericDict().at("model").toGenericDict().at("out.bias").toTensor().contiguous();
  std::ostringstream want;
  for (int64_t i = 0; i < bias.numel(); ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%a ", static_cast<double>(bias.data_ptr<float>()[i]));
    want << buf;
  }

  const std::string cmd = "/usr/bin/python3 -c \"import torch, sys; d = torch.load(sys.argv[1]); "
                          "print(d['step'], sorted(d['model'])); "
                          "print(' '.join(float(x).hex() for x in d['model']['out.bias'].tolist()))\" " +
                          file.string();
  const test::CommandResult r = test::run_shell(cmd);
  const std::string& out = r.out;
  INFO(out);
  REQUIRE(r.status == 0);  // python3-torch is installed by scripts/setup.sh
  CHECK_THAT(out, Catch::StartsWith("40 ['emb.weight', 'out.bias', 'out.weight']"));
  // Python's float.hex and C's %a spell the same value the same way for these floats.
  std::string py_line = out.substr(out.find('\n') + 1);
  std::istringstream py(py_line), cc(want.str());
  std::string x, y;
  int compared = 0;
  while (py >> x && cc >> y) {
    CHECK(std::stod(x) == std::stod(y));
    ++compared;
  }
  CHECK(compared == 8);
}

TEST_CASE("a replay with a different plugin binary says so up front and still compares", "[trainer][replay]") {
  TempDir dir("trainer");
  auto ledger = ledger::Ledger::create((dir.path / "ledger").string());
  Composer composer(test_host().registry());
  RunOutcome run = run_recorded(tiny(), test_host(), ledger, {});

  // The same plugin code in a different file: one byte appended after the ELF
  // image changes the library's hash but not what it computes.
  const fs::path other = dir.path / "plugins";
  fs::create_directories(other);
  fs::copy_file(std::string(GROKLAB_TEST_PLUGIN_DIR) + "/good/libtest_components.so", other / "libtest_components.so");
  std::ofstream(other / "libtest_components.so", std::ios::app | std::ios::binary) << '\n';
  PluginHost rebuilt;
  REQUIRE(rebuilt.load_directory(other.string()) == 1);
  Composer composer2(rebuilt.registry());

  ReplayReport r = replay_recorded(run.run_id, rebuilt, composer2, ledger);
  INFO(r.summary());
  CHECK(r.identical);
  REQUIRE(r.binary_diff.size() == 1);
  CHECK_THAT(r.binary_diff[0], Catch::StartsWith("plugins.test_components.hash:"));
  CHECK_THAT(r.summary(), Catch::StartsWith("note: binaries differ from the recorded run"));
}

// The preset manifests: every manifest under manifests/ composes (sweeps
// expanded), each grokking preset trains a few steps with tiny overrides into
// a temporary ledger, and the grokking interventions (readout centring,
// Grokfast, the fixed-norm constraint, float32/float64 loss) resume bit-exactly.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "groklab/host.h"
#include "groklab/ledger/ledger.h"
#include "groklab/manifest.h"
#include "groklab/runs.h"
#include "groklab/trainer.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace groklab;
using test::TempDir;

namespace {

const fs::path kManifests = fs::path(GROKLAB_SOURCE_DIR) / "manifests";
const std::string kDefault = (kManifests / "grokking" / "modadd_mlp_pre.toml").string();

// The host with every built-in plugin loaded (once per test process).
const PluginHost& builtin_host() {
  static PluginHost* host = [] {
    auto* h = new PluginHost;  // never destroyed: plugins are never unloaded
    h->load_directory(GROKLAB_BUILTIN_PLUGIN_DIR);
    return h;
  }();
  return *host;
}

// Every *.toml under dir, sorted.
std::vector<fs::path> manifests_under(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".toml") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// Records step losses; throws Interrupted after stop_after checkpoints (if >= 0).
struct Watch : TrainObserver {
  std::vector<double> losses;
  int64_t checkpoints = 0, stop_after = -1;
  void on_eval(int64_t, const std::map<std::string, double>&) override {}
  void on_checkpoint(const Checkpoint&) override {
    if (stop_after >= 0 && ++checkpoints >= stop_after) throw Interrupted();
  }
  void on_step(int64_t, double loss) override { losses.push_back(loss); }
};

// A model small enough to train in milliseconds, on a small modulus.
const std::vector<std::string> kTinyOverrides{
    "task.p=11",          "architecture.d_model=16", "architecture.heads=4", "architecture.d_ff=32",
    "run.steps=4",        "run.eval_every=2",        "run.checkpoint_every=2"};

}  // namespace

TEST_CASE("every manifest under manifests/ composes, sweeps expanded", "[presets]") {
  Composer composer(builtin_host().registry());
  const auto files = manifests_under(kManifests);
  std::set<std::string> names;
  for (const auto& f : files) names.insert(fs::relative(f, kManifests).string());
  for (const char* preset : {"grokking/modadd_mlp_pre.toml", "grokking/ln_placement_sweep.toml",
                             "grokking/nanda.toml", "grokking/power.toml",
                             "grokking/readout_scale_sweep.toml"})
    CHECK(names.count(preset) == 1);
  for (const auto& f : files) {
    INFO(f.string());
    std::vector<SweepChild> children;
    try {
      children = composer.expand(f.string());
    } catch (const ManifestErrors& e) {
      FAIL(e.what());
    }
    CHECK_FALSE(children.empty());
    std::set<std::string> hashes;
    for (const auto& c : children) hashes.insert(c.config.hash());
    CHECK(hashes.size() == children.size());  // every child is a different experiment
    std::ifstream in(f);
    std::string first;
    std::getline(in, first);
    CHECK(first.rfind("# ", 0) == 0);  // a header comment: the paper and the expected result
  }

  auto ln = composer.expand((kManifests / "grokking" / "ln_placement_sweep.toml").string());
  REQUIRE(ln.size() == 20);
  std::set<std::string> placements;
  for (const auto& c : ln) {
    placements.insert(c.config.architecture.params.get_string("layer_norm"));
    CHECK(c.config.run.steps == 10000);
    CHECK(c.config.optimizer.params.get_float("weight_decay") == 1.0);
  }
  CHECK(placements == std::set<std::string>{"off", "attn-pre", "pre", "mlp-pre"});
  auto alpha = composer.expand((kManifests / "grokking" / "readout_scale_sweep.toml").string());
  REQUIRE(alpha.size() == 5);
  CHECK(alpha.front().config.architecture.params.get_float("readout_scale") == 0.5);
  CHECK(alpha.back().config.architecture.params.get_float("readout_scale") == 1.5);

  auto nanda = composer.compose((kManifests / "grokking" / "nanda.toml").string());
  CHECK(nanda.architecture.params.get_string("layer_norm") == "off");
  CHECK(nanda.architecture.params.get_bool("causal"));
  CHECK(nanda.architecture.params.get_string("init") == "nanda");
  CHECK(nanda.optimizer.params.get_int("warmup_steps") == 10);
  auto power = composer.compose((kManifests / "grokking" / "power.toml").string());
  CHECK(power.task.params.get_int("p") == 97);
  CHECK(power.task.params.get_string("format") == "power");
  CHECK(power.architecture.params.get_int("depth") == 2);
  CHECK(power.run.batch_size == 512);
}

TEST_CASE("every grokking preset trains a few steps into a ledger", "[presets]") {
  Composer composer(builtin_host().registry());
  TempDir dir("presets");
  auto ledger = ledger::Ledger::create(dir.path.string());
  size_t runs = 0;
  for (const auto& f : manifests_under(kManifests / "grokking")) {
    for (const auto& child : composer.expand(f.string(), kTinyOverrides)) {
      INFO(f.filename().string() << ", child " << child.config.hash());
      RunOutcome out = run_recorded(child.config, builtin_host(), ledger, {f.string(), kTinyOverrides, ""});
      CHECK(out.status == "finished");
      CHECK(out.steps == 4);
      REQUIRE(out.final_metrics.count("test_accuracy"));
      CHECK(out.final_metrics.at("test_accuracy") >= 0.0);
      ++runs;
    }
  }
  CHECK(runs >= 1 + 20 + 1 + 1 + 5);
  CHECK(ledger.verify().ok);
}

TEST_CASE("interventions resume bit-exactly: centring, Grokfast, fixed norm", "[presets][resume]") {
  Composer composer(builtin_host().registry());
  struct Case {
    std::vector<std::string> interventions;  // the options under test
    std::vector<std::string> setting;        // shared with the run without them
  };
  const std::vector<Case> cases{
      {{"architecture.readout_center=true", "architecture.readout_scale=0.5", "optimizer.grokfast=ema",
        "optimizer.fixed_norm=true", "optimizer.init_scale=1.5"},
       {}},
      {{"optimizer.grokfast=ma", "optimizer.grokfast_window=3", "run.loss_dtype=float32"},
       {"run.batch_size=64"}}};
  for (const auto& c : cases) {
    INFO(c.interventions.front());
    auto plain_overrides = kTinyOverrides;
    plain_overrides.push_back("run.steps=8");
    plain_overrides.insert(plain_overrides.end(), c.setting.begin(), c.setting.end());
    auto overrides = plain_overrides;
    overrides.insert(overrides.end(), c.interventions.begin(), c.interventions.end());
    ResolvedConfig cfg = composer.compose(kDefault, overrides);
    TempDir dir("presets");
    auto ledger = ledger::Ledger::create(dir.path.string());
    RunOutcome whole = run_recorded(cfg, builtin_host(), ledger, {});
    REQUIRE(whole.steps == 8);

    Watch stopper;
    stopper.stop_after = 2;  // interrupted after the step-4 checkpoint
    CHECK_THROWS_AS(run_recorded(cfg, builtin_host(), ledger, {}, &stopper), Interrupted);
    const std::string interrupted = ledger.entries().back().json.at("run");
    RunOutcome resumed = resume_recorded(interrupted, builtin_host(), composer, ledger);
    CHECK(resumed.params_hash == whole.params_hash);
    CHECK(resumed.final_metrics == whole.final_metrics);

    // The interventions did something: without them the run ends elsewhere.
    RunOutcome plain = run_recorded(composer.compose(kDefault, plain_overrides), builtin_host(), ledger, {});
    CHECK(plain.final_metrics.at("test_loss") != whole.final_metrics.at("test_loss"));
    CHECK(ledger.verify().ok);
  }
}

TEST_CASE("loss_dtype: the training loss in float64 (default) or float32", "[presets]") {
  Composer composer(builtin_host().registry());
  CHECK(composer.compose(kDefault).run.loss_dtype == "float64");
  auto losses = [&](const std::string& dtype) {
    auto o = kTinyOverrides;
    o.push_back("run.loss_dtype=" + dtype);
    Trainer t(composer.compose(kDefault, o), builtin_host().registry());
    Watch w;
    t.run(w);
    return w.losses;
  };
  auto l64 = losses("float64"), l32 = losses("float32");
  REQUIRE(l64.size() == 4);
  REQUIRE(l32.size() == 4);
  // Same model and data; the same loss to float precision, but only float64
  // carries digits beyond a float's.
  CHECK(l64[0] == Approx(l32[0]).epsilon(1e-6));
  CHECK(static_cast<double>(static_cast<float>(l32[0])) == l32[0]);
  int beyond_float = 0;
  for (double l : l64) beyond_float += static_cast<double>(static_cast<float>(l)) != l;
  CHECK(beyond_float >= 3);
}

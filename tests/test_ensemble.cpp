// Seed-vectorised ensembles (run.ensemble): the batched transformer computes
// what its members compute, and an ensemble member's run is the single run of
// the same seed, checkpoint for checkpoint and metric for metric.
#include <torch/torch.h>  // before Catch: glog's CHECK must not replace Catch's

#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "groklab/components.h"
#include "groklab/manifest.h"
#include "groklab/trainer.h"
#include "builtins.h"
#include "groklab/ledger/ledger.h"
#include "groklab/runs.h"
#include "support.h"

#include <nlohmann/json.hpp>

using namespace groklab;
using test::builtins;

namespace {

// A small modular-addition transformer; overrides select the variant.
const char* kManifest = R"(
[task]
plugin = "modular_arithmetic"
p = 13
train_fraction = 0.5

[architecture]
plugin = "transformer"
d_model = 16
heads = 2
d_ff = 32

[optimizer]
plugin = "adamw"
lr = 3e-3
weight_decay = 1.0

[[metrics]]
plugin = "accuracy"
split = "train"

[[metrics]]
plugin = "loss"
split = "test"

[[metrics]]
plugin = "weight_norm"

[run]
seed = 5
steps = 24
eval_every = 6
checkpoint_every = 8
)";

ResolvedConfig compose(const std::vector<std::string>& overrides) {
  Composer composer(builtins());
  return composer.compose_string(kManifest, "<ensemble test>", overrides);
}

struct Collect : TrainObserver {
  std::vector<std::pair<int64_t, std::map<std::string, double>>> evals;
  std::vector<std::string> checkpoints;  // "step:params_hash"
  std::vector<std::string> bytes;
  void on_eval(int64_t step, const std::map<std::string, double>& v) override { evals.emplace_back(step, v); }
  void on_checkpoint(const Checkpoint& c) override {
    checkpoints.push_back(std::to_string(c.step) + ":" + c.params_hash);
    bytes.push_back(c.bytes);
  }
};

// Trains the config as an ensemble of S and returns each member's record.
std::vector<Collect> train_ensemble(const ResolvedConfig& config, const TrainPlan& plan = {}) {
  Trainer t(config, builtins());
  std::vector<Collect> out(static_cast<size_t>(t.members()));
  std::vector<TrainObserver*> obs;
  for (auto& c : out) obs.push_back(&c);
  t.run_ensemble(obs, plan);
  return out;
}

Collect train_single(const ResolvedConfig& config) {
  Collect c;
  Trainer(config, builtins()).run(c);
  return c;
}

}  // namespace

TEST_CASE("an ensemble member trains bit-identically to the single run of its seed", "[ensemble]") {
  const std::vector<std::vector<std::string>> variants = {
      {},                                                                // the default experiment's model
      {"run.batch_size=8"},                                              // minibatches: own data order
      {"architecture.layer_norm=\"pre\"", "architecture.depth=2", "architecture.causal=true",
       "architecture.final_ln=true"},
      {"architecture.layer_norm=\"post\"", "architecture.readout=\"all\"", "architecture.tied_readout=true",
       "architecture.positions=\"sinusoidal\"", "task.p=16"},
      {"architecture.readout_center=true", "architecture.readout_scale=2.0", "architecture.layer_norm=\"peri\"",
       "optimizer.clip_grad_norm=0.5"},
      {"architecture.last_block_at_readout=false", "architecture.embed_scale=\"sqrt_d\""},
  };
  for (const auto& v : variants) {
    std::string name;
    for (const auto& o : v) name += o + " ";
    SECTION("variant: " + (name.empty() ? std::string("defaults") : name)) {
      std::vector<std::string> overrides = v;
      overrides.push_back("run.ensemble=3");
      const ResolvedConfig config = compose(overrides);
      auto members = train_ensemble(config);
      REQUIRE(members.size() == 3);
      for (int64_t s = 0; s < 3; ++s) {
        const ResolvedConfig solo = Trainer::member_config(config, s);
        CHECK(solo.run.seed == 5 + static_cast<uint64_t>(s));
        CHECK(solo.run.ensemble == 1);
        Collect single = train_single(solo);
        INFO("member " << s);
        REQUIRE(single.checkpoints.size() == 3);
        CHECK(members[static_cast<size_t>(s)].checkpoints == single.checkpoints);
        CHECK(members[static_cast<size_t>(s)].evals == single.evals);
        // A member's checkpoint holds what the single run's holds, tensor for tensor.
        for (size_t k = 0; k < single.bytes.size(); ++k)
          CHECK(Trainer::checkpoint_tensor_hashes(members[static_cast<size_t>(s)].bytes[k]) ==
                Trainer::checkpoint_tensor_hashes(single.bytes[k]));
      }
      // The members differ from each other (own seeds).
      CHECK(members[0].checkpoints.back() != members[1].checkpoints.back());
    }
  }
}

TEST_CASE("ensemble members stop on their own at the stop metric", "[ensemble]") {
  const ResolvedConfig config =
      compose({"run.ensemble=3", "run.steps=60", "run.stop_metric=\"train_accuracy\"", "run.stop_threshold=0.3"});
  auto members = train_ensemble(config);
  std::set<int64_t> last_steps;
  for (int64_t s = 0; s < 3; ++s) {
    Collect single = train_single(Trainer::member_config(config, s));
    INFO("member " << s);
    CHECK(members[static_cast<size_t>(s)].checkpoints == single.checkpoints);
    CHECK(members[static_cast<size_t>(s)].evals == single.evals);
    last_steps.insert(single.evals.back().first);
  }
  // The members stopped at different steps, before the last.
  CHECK(last_steps.size() > 1);
  CHECK(*last_steps.rbegin() < 60);
}

TEST_CASE("an ensemble resumed from its members' checkpoints is bit-identical", "[ensemble]") {
  const ResolvedConfig config = compose({"run.ensemble=2"});
  auto whole = train_ensemble(config);
  // Train to step 8, then resume both members from their step-8 checkpoints.
  TrainPlan first;
  first.stop_step = 8;
  auto part = train_ensemble(config, first);
  REQUIRE(part[0].bytes.size() == 1);
  TrainPlan rest;
  rest.member_resume = {part[0].bytes[0], part[1].bytes[0]};
  rest.member_stopped = {false, false};
  auto resumed = train_ensemble(config, rest);
  for (size_t s = 0; s < 2; ++s) {
    INFO("member " << s);
    std::vector<std::string> tail(whole[s].checkpoints.begin() + 1, whole[s].checkpoints.end());
    CHECK(resumed[s].checkpoints == tail);
  }
}

TEST_CASE("the batched transformer computes each member's logits and gradients", "[ensemble]") {
  const ResolvedConfig config = compose({"architecture.layer_norm=\"pre\"", "architecture.depth=2",
                                         "architecture.attn_bias=true", "architecture.causal=true"});
  const Component* c = builtins().find(Kind::Architecture, "transformer");
  REQUIRE(c != nullptr);
  auto arch = c->make_architecture(config.architecture.params);
  const TaskSpec spec{14, 3, 13};
  std::vector<std::shared_ptr<Model>> members;
  for (int s = 0; s < 3; ++s) {
    torch::manual_seed(100 + s);
    members.push_back(arch->build(spec));
  }
  auto ensemble = arch->build_ensemble(spec, members);
  REQUIRE(ensemble);
  // In float64, to compare values rather than summation orders.
  ensemble->to(torch::kDouble);
  for (auto& m : members) m->to(torch::kDouble);
  bind_members(*ensemble, members);
  torch::manual_seed(7);
  const torch::Tensor inputs = torch::randint(0, 14, {3 * 4, 3}, torch::kLong);
  const torch::Tensor logits = ensemble->forward(inputs);
  REQUIRE(logits.sizes() == torch::IntArrayRef({12, 1, 13}));
  logits.pow(2).sum().backward();
  for (int s = 0; s < 3; ++s) {
    INFO("member " << s);
    members[s]->zero_grad();
    const torch::Tensor mine = members[s]->forward(inputs.narrow(0, 4 * s, 4));
    CHECK(torch::allclose(logits.narrow(0, 4 * s, 4), mine, 1e-12, 1e-12));
    mine.pow(2).sum().backward();
    for (const auto& p : ensemble->named_parameters(true)) {
      const auto own_params = members[s]->named_parameters(true);
      const torch::Tensor* own = own_params.find(p.key());
      REQUIRE(own != nullptr);
      INFO(p.key());
      CHECK(torch::allclose(p.value().grad().select(0, s), own->grad(), 1e-10, 1e-12));
    }
  }
}

TEST_CASE("run.ensemble errors are clear", "[ensemble]") {
  CHECK_THROWS_WITH(Trainer(compose({"run.ensemble=2", "architecture.dropout=0.1"}), builtins()),
                    Catch::Contains("run.ensemble needs dropout = 0"));
  Collect c;
  Trainer t(compose({"run.ensemble=2"}), builtins());
  CHECK_THROWS_WITH(t.run(c), Catch::Contains("run_ensemble"));
  // An architecture without build_ensemble() (the test plugins' test_linear).
  const ResolvedConfig plain = Composer(test::test_host().registry())
                                   .compose(std::string(GROKLAB_SOURCE_DIR) + "/tests/data/tiny_copy.toml",
                                            {"run.ensemble=2"});
  CHECK_THROWS_WITH(Trainer(plain, test::test_host().registry()),
                    Catch::Contains("architecture test_linear (run.ensemble = 2)") &&
                        Catch::Contains("trains no ensembles"));
  // Members whose batches differ in rows (seeds 0 and 1: training splits of 32
  // and 40): full batches, or a batch size one split covers and the other not.
  auto uneven = [&](const std::string& batch_size) {
    return Composer(test::test_host().registry())
        .compose(std::string(GROKLAB_SOURCE_DIR) + "/tests/data/tiny_copy.toml",
                 {"run.ensemble=2", "run.seed=0", "run.seed_streams=\"shared\"", "task.odd_seed_examples=8",
                  "run.batch_size=" + batch_size});
  };
  CHECK_THROWS_WITH(Trainer(uneven("0"), test::test_host().registry()),
                    Catch::Contains("member 1's training batch has 40 rows (training split 40), member 0's 32") &&
                        Catch::Contains("an ensemble needs equal batches"));
  CHECK_THROWS_WITH(Trainer(uneven("36"), test::test_host().registry()),
                    Catch::Contains("member 1's training batch has 36 rows (training split 40), member 0's 32") &&
                        Catch::Contains("an ensemble needs equal batches"));
  // Minibatches of 8 fit both: the check passes and the architecture is what refuses.
  CHECK_THROWS_WITH(Trainer(uneven("8"), test::test_host().registry()), Catch::Contains("trains no ensembles"));
  // ensemble = 1 keeps the canonical text (and so every recorded hash) unchanged.
  CHECK(compose({}).canonical().find("ensemble") == std::string::npos);
  CHECK(compose({"run.ensemble=4"}).canonical().find("ensemble = 4") != std::string::npos);
}

TEST_CASE("an ensemble member's checkpoint resumes as a single run", "[ensemble]") {
  const ResolvedConfig config = compose({"run.ensemble=2", "run.batch_size=8"});
  auto members = train_ensemble(config);
  const ResolvedConfig solo = Trainer::member_config(config, 1);
  Collect whole = train_single(solo);
  Collect rest;
  TrainPlan plan;
  plan.resume_from = members[1].bytes[0];  // step 8, written by the ensemble
  Trainer(solo, builtins()).run(rest, plan);
  CHECK(rest.checkpoints == std::vector<std::string>(whole.checkpoints.begin() + 1, whole.checkpoints.end()));
}

TEST_CASE("with attention biases, ensemble members match their single runs to rounding", "[ensemble]") {
  // The key bias's gradient sums its rows in another order than the single
  // model's (docs/ensembles.md): equal values, not equal bits.
  const ResolvedConfig config = compose({"run.ensemble=2", "architecture.attn_bias=true"});
  auto members = train_ensemble(config);
  for (int64_t s = 0; s < 2; ++s) {
    Collect single = train_single(Trainer::member_config(config, s));
    REQUIRE(single.evals.size() == members[static_cast<size_t>(s)].evals.size());
    for (size_t k = 0; k < single.evals.size(); ++k)
      for (const auto& [name, v] : single.evals[k].second)
        CHECK(members[static_cast<size_t>(s)].evals[k].second.at(name) == Approx(v).epsilon(1e-4).margin(1e-6));
  }
}

namespace {

// Stops a run (as Ctrl-C does) once it has seen `at` steps.
struct StopAt : TrainObserver {
  int64_t at;
  explicit StopAt(int64_t a) : at(a) {}
  void on_eval(int64_t, const std::map<std::string, double>&) override {}
  void on_checkpoint(const Checkpoint&) override {}
  void on_step(int64_t step, double) override {
    if (step == at) throw Interrupted();
  }
};

}  // namespace

TEST_CASE("an ensemble is recorded as an ensemble entry and one run per member, replays and resumes bit-identically",
          "[ensemble][ledger]") {
  test::TempDir dir("ensemble");
  auto ledger = ledger::Ledger::create(dir.path.string());
  Composer composer(builtins());
  const ResolvedConfig config =
      compose({"run.ensemble=3", "run.stop_metric=\"train_accuracy\"", "run.stop_threshold=0.3", "run.steps=60"});
  EnsembleOutcome o = run_ensemble_recorded(config, test::builtin_host(), ledger, {});
  REQUIRE(o.members.size() == 3);
  CHECK(o.status == "finished");
  for (size_t s = 0; s < 3; ++s) {
    // Each member is a single run of its own seed: its config hash is the single run's.
    RunRecord r = load_run(ledger, o.members[s].run_id);
    CHECK(r.start.json.at("config_hash") == Trainer::member_config(config, static_cast<int64_t>(s)).hash());
    CHECK(r.start.json.at("ensemble") == o.ensemble_id);
    CHECK(r.status() == "finished");
    CHECK(ensemble_of(ledger, o.members[s].run_id) == o.ensemble_id);
    CHECK(ensemble_of(ledger, r.checkpoints.front().id) == o.ensemble_id);
  }
  CHECK(ledger.verify().ok);

  // Replay from the ensemble entry and from a member: the whole ensemble, bit-identical.
  ReplayReport full = replay_recorded(o.ensemble_id, test::builtin_host(), composer, ledger);
  CHECK(full.identical);
  CHECK(full.member_replays.size() == 3);
  ReplayReport spot = replay_recorded(o.members[1].run_id, test::builtin_host(), composer, ledger, 2);
  CHECK(spot.identical);
  CHECK(spot.intervals.size() == 2);
  ReplayReport perturbed =
      replay_recorded(o.ensemble_id, test::builtin_host(), composer, ledger, 0, std::nullopt, {"optimizer.lr=0.01"});
  CHECK_FALSE(perturbed.identical);
  CHECK_THAT(perturbed.divergence, Catch::Contains("member 0"));

  // Interrupted at step 45 (after the checkpoint at 40): members 1 and 2 had
  // reached their stop metric at 42 and finished; member 0 (stops at 48) was
  // interrupted. The resume continues member 0 only, to the same bits.
  REQUIRE(o.members[0].steps == 48);
  REQUIRE(o.members[1].steps == 42);
  REQUIRE(o.members[2].steps == 42);
  StopAt stop(45);
  CHECK_THROWS_AS(run_ensemble_recorded(config, test::builtin_host(), ledger, {}, &stop), Interrupted);
  std::string stopped;
  std::vector<std::string> members;  // the interrupted ensemble's, in member order
  for (const auto& r : load_runs(ledger))
    if (r.start.json.contains("member") && r.start.json.value("ensemble", "") != o.ensemble_id)
      members.push_back(r.start.id);
  REQUIRE(members.size() == 3);
  auto status_of = [&](const std::string& run) { return load_run(ledger, run).status(); };
  CHECK(status_of(members[0]) == "interrupted");
  CHECK(status_of(members[1]) == "finished");
  CHECK(status_of(members[2]) == "finished");
  stopped = members[0];
  CHECK_THROWS_WITH(resume_recorded(stopped, test::builtin_host(), composer, ledger),
                    Catch::Contains("resumes as a whole"));
  EnsembleOutcome resumed = resume_ensemble_recorded(stopped, test::builtin_host(), composer, ledger);
  REQUIRE(resumed.members.size() == 3);
  for (size_t s = 0; s < 3; ++s) {
    CHECK(resumed.members[s].params_hash == o.members[s].params_hash);
    CHECK(resumed.members[s].steps == o.members[s].steps);
  }
  // The finished members keep their one result and get no resume entry.
  std::map<std::string, int> results, resumes;
  ledger.for_each_entry([&](const ledger::Entry& e) {
    const std::string kind = e.json.value("kind", "");
    if (kind == "result") ++results[e.json.value("run", "")];
    if (kind == "resume") ++resumes[e.json.value("run", "")];
    return true;
  });
  CHECK(results[members[0]] == 2);  // interrupted, then finished
  CHECK(results[members[1]] == 1);
  CHECK(results[members[2]] == 1);
  CHECK(resumes[members[0]] == 1);
  CHECK(resumes[members[1]] == 0);
  CHECK(status_of(members[0]) == "finished");
  CHECK(resumed.members[1].result_id == load_run(ledger, members[1]).result->id);
  CHECK_THROWS_WITH(resume_ensemble_recorded(stopped, test::builtin_host(), composer, ledger),
                    Catch::Contains("already finished"));
}

namespace {

// Cuts entries.jsonl of the ledger in dir after its first line for which
// keep_through(entry) holds, as a kill at that moment would leave it.
template <class F>
void kill_after(const std::filesystem::path& dir, F keep_through) {
  const auto file = dir / "entries.jsonl";
  std::ifstream in(file);
  std::string kept, line;
  bool cut = false;
  while (!cut && std::getline(in, line)) {
    kept += line + "\n";
    cut = keep_through(nlohmann::json::parse(line));
  }
  REQUIRE(cut);
  in.close();
  std::ofstream(file, std::ios::trunc) << kept;
}

}  // namespace

TEST_CASE("an ensemble killed between its members' checkpoints resumes from the last step all of them reached",
          "[ensemble][ledger]") {
  Composer composer(builtins());
  const ResolvedConfig config = compose({"run.ensemble=3"});
  test::TempDir whole_dir("ensemble-whole"), killed_dir("ensemble-killed");
  auto whole = ledger::Ledger::create(whole_dir.path.string());
  const EnsembleOutcome o = run_ensemble_recorded(config, test::builtin_host(), whole, {});
  REQUIRE(o.status == "finished");

  // Killed after member 0's checkpoint at step 16, before members 1 and 2 wrote theirs.
  {
    auto ledger = ledger::Ledger::create(killed_dir.path.string());
    StopAt stop(20);
    CHECK_THROWS_AS(run_ensemble_recorded(config, test::builtin_host(), ledger, {}, &stop), Interrupted);
  }
  std::string member0;
  kill_after(killed_dir.path, [&](const nlohmann::json& e) {
    if (e.value("kind", "") == "run" && e.value("member", -1) == 0) member0 = e.at("id").get<std::string>();
    return e.value("kind", "") == "checkpoint" && e.value("run", "") == member0 && e.value("step", 0) == 16;
  });
  auto ledger = ledger::Ledger::open(killed_dir.path.string());
  REQUIRE(ledger.verify().ok);
  std::vector<size_t> checkpoints;
  for (const auto& r : load_runs(ledger)) {
    CHECK(r.status() == "started");
    checkpoints.push_back(r.checkpoints.size());
  }
  CHECK(checkpoints == std::vector<size_t>{2, 1, 1});

  const EnsembleOutcome resumed = resume_ensemble_recorded(member0, test::builtin_host(), composer, ledger);
  REQUIRE(resumed.members.size() == 3);
  for (size_t s = 0; s < 3; ++s) {
    INFO("member " << s);
    CHECK(resumed.members[s].params_hash == o.members[s].params_hash);
    CHECK(resumed.members[s].steps == o.members[s].steps);
  }
  for (const auto& e : load_runs(ledger)) CHECK(e.status() == "finished");
  CHECK(ledger.verify().ok);
}

TEST_CASE("an ensemble killed while recording its members' run entries cannot resume, and says so",
          "[ensemble][ledger]") {
  Composer composer(builtins());
  test::TempDir dir("ensemble-half");
  {
    auto ledger = ledger::Ledger::create(dir.path.string());
    run_ensemble_recorded(compose({"run.ensemble=3", "run.steps=8"}), test::builtin_host(), ledger, {});
  }
  std::string ensemble;
  kill_after(dir.path, [&](const nlohmann::json& e) {
    if (e.value("kind", "") == "ensemble") ensemble = e.at("id").get<std::string>();
    return e.value("kind", "") == "run" && e.value("member", -1) == 0;
  });
  auto ledger = ledger::Ledger::open(dir.path.string());
  REQUIRE(ledger.verify().ok);
  CHECK_THROWS_WITH(resume_ensemble_recorded(ensemble, test::builtin_host(), composer, ledger),
                    Catch::Contains("has no run entry for member 1") &&
                        Catch::Contains("killed while recording its members"));
  CHECK_THROWS_WITH(replay_recorded(ensemble, test::builtin_host(), composer, ledger),
                    Catch::Contains("has no run entry for member 1"));
}

TEST_CASE("groklab run with run.ensemble: a table of members, replay by a member id, no sweeps of ensembles",
          "[ensemble][cli]") {
  test::TempDir dir("ensemble-cli");
  const std::string m = (dir.path / "m.toml").string();
  {
    std::ofstream out(m);
    out << kManifest;
  }
  const std::string ledger = " --ledger " + (dir.path / "ledger").string();
  auto r = test::run_groklab("run " + m + " run.ensemble=2" + ledger);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("ensemble ") && Catch::Contains("finished: 2 members"));
  // The member table: the second member's run id, replayed from it.
  const auto pos = r.out.find("\n  1      ");
  REQUIRE(pos != std::string::npos);
  const std::string member = r.out.substr(pos + 10, 12);
  auto rep = test::run_groklab("replay " + member + ledger);
  CHECK(rep.status == 0);
  CHECK_THAT(rep.out, Catch::Contains("replay of ensemble") && Catch::Contains("bit-identical"));
  auto sw = test::run_groklab("sweep " + m + " run.ensemble=2 optimizer.lr=0.001,0.002" + ledger);
  CHECK(sw.status != 0);
  CHECK_THAT(sw.out, Catch::Contains("sweep run.seed instead"));
}

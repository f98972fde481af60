// Sweeps: the frozen sweep entry, `groklab sweep -j N` (skip, --force, a
// failing child), a requeued child resuming to the same bits, the Slurm
// script (--dry-run) and, behind the "slurm" label, a real Slurm job array
// whose ledger matches a local sweep's.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "groklab/host.h"
#include "groklab/ledger/ledger.h"
#include "groklab/manifest.h"
#include "groklab/runs.h"
#include "groklab/sweep.h"
#include "groklab/trainer.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace groklab;
using test::test_host;
using test::run_groklab;
using test::TempDir;

namespace {

const std::string kEnv = std::string("GROKLAB_PLUGIN_PATH=") + GROKLAB_TEST_PLUGIN_DIR + "/good ";

// Four children of the tiny test experiment: width 4, 8 × seed 0, 1.
const char* kSweep = R"(
[task]
plugin = "test_copy"
vocab = 8
examples = 32

[architecture]
plugin = "test_linear"

[optimizer]
plugin = "test_sgd"
lr = 0.5

[[metrics]]
plugin = "test_train_loss"

[run]
steps = 30
batch_size = 8
eval_every = 5
checkpoint_every = 10

[sweep]
"architecture.width" = [4, 8]
"run.seed" = [0, 1]
)";

std::string write_manifest(const fs::path& dir, const std::string& text = kSweep) {
  const fs::path p = dir / "sweep.toml";
  std::ofstream(p) << text;
  return p.string();
}

// The sweep entries of a ledger, in order.
std::vector<sweep::Frozen> sweeps(const ledger::Ledger& ledger) {
  std::vector<sweep::Frozen> out;
  for (const auto& e : ledger.entries())
    if (e.json.value("kind", std::string()) == "sweep") out.push_back(sweep::load(ledger, e.id));
  return out;
}

// child index -> (config hash, params hash of its finished run).
std::map<int64_t, std::pair<std::string, std::string>> results(const ledger::Ledger& ledger,
                                                               const sweep::Frozen& frozen) {
  std::map<int64_t, std::pair<std::string, std::string>> out;
  for (const auto& s : sweep::status(ledger, frozen)) {
    REQUIRE(s.status == "finished");
    RunRecord rec = load_run(ledger, s.run_id);
    REQUIRE(rec.result);
    out[s.index] = {rec.start.json.at("config_hash").get<std::string>(),
                    rec.result->json.at("params_hash").get<std::string>()};
  }
  return out;
}

// Stops a run at its first checkpoint, as a preempted job would be stopped.
struct StopAtFirstCheckpoint : TrainObserver {
  void on_eval(int64_t, const std::map<std::string, double>&) override {}
  void on_checkpoint(const Checkpoint&) override { throw Interrupted(); }
};

}  // namespace

TEST_CASE("groklab sweep -j 2 runs every child once, skips finished ones, and --force reruns",
          "[sweep][cli]") {
  TempDir dir("sweep-local");
  const std::string manifest = write_manifest(dir.path);
  const std::string ledger_dir = (dir.path / "ledger").string();

  auto r = run_groklab("-q sweep " + manifest + " -j 2 --ledger " + ledger_dir, kEnv);
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("4 children, 4 to run, 2 at a time"));
  CHECK_THAT(r.out, Catch::Contains("architecture.width=8 run.seed=1"));

  auto ledger = ledger::Ledger::open(ledger_dir);
  CHECK(ledger.verify().ok);
  auto frozen = sweeps(ledger);
  REQUIRE(frozen.size() == 1);
  CHECK(frozen[0].launcher == "local");
  REQUIRE(frozen[0].children.size() == 4);

  // The frozen children are the composer's, in sweep order.
  Composer composer(test_host().registry());
  const auto children = composer.expand(manifest);
  REQUIRE(children.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(frozen[0].children[i].config_hash == children[i].config.hash());
    CHECK(ledger.objects().get(frozen[0].children[i].config_object) == children[i].config.canonical());
  }
  CHECK(frozen[0].children[3].varied_text() == "architecture.width=8 run.seed=1");

  // Every child ran once, as a run of the sweep with its index; each has its log.
  const auto first = results(ledger, frozen[0]);
  REQUIRE(first.size() == 4);
  for (int64_t i = 0; i < 4; ++i) {
    RunRecord rec = load_run(ledger, sweep::status(ledger, frozen[0])[static_cast<std::size_t>(i)].run_id);
    CHECK(rec.start.json.at("sweep") == frozen[0].id);
    CHECK(rec.start.json.at("sweep_child") == i);
    CHECK(fs::exists(fs::path(ledger_dir) / "sweeps" / frozen[0].id.substr(0, 12) /
                     ("child-" + std::to_string(i) + ".log")));
  }
  // Different seeds and widths: different bits.
  CHECK(first.at(0).second != first.at(1).second);
  CHECK(first.at(0).second != first.at(2).second);

  // `sweep status` shows each child finished.
  r = run_groklab("-q sweep status " + frozen[0].id.substr(0, 8) + " --ledger " + ledger_dir, kEnv);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("local, 4 children"));
  CHECK_THAT(r.out, Catch::Contains("finished") && Catch::Contains("30/30"));

  // Again: every child is skipped (same config hashes), nothing new is appended.
  const std::string head = ledger.head();
  r = run_groklab("-q sweep " + manifest + " -j 2 --ledger " + ledger_dir, kEnv);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("child 3: skipped, finished before as run"));
  CHECK_THAT(r.out, Catch::Contains("nothing to run"));
  CHECK(ledger.head() == head);

  // One more seed: only the two new children run; the old ones count as done.
  r = run_groklab("-q sweep " + manifest + " run.seed=0,1,2 -j 2 --ledger " + ledger_dir, kEnv);
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("6 children, 2 to run"));
  frozen = sweeps(ledger);
  REQUIRE(frozen.size() == 2);
  int done_before = 0, finished = 0;
  for (const auto& s : sweep::status(ledger, frozen[1])) {
    done_before += s.status == "done before";
    finished += s.status == "finished";
  }
  CHECK(done_before == 4);
  CHECK(finished == 2);

  // --force runs all four again, to the same bits.
  r = run_groklab("-q sweep " + manifest + " -j 2 --force --ledger " + ledger_dir, kEnv);
  CHECK(r.status == 0);
  frozen = sweeps(ledger);
  REQUIRE(frozen.size() == 3);
  CHECK(results(ledger, frozen[2]) == first);
  CHECK(ledger.verify().ok);
}

TEST_CASE("a failing sweep child does not stop the others, and the sweep says so", "[sweep][cli]") {
  TempDir dir("sweep-fail");
  // run.device = "cuda" fails at the start of training in a CPU-only build.
  const std::string manifest = write_manifest(dir.path);
  const std::string ledger_dir = (dir.path / "ledger").string();
  auto r = run_groklab("-q sweep " + manifest + " architecture.width=4 run.device=cuda,cpu -j 1 --ledger " +
                           ledger_dir,
                       kEnv);
  INFO(r.out);
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains("failed (exit 1)") && Catch::Contains("run.device = \"cuda\""));
  CHECK_THAT(r.out, Catch::Contains("2 of 4 children did not finish"));
  auto ledger = ledger::Ledger::open(ledger_dir);
  auto frozen = sweeps(ledger);
  REQUIRE(frozen.size() == 1);
  std::map<std::string, int> by_status;
  for (const auto& s : sweep::status(ledger, frozen[0])) ++by_status[s.status];
  CHECK(by_status["finished"] == 2);
  CHECK(by_status["failed"] == 2);
}

TEST_CASE("a stopped sweep child resumes from its checkpoint to the bits of an uninterrupted one",
          "[sweep]") {
  TempDir dir("sweep-requeue");
  Composer composer(test_host().registry());
  const auto children = composer.expand(write_manifest(dir.path));
  auto ledger = ledger::Ledger::create((dir.path / "ledger").string());
  const sweep::Frozen frozen = sweep::freeze(ledger, children, Provenance{}, "slurm");

  // Preempted at its first checkpoint: recorded as interrupted.
  StopAtFirstCheckpoint stop;
  CHECK_THROWS_AS(sweep::run_child(ledger, test_host(), composer, frozen.id, 2, &stop), Interrupted);
  CHECK(sweep::status(ledger, frozen)[2].status == "interrupted");
  CHECK(sweep::status(ledger, frozen)[2].step == 10);

  // The requeued task runs the same child again: it resumes the same run.
  RunOutcome resumed = sweep::run_child(ledger, test_host(), composer, frozen.id, 2);
  CHECK(sweep::status(ledger, frozen)[2].run_id == resumed.run_id);
  CHECK(load_run(ledger, resumed.run_id).resumes.size() == 1);

  // Same bits as the child trained straight through elsewhere.
  auto other = ledger::Ledger::create((dir.path / "other").string());
  RunOutcome solo = run_recorded(children[2].config, test_host(), other, {});
  CHECK(resumed.params_hash == solo.params_hash);

  // Once finished, running the child again changes nothing.
  const std::string head = ledger.head();
  CHECK(sweep::run_child(ledger, test_host(), composer, frozen.id, 2).run_id == resumed.run_id);
  CHECK(ledger.head() == head);
  CHECK_THROWS_WITH(sweep::run_child(ledger, test_host(), composer, frozen.id, 9),
                    Catch::Contains("has no child 9 (it has 4)"));
  CHECK_THROWS_WITH(sweep::load(ledger, resumed.run_id), Catch::Contains("not a sweep"));
}

TEST_CASE("sweep --slurm: the dry-run script touches nothing; sbatch missing, failing or accepting", "[sweep][slurm][cli]") {
  TempDir dir("sweep-dry");
  const std::string manifest = write_manifest(dir.path);
  const std::string ledger_dir = (dir.path / "ledger").string();
  auto r = run_groklab("-q sweep " + manifest +
                           " --slurm --dry-run --partition gpu --time 01:00:00 --gres gpu:1 --max-parallel 2 "
                           "--ledger " + ledger_dir,
                       kEnv);
  INFO(r.out);
  REQUIRE(r.status == 0);
  for (const char* line : {"#SBATCH --array=0,1,2,3%2", "#SBATCH --partition=gpu", "#SBATCH --time=01:00:00",
                           "#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=1", "#SBATCH --requeue",
                           "sweep child SWEEP \"$SLURM_ARRAY_TASK_ID\" --ledger", "export GROKLAB_PLUGIN_PATH="})
    CHECK_THAT(r.out, Catch::Contains(line));
  CHECK_FALSE(fs::exists(fs::path(ledger_dir) / "entries.jsonl"));

  // Without sbatch: a clear error before anything is frozen.
  r = run_groklab("-q sweep " + manifest + " --slurm --ledger " + ledger_dir, "PATH=/nonexistent " + kEnv);
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains("sbatch is not on PATH"));
  auto ledger = ledger::Ledger::create(ledger_dir);
  CHECK(ledger.head().empty());

  // sbatch refuses the job: the error says so and where the frozen sweep and
  // its script are; no submission is recorded.
  const fs::path bin = dir.path / "bin";
  fs::create_directories(bin);
  std::ofstream(bin / "sbatch") << "#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n";
  fs::permissions(bin / "sbatch", fs::perms::owner_all);
  r = run_groklab("-q sweep " + manifest + " --slurm --partition gpu --ledger " + ledger_dir,
                  "PATH=" + bin.string() + ":/usr/bin:/bin " + kEnv);
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains("sbatch failed (exit 1): sbatch: error: invalid partition specified: gpu") &&
                        Catch::Contains("is frozen; its script is"));
  auto kinds = [&] {
    std::vector<std::string> k;
    for (const auto& e : ledger.entries()) k.push_back(e.json.value("kind", std::string()));
    return k;
  };
  CHECK(kinds() == std::vector<std::string>{"sweep"});

  // sbatch accepts it: the job id goes into a sweep_submission entry.
  std::ofstream(bin / "sbatch") << "#!/bin/sh\necho '4242;cluster'\n";
  r = run_groklab("-q sweep " + manifest + " --slurm --force --ledger " + ledger_dir,
                  "PATH=" + bin.string() + ":/usr/bin:/bin " + kEnv);
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("submitted Slurm job array 4242 (4 tasks)"));
  CHECK(kinds() == std::vector<std::string>{"sweep", "sweep", "sweep_submission"});
  CHECK(ledger.entries().back().json.at("job_id") == "4242");

  // Slurm options need --slurm.
  r = run_groklab("-q sweep " + manifest + " --partition gpu --ledger " + ledger_dir, kEnv);
  CHECK(r.status != 0);
  CHECK_THAT(r.out, Catch::Contains("--partition requires --slurm"));
}

// Hidden ([.]): run by the slurm_sweep CTest entry, after the slurm_cluster
// fixture (tests/slurm/start.sh) has started a single-node cluster.
TEST_CASE("a Slurm job array sweep lands in the ledger with the local sweep's hashes", "[.][slurm_cluster]") {
  TempDir dir("sweep-slurm");
  const std::string manifest = write_manifest(dir.path);
  const std::string local_dir = (dir.path / "local").string(), slurm_dir = (dir.path / "slurm").string();

  auto r = run_groklab("-q sweep " + manifest + " -j 2 --ledger " + local_dir, kEnv);
  REQUIRE(r.status == 0);
  r = run_groklab("-q sweep " + manifest + " --slurm --max-parallel 2 --ledger " + slurm_dir, kEnv);
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("submitted Slurm job array") && Catch::Contains("(4 tasks)"));

  auto ledger = ledger::Ledger::open(slurm_dir);
  auto frozen = sweeps(ledger);
  REQUIRE(frozen.size() == 1);
  CHECK(frozen[0].launcher == "slurm");

  // Wait (up to 5 min) for every child to finish or fail.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  bool ended = false;
  while (!ended && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ended = true;
    for (const auto& s : sweep::status(ledger, frozen[0]))
      ended = ended && (s.status == "finished" || s.status == "failed");
  }
  r = run_groklab("-q sweep status " + frozen[0].id + " --ledger " + slurm_dir, kEnv);
  INFO(r.out);
  REQUIRE(ended);
  CHECK_THAT(r.out, Catch::Contains("Slurm job"));
  CHECK(ledger.verify().ok);

  // Equal config hashes and, on this machine, equal results to the local sweep.
  auto local = ledger::Ledger::open(local_dir);
  CHECK(results(ledger, frozen[0]) == results(local, sweeps(local)[0]));
  CHECK(fs::exists(fs::path(slurm_dir) / "sweeps" / frozen[0].id.substr(0, 12) / "sweep.sbatch"));
}

// Hidden ([.]): run by the slurm_sweep CTest entry (see above).
TEST_CASE("a requeued Slurm array task resumes its child to the bits of an uninterrupted run",
          "[.][slurm_cluster]") {
  TempDir dir("sweep-slurm-requeue");
  // One child long enough (~10 s) to be requeued mid-run.
  std::string text = kSweep;
  text = text.substr(0, text.find("[sweep]"));
  text.replace(text.find("steps = 30"), 10, "steps = 100000");
  text.replace(text.find("checkpoint_every = 10"), 21, "checkpoint_every = 2000");
  text.replace(text.find("eval_every = 5"), 14, "eval_every = 2000");
  const std::string manifest = write_manifest(dir.path, text);
  const std::string slurm_dir = (dir.path / "slurm").string();
  auto r = run_groklab("-q sweep " + manifest + " architecture.width=64 --slurm --ledger " + slurm_dir, kEnv);
  INFO(r.out);
  REQUIRE(r.status == 0);
  auto ledger = ledger::Ledger::open(slurm_dir);
  const sweep::Frozen frozen = sweeps(ledger).at(0);
  std::string job;
  for (const auto& e : ledger.entries())
    if (e.json.value("kind", std::string()) == "sweep_submission") job = e.json.at("job_id").get<std::string>();
  REQUIRE(!job.empty());

  auto wait_until = [&](const std::function<bool(const sweep::ChildState&)>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
    while (std::chrono::steady_clock::now() < deadline) {
      if (done(sweep::status(ledger, frozen).at(0))) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  };
  // Once its first checkpoint is in the ledger, requeue the task: Slurm stops
  // it (SIGTERM: the run records "interrupted") and queues it again; release
  // it at once instead of after Slurm's requeue delay.
  REQUIRE(wait_until([&](const sweep::ChildState& s) {
    return !s.run_id.empty() && !load_run(ledger, s.run_id).checkpoints.empty();
  }));
  auto q = test::run_shell("scontrol requeue " + job + "_0");
  INFO(q.out);
  REQUIRE(q.status == 0);
  REQUIRE(wait_until([](const sweep::ChildState& s) { return s.status == "interrupted"; }));
  for (int i = 0; i < 600 && test::run_shell("squeue -h -r -j " + job + " -o %T").out.find("PENDING") ==
                                 std::string::npos;
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  q = test::run_shell("scontrol update jobid=" + job + "_0 StartTime=now");
  REQUIRE(q.status == 0);
  REQUIRE(wait_until([](const sweep::ChildState& s) { return s.status == "finished" || s.status == "failed"; }));

  const sweep::ChildState s = sweep::status(ledger, frozen).at(0);
  CHECK(s.status == "finished");
  CHECK(s.step == 100000);
  RunRecord rec = load_run(ledger, s.run_id);
  CHECK(rec.resumes.size() == 1);
  Composer composer(test_host().registry());
  auto solo_ledger = ledger::Ledger::create((dir.path / "solo").string());
  RunOutcome solo = run_recorded(composer.expand(manifest, {"architecture.width=64"}).at(0).config, test_host(),
                                 solo_ledger, {});
  CHECK(rec.result->json.at("params_hash").get<std::string>() == solo.params_hash);
  CHECK(ledger.verify().ok);
}

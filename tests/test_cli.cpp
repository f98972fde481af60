// The groklab executable end to end: run, kill -9, resume, replay, errors.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "groklab/ledger/ledger.h"
#include "support.h"

namespace fs = std::filesystem;

namespace {

using Result = groklab::test::CommandResult;
using groklab::test::TempDir;


const std::string kTiny = std::string(GROKLAB_SOURCE_DIR) + "/tests/data/tiny_copy.toml";
const std::string kEnv = std::string("GROKLAB_PLUGIN_PATH=") + GROKLAB_TEST_PLUGIN_DIR + "/good ";

// Runs groklab with the good test plugins; captures stdout+stderr.
Result run_groklab(const std::string& args) { return groklab::test::run_groklab(args, kEnv); }

size_t count(const std::string& file, const std::string& needle) {
  std::ifstream in(file);
  std::string line;
  size_t n = 0;
  while (std::getline(in, line))
    if (line.find(needle) != std::string::npos) ++n;
  return n;
}

std::string field(const std::string& out, const std::string& prefix) {
  auto at = out.find(prefix);
  if (at == std::string::npos) return "";
  auto end = out.find_first_of(" \n", at + prefix.size());
  return out.substr(at + prefix.size(), end - at - prefix.size());
}

}  // namespace

TEST_CASE("kill -9 at a random checkpoint, resume: the same bits as an uninterrupted run", "[cli][resume]") {
  TempDir dir("cli");
  const std::string ledger = (dir.path / "ledger").string();
  const std::string args = "run " + kTiny + " run.steps=20000 run.checkpoint_every=200 run.eval_every=100 --ledger " + ledger;

  Result whole = run_groklab("-q " + args);
  INFO(whole.out);
  REQUIRE(whole.status == 0);
  const std::string params = field(whole.out, "params ");
  REQUIRE(params.size() == 32);

  std::mt19937 rng(std::random_device{}());
  const size_t kill_after = 1 + rng() % 60;  // of 100 checkpoints
  const size_t before = count(ledger + "/entries.jsonl", "\"kind\":\"checkpoint\"");
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::setenv("GROKLAB_PLUGIN_PATH", (std::string(GROKLAB_TEST_PLUGIN_DIR) + "/good").c_str(), 1);
    std::string cmd = std::string(GROKLAB_BINARY) + " -q " + args + " >/dev/null 2>&1";
    ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (count(ledger + "/entries.jsonl", "\"kind\":\"checkpoint\"") < before + kill_after &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  ::kill(pid, SIGKILL);
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  REQUIRE(WIFSIGNALED(wstatus));  // it was killed mid-run, not finished

  // The killed run shows as started, with its last checkpoint.
  auto l = groklab::ledger::Ledger::open(ledger);
  std::string killed;
  for (const auto& e : l.entries())
    if (e.json.value("kind", "") == "run") killed = e.id;
  REQUIRE(count(ledger + "/entries.jsonl", "\"run\":\"" + killed + "\"") >= kill_after);

  Result resumed = run_groklab("-q run --resume " + killed.substr(0, 10) + " --ledger " + ledger);
  INFO(resumed.out);
  REQUIRE(resumed.status == 0);
  CHECK(field(resumed.out, "params ") == params);

  Result verify = run_groklab("-q ledger verify --ledger " + ledger);
  INFO(verify.out);
  CHECK(verify.status == 0);

  Result replay = run_groklab("-q replay " + killed.substr(0, 8) + " --spot-check 3 --ledger " + ledger);
  INFO(replay.out);
  CHECK(replay.status == 0);
  CHECK_THAT(replay.out, Catch::Contains("bit-identical"));
}

TEST_CASE("replay from the command line: identical, then perturbed", "[cli][replay]") {
  TempDir dir("cli");
  const std::string ledger = " --ledger " + (dir.path / "ledger").string();
  Result run = run_groklab("-q run " + kTiny + ledger);
  INFO(run.out);
  REQUIRE(run.status == 0);
  const std::string id = field(run.out, "run ");

  Result same = run_groklab("-q replay " + id + ledger);
  INFO(same.out);
  CHECK(same.status == 0);
  CHECK_THAT(same.out, Catch::Contains("bit-identical"));

  Result diff = run_groklab("-q replay " + id + " task.examples=33" + ledger);
  INFO(diff.out);
  CHECK(diff.status == 3);
  CHECK_THAT(diff.out, Catch::Contains("DIVERGED"));
  CHECK_THAT(diff.out, Catch::Contains("first divergent checkpoint: step 10"));
}

TEST_CASE("a bad manifest is a clear error and writes nothing", "[cli][bad-input]") {
  TempDir dir("cli");
  const fs::path bad = dir.path / "bad.toml";
  std::ofstream(bad) << "[task]\nplugin = \"test_copy\"\nvocab = \"many\"\n\n[architecture]\nplugin = \"test_linear\"\n"
                        "[optimizer]\nplugin = \"test_sgd\"\n";
  Result r = run_groklab("-q run " + bad.string() + " --ledger " + (dir.path / "ledger").string());
  INFO(r.out);
  CHECK(r.status != 0);
  CHECK_THAT(r.out, Catch::Contains(bad.string() + ":3:"));
  CHECK_THAT(r.out, Catch::Contains("task.vocab"));
  CHECK_FALSE(fs::exists(dir.path / "ledger" / "entries.jsonl"));
}

// groklab bench runs end to end and reports its ratios (no time is asserted),
// and its workload task, random_tokens, is what it says.
#include <torch/torch.h>  // before Catch2: glog's CHECK must not replace Catch2's
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "builtins.h"
#include "groklab/components.h"
#include "support.h"

using namespace groklab;
using test::TempDir;

TEST_CASE("random_tokens: random tokens and targets at every position, fixed by the seed", "[bench][task]") {
  auto task = test::builtins().find(Kind::Task, "random_tokens")
                  ->make_task(test::params_for(Kind::Task, "random_tokens",
                                               {{"vocab", Value(7)}, {"seq_len", Value(5)}, {"train_size", Value(300)},
                                                {"test_size", Value(20)}}));
  CHECK(task->spec().vocab_size == 7);
  CHECK(task->spec().seq_len == 5);
  CHECK(task->spec().num_classes == 7);
  task->prepare(3);
  CHECK(task->size("train") == 300);
  CHECK(task->size("test") == 20);
  const Batch b = task->batch("train", torch::arange(300));
  REQUIRE(b.inputs.sizes() == torch::IntArrayRef({300, 5}));
  CHECK(b.inputs.min().item<int64_t>() == 0);
  CHECK(b.inputs.max().item<int64_t>() == 6);
  CHECK(b.targets.min().item<int64_t>() == 0);  // every position carries loss
  CHECK_FALSE(torch::equal(b.inputs, b.targets));
  task->prepare(3);
  CHECK(torch::equal(task->batch("train", torch::arange(300)).inputs, b.inputs));
  task->prepare(4);
  CHECK_FALSE(torch::equal(task->batch("train", torch::arange(300)).inputs, b.inputs));
  CHECK_THROWS_WITH(task->batch("val", torch::arange(2)), Catch::Contains("no split 'val'"));
}

TEST_CASE("groklab bench measures the three paths and writes its ratios", "[bench][cli]") {
  TempDir dir("bench");
  const std::string out = (dir.path / "bench.json").string();
  auto r = test::run_groklab("-q bench --rounds 1 --only small --ensemble 2 --json " + out);
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("GEMM peak") && Catch::Contains("a/b"));
  std::ifstream in(out);
  const auto j = nlohmann::json::parse(in);
  REQUIRE(j.at("configs").size() == 1);
  const auto& c = j.at("configs")[0];
  CHECK(c.at("name") == "small");
  CHECK(c.at("ratio_groklab_over_hand_loop").get<double>() > 0);
  CHECK(c.at("fraction_of_gemm_peak").get<double>() > 0);
  CHECK(j.at("gemm_peak_gflops").get<double>() > 0);
  // The peer ran, or the summary says why not.
  CHECK((c.contains("ratio_groklab_over_peer") || j.contains("peer_skipped")));
  // The ensemble of 2 against 2 single runs, on small.
  REQUIRE(j.at("ensembles").size() == 1);
  const auto& e = j.at("ensembles")[0];
  CHECK(e.at("name") == "small");
  CHECK(e.at("members") == 2);
  CHECK(e.at("gain_over_single_runs").get<double>() > 0);
  CHECK(e.at("aggregate_member_steps_per_s").get<double>() > 0);
}

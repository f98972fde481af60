// heuristic_core (head subsets under mean ablation), ntk_distance, and the
// metric-cost benchmark `groklab bench-metrics` (issue 7, items 6 and 7, Cost).
#include <torch/torch.h>  // before Catch2: glog's CHECK must not replace Catch2's

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "builtins.h"
#include "groklab/components.h"
#include "heuristic_core.h"
#include "support.h"

using namespace groklab;
using groklab::metrics::heuristic::Subset;
using test::builtins;
using test::params_for;
using torch::Tensor;

namespace {

std::shared_ptr<Metric> make(const std::string& name, std::map<std::string, Value> set = {}) {
  return builtins().find(Kind::Metric, name)->make_metric(params_for(Kind::Metric, name, std::move(set)));
}

// Classes 0…3; an example is one token, its class, in both splits "train"
// and "test" (two of each class).
class ClassTask final : public Task {
 public:
  TaskSpec spec() const override { return {4, 1, 4}; }
  void prepare(uint64_t) override {}
  std::vector<std::string> splits() const override { return {"train", "test"}; }
  int64_t size(const std::string&) const override { return 8; }
  Batch batch(const std::string&, const Tensor& idx) const override {
    const Tensor x = (idx % 4).to(torch::kLong).view({-1, 1});
    return {x, x.clone()};
  }
};

// One layer of four heads; every head outputs the one-hot of the token
// (d_head 4), and the readout reads head 0 alone, plus 0.1 for class 0. With
// head 0 mean-ablated (the mean one-hot is uniform) every example is called
// class 0: accuracy 1/4; with head 0 kept, accuracy 1.
class OneHeadModel final : public Model {
 public:
  Tensor forward(const Tensor& x) override {
    ForwardHooks h;
    return forward_hooked(x, h);
  }
  ModelInternals internals() const override { return {1, 4, 4, 4}; }
  Tensor forward_hooked(const Tensor& x, ForwardHooks& h) override {
    const int64_t B = x.size(0), T = x.size(1);
    Tensor z = torch::one_hot(x, 4).to(torch::kFloat).unsqueeze(1).expand({B, 4, T, 4});  // [B, heads, T, d_head]
    if (h.record_heads) h.heads.push_back(z);
    if (h.head_gate.defined()) {
      const Tensor g = h.head_gate[0].to(torch::kFloat).view({1, 4, 1, 1});
      const Tensor fill = h.head_fill.defined() ? h.head_fill[0] : torch::zeros({4, T, 4});
      z = z * g + fill * (1 - g);
    }
    const Tensor readout = torch::tensor({1.0f, 0.0f, 0.0f, 0.0f}).view({1, 4, 1, 1});
    return (z * readout).sum(1) + torch::tensor({0.1f, 0.0f, 0.0f, 0.0f});  // [B, T = L, classes]
  }
};

}  // namespace

TEST_CASE("heuristic_core subsets: combinations, keep frequency, Jaccard overlap and the core", "[heuristic_core]") {
  namespace hc = groklab::metrics::heuristic;
  CHECK(hc::kept_heads(4, 0.5) == 2);
  CHECK(hc::kept_heads(24, 0.9) == 2);
  CHECK(hc::kept_heads(5, 0.0) == 5);
  CHECK(hc::kept_heads(5, 1.0) == 0);
  CHECK(hc::combinations(4, 2) == std::vector<Subset>{{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}});
  CHECK(hc::combinations(3, 0) == std::vector<Subset>{{}});
  CHECK(hc::combinations(12, 6).size() == 924);

  const std::vector<Subset> sets{{0, 1, 2}, {0, 2, 3}, {0, 2}};
  CHECK(hc::keep_frequency(sets, 5) == std::vector<double>{1.0, 1.0 / 3, 1.0, 1.0 / 3, 0.0});
  // |{0,2}| / |{0,1,2,3}| = 1/2, 2/3, 2/3.
  CHECK(hc::jaccard(sets[0], sets[1]) == Approx(0.5));
  CHECK(hc::jaccard(sets[0], sets[2]) == Approx(2.0 / 3));
  CHECK(hc::jaccard({}, {}) == 1.0);
  CHECK(hc::jaccard({1}, {2}) == 0.0);
  CHECK(hc::mean_pairwise_jaccard(sets) == Approx((0.5 + 2.0 / 3 + 2.0 / 3) / 3));
  CHECK(std::isnan(hc::mean_pairwise_jaccard({{1}})));
  CHECK(hc::core_of(sets) == Subset{0, 2});
  CHECK(hc::core_of({{0, 1}, {2, 3}}).empty());
  CHECK(std::isnan(hc::keep_frequency({}, 2)[0]));
}

TEST_CASE("hard-concrete gates: the stretched, clamped sample and its keep probability", "[heuristic_core]") {
  namespace hc = groklab::metrics::heuristic;
  const double beta = 2.0 / 3;
  const Tensor log_alpha = torch::tensor({0.0, 10.0, -10.0, 1.0}, torch::kDouble);
  const Tensor u = torch::tensor({0.5, 0.5, 0.5, 0.3}, torch::kDouble);
  const Tensor z = hc::hard_concrete_sample(log_alpha, u);
  // u = 1/2: s = σ(log α / β); z = clamp(1.2 s − 0.1, 0, 1).
  CHECK(z[0].item<double>() == Approx(0.5));
  CHECK(z[1].item<double>() == 1.0);  // 1.2 σ(15) − 0.1 > 1: clamped
  CHECK(z[2].item<double>() == 0.0);  // < 0: clamped
  const double s = 1 / (1 + std::exp(-(std::log(0.3) - std::log(0.7) + 1.0) / beta));
  CHECK(z[3].item<double>() == Approx(1.2 * s - 0.1));
  // P(z > 0) = σ(log α − β ln(0.1 / 1.1)).
  const Tensor p = hc::hard_concrete_keep_probability(log_alpha);
  CHECK(p[0].item<double>() == Approx(1 / (1 + std::exp(beta * std::log(0.1 / 1.1)))));
  CHECK(p[1].item<double>() > 0.9999);
  // Differentiable in log α inside the stretch.
  const Tensor la = torch::zeros({1}, torch::kDouble).set_requires_grad(true);
  hc::hard_concrete_sample(la, torch::full({1}, 0.5, torch::kDouble)).sum().backward();
  CHECK(la.grad().item<double>() == Approx(1.2 * 0.25 / beta));
}

TEST_CASE("heuristic_core exhaustively finds the subsets that keep the one head that matters", "[heuristic_core]") {
  ClassTask task;
  OneHeadModel model;
  const EvalContext ctx{&model, &task, /*step=*/0, /*seed=*/7};

  SECTION("sparsity 1/2: the three pairs with head 0 qualify; the core is head 0") {
    const auto v = make("heuristic_core")->evaluate(ctx);
    CHECK(v.at("heuristic_core_train_accuracy") == 1.0);
    CHECK(v.at("heuristic_core_kept") == 2);
    CHECK(v.at("heuristic_core_qualifying") == 3);
    CHECK(v.at("heuristic_core_subsets") == 3);
    CHECK(v.at("heuristic_core_keep_L0H0") == 1.0);
    CHECK(v.at("heuristic_core_keep_L0H1") == Approx(1.0 / 3));
    CHECK(v.at("heuristic_core_keep_L0H3") == Approx(1.0 / 3));
    CHECK(v.at("heuristic_core_jaccard") == Approx(1.0 / 3));  // {0,a} vs {0,b}: 1/3
    CHECK(v.at("heuristic_core_size") == 1);
    CHECK(v.at("heuristic_core_test_accuracy") == 1.0);
    CHECK(v.at("heuristic_core_test_accuracy_mean") == 1.0);
    CHECK(v.at("heuristic_core_test_accuracy_min") == 1.0);
    CHECK(v.at("heuristic_core_subset_2_test_accuracy") == 1.0);
  }

  SECTION("`subsets` caps what is reported, in a deterministic order") {
    const auto v = make("heuristic_core", {{"subsets", 2}})->evaluate(ctx);
    CHECK(v.at("heuristic_core_qualifying") == 3);
    CHECK(v.at("heuristic_core_subsets") == 2);
    // {0,1} and {0,2}, the first two in lexicographic order among equals.
    CHECK(v.at("heuristic_core_keep_L0H1") == 0.5);
    CHECK(v.at("heuristic_core_keep_L0H2") == 0.5);
    CHECK(v.at("heuristic_core_keep_L0H3") == 0.0);
  }

  SECTION("no head ablated vs every head ablated") {
    const auto none = make("heuristic_core", {{"sparsity", 0.0}})->evaluate(ctx);
    CHECK(none.at("heuristic_core_subsets") == 1);
    CHECK(none.at("heuristic_core_size") == 4);
    CHECK(none.at("heuristic_core_test_accuracy") == 1.0);
    const auto all = make("heuristic_core", {{"sparsity", 1.0}})->evaluate(ctx);
    CHECK(all.at("heuristic_core_subsets") == 0);  // accuracy 1/4 < 1 − tolerance
    CHECK(std::isnan(all.at("heuristic_core_size")));
    CHECK(std::isnan(all.at("heuristic_core_test_accuracy_mean")));
    const auto loose = make("heuristic_core", {{"sparsity", 1.0}, {"tolerance", 1.0}})->evaluate(ctx);
    CHECK(loose.at("heuristic_core_subsets") == 1);
    CHECK(loose.at("heuristic_core_size") == 0);
    CHECK(loose.at("heuristic_core_test_accuracy") == 0.25);  // everything called class 0
  }
}

TEST_CASE("heuristic_core with hard-concrete gates finds the head that matters, deterministically", "[heuristic_core]") {
  ClassTask task;
  OneHeadModel model;
  // Force the gates (4 heads ≤ 12 would be searched exhaustively).
  const std::map<std::string, Value> gates{
      {"exhaustive_max", 0}, {"sparsity", 0.75}, {"subsets", 3}, {"steps", 150}, {"gate_batch", 4}};
  const EvalContext ctx{&model, &task, /*step=*/0, /*seed=*/11};
  const auto a = make("heuristic_core", gates)->evaluate(ctx);
  const auto b = make("heuristic_core", gates)->evaluate(ctx);
  CHECK(a == b);
  CHECK(a.at("heuristic_core_kept") == 1);
  CHECK(a.at("heuristic_core_subsets") == 3);
  CHECK(a.at("heuristic_core_keep_L0H0") == 1.0);
  CHECK(a.at("heuristic_core_size") == 1);
  CHECK(a.at("heuristic_core_jaccard") == 1.0);
  CHECK(a.at("heuristic_core_test_accuracy") == 1.0);
}

TEST_CASE("heuristic_core on a transformer: no ablation is the model's own accuracy", "[heuristic_core]") {
  auto task = builtins().find(Kind::Task, "modular_arithmetic")
                  ->make_task(params_for(Kind::Task, "modular_arithmetic", {{"p", 11}}));
  task->prepare(0);
  auto arch = builtins().find(Kind::Architecture, "transformer")
                  ->make_architecture(params_for(Kind::Architecture, "transformer",
                                                 {{"depth", 2}, {"d_model", 8}, {"heads", 2}, {"d_ff", 16}}));
  torch::manual_seed(3);
  auto model = arch->build(task->spec());
  const EvalContext ctx{model.get(), task.get(), /*step=*/0, /*seed=*/7};
  const auto acc = make("accuracy", {{"split", "test"}})->evaluate(ctx).at("test_accuracy");
  const auto none = make("heuristic_core", {{"sparsity", 0.0}, {"test_examples", 0}})->evaluate(ctx);
  CHECK(none.at("heuristic_core_size") == 4);
  CHECK(none.at("heuristic_core_test_accuracy") == Approx(acc));
  const auto half = make("heuristic_core", {{"tolerance", 1.0}})->evaluate(ctx);
  CHECK(half.at("heuristic_core_qualifying") == 6);  // every pair of the 4 heads
  CHECK(half.count("heuristic_core_keep_L1H1") == 1);
  CHECK(make("heuristic_core", {{"tolerance", 1.0}})->evaluate(ctx) == half);
}

TEST_CASE("ntk_distance: 0 at initialisation, > 0 after training, deterministic, model restored", "[ntk]") {
  auto task = builtins().find(Kind::Task, "modular_arithmetic")
                  ->make_task(params_for(Kind::Task, "modular_arithmetic", {{"p", 11}}));
  task->prepare(0);
  auto arch = builtins().find(Kind::Architecture, "transformer")
                  ->make_architecture(params_for(Kind::Architecture, "transformer",
                                                 {{"depth", 1}, {"d_model", 8}, {"heads", 2}, {"d_ff", 16}}));
  torch::manual_seed(5);
  auto model = arch->build(task->spec());
  model->eval();
  TensorMap initial;
  for (const auto& p : model->named_parameters(true)) initial[p.key()] = p.value().detach().clone();
  EvalContext ctx{model.get(), task.get(), /*step=*/0, /*seed=*/7};
  CHECK(std::isnan(make("ntk_distance")->evaluate(ctx).at("train_ntk_distance")));  // outside a run
  ctx.initial_params = &initial;
  torch::NoGradGuard no_grad;  // as the trainer calls metrics
  auto metric = make("ntk_distance", {{"examples", 4}, {"outputs", 24}});
  CHECK(metric->evaluate(ctx).at("train_ntk_distance") == 0.0);

  {  // a few steps of gradient descent on the training split
    torch::AutoGradMode grad(true);
    const Batch b = task->batch("train", torch::arange(task->size("train")));
    for (int step = 0; step < 5; ++step) {
      const Tensor logits = model->forward(b.inputs);
      const Tensor loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(2)}),
                                                               b.targets.narrow(1, b.targets.size(1) - 1, 1).reshape({-1}));
      std::vector<Tensor> params;
      for (const auto& p : model->parameters())
        if (p.requires_grad()) params.push_back(p);
      const auto g = torch::autograd::grad({loss}, params);
      torch::NoGradGuard inner;
      for (size_t i = 0; i < params.size(); ++i) params[i].sub_(g[i]);
    }
  }
  TensorMap trained;
  for (const auto& p : model->named_parameters(true)) trained[p.key()] = p.value().detach().clone();
  const double d = metric->evaluate(ctx).at("train_ntk_distance");
  CHECK(d > 0);
  CHECK(std::isfinite(d));
  // A fresh instance (K₀ computed anew) gives the same bits; the model keeps its trained values.
  CHECK(make("ntk_distance", {{"examples", 4}, {"outputs", 24}})->evaluate(ctx).at("train_ntk_distance") == d);
  for (const auto& p : model->named_parameters(true)) CHECK(torch::equal(p.value(), trained.at(p.key())));
  const auto bad = TensorMap{};
  ctx.initial_params = &bad;
  CHECK_THROWS_WITH(make("ntk_distance")->evaluate(ctx), Catch::Contains("no initial value"));
  for (const auto& p : model->named_parameters(true)) CHECK(torch::equal(p.value(), trained.at(p.key())));
}

TEST_CASE("groklab bench-metrics prints a row per metric (no time is asserted)", "[bench][cli][heuristic_core]") {
  test::TempDir dir("bench-metrics");
  const auto manifest = dir.path / "tiny.toml";
  std::ofstream(manifest) << R"(
[task]
plugin = "modular_arithmetic"
p = 11
[architecture]
plugin = "transformer"
d_model = 8
heads = 2
d_ff = 16
[optimizer]
plugin = "sgd"
lr = 0.1
[[metrics]]
plugin = "accuracy"
split = "test"
[[metrics]]
plugin = "weight_norm"
every = 10
[run]
steps = 100
eval_every = 5
)";
  const std::string json_path = (dir.path / "cost.json").string();
  auto r = test::run_groklab("-q bench-metrics " + manifest.string() +
                             " run.seed=1 --steps 3 --warmup 1 --add ntk_distance:20 --add heuristic_core --json " +
                             json_path);
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("0 accuracy") && Catch::Contains("1 weight_norm") &&
                        Catch::Contains("2 ntk_distance") && Catch::Contains("3 heuristic_core") &&
                        Catch::Contains("all metrics"));
  std::ifstream in(json_path);
  const auto j = nlohmann::json::parse(in);
  REQUIRE(j.at("configs").size() == 1);
  const auto& rows = j["configs"][0].at("metrics");
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].at("every") == 5);
  CHECK(rows[1].at("every") == 10);
  CHECK(rows[2].at("every") == 20);
  CHECK(rows[3].at("every") == 10);  // --add without a cadence: the largest of the manifest's
  for (const auto& row : rows) CHECK(row.at("fraction").get<double>() >= 0);
  CHECK(j["configs"][0].at("step_seconds").get<double>() > 0);

  // An ensemble is measured as its member 0 (a member's cost is a single run's).
  const std::string ensemble_json = (dir.path / "ensemble.json").string();
  auto e = test::run_groklab("-q bench-metrics " + manifest.string() +
                             " run.ensemble=2 --steps 2 --warmup 1 --json " + ensemble_json);
  INFO(e.out);
  CHECK(e.status == 0);
  std::ifstream ein(ensemble_json);
  CHECK_THAT(nlohmann::json::parse(ein)["configs"][0].at("name").get<std::string>(),
             Catch::Contains("member 0 of run.ensemble = 2"));
  // A cadence that is not a whole number of steps >= 1 is refused, naming the argument.
  for (const char* bad : {"ntk_distance:x", "ntk_distance:0", "ntk_distance:5s"}) {
    auto b = test::run_groklab("-q bench-metrics " + manifest.string() + " --steps 2 --add " + bad);
    CHECK(b.status != 0);
    CHECK_THAT(b.out, Catch::Contains(std::string("--add ") + bad + ": expected NAME:EVERY"));
  }
}

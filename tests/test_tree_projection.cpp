// Tree projections (Murty et al. 2023, issue 7): the greedy tree search on
// hand-made SCI tables, bracketing F1 on known tree pairs, SCI through the
// attention masking on a model whose states are hand-computable, the seeded
// random splits, and the tasks' sentences and gold trees.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <set>

#include "builtins.h"
#include "groklab/components.h"
#include "tree_projection.h"

using namespace groklab;
using groklab::metrics::Bracketing;
using groklab::metrics::project;
using groklab::metrics::Projection;
using groklab::metrics::SciTable;
using groklab::metrics::Span;
using groklab::metrics::SplitMix64;
using test::builtins;
using test::params_for;

namespace {

using torch::Tensor;

std::shared_ptr<Metric> metric(const std::string& name, std::map<std::string, Value> set = {}) {
  return builtins().find(Kind::Metric, name)->make_metric(params_for(Kind::Metric, name, std::move(set)));
}

std::shared_ptr<Task> make_task(const std::string& name, std::map<std::string, Value> set = {}) {
  auto t = builtins().find(Kind::Task, name)->make_task(params_for(Kind::Task, name, std::move(set)));
  t->prepare(3);
  return t;
}

// One layer whose state at position p is Σ of the one-hot tokens of the keys
// it may attend to (k ≤ p and allowed by hooks.attend): SCI is computable by hand.
class BagOfKeys final : public Model {
 public:
  explicit BagOfKeys(int64_t vocab) : v_(vocab) {}
  Tensor forward(const Tensor& x) override { return torch::zeros({x.size(0), 1, v_}); }
  ModelInternals internals() const override { return {1, 1, v_, v_}; }
  Tensor forward_hooked(const Tensor& x, ForwardHooks& h) override {
    const int64_t B = x.size(0), T = x.size(1);
    const Tensor onehot = torch::one_hot(x, v_).to(torch::kFloat);              // [B, T, V]
    Tensor keys = torch::ones({T, T}, torch::kBool).tril().expand({B, T, T});   // [B, query, key]
    if (h.attend.defined()) keys = keys.logical_and(h.attend.dim() == 2 ? h.attend.unsqueeze(1) : h.attend);
    if (h.record_hidden) h.hidden = {onehot, torch::bmm(keys.to(torch::kFloat), onehot)};
    return forward(x);
  }

 private:
  int64_t v_;
};

// Fixed sentences (optionally with gold trees) and no training data.
class Sentences final : public Task {
 public:
  explicit Sentences(std::vector<Sentence> s) : s_(std::move(s)) {}
  TaskSpec spec() const override { return {8, 8, 8}; }
  void prepare(uint64_t) override {}
  std::vector<std::string> splits() const override { return {"train"}; }
  int64_t size(const std::string&) const override { return static_cast<int64_t>(s_.size()); }
  Batch batch(const std::string&, const Tensor&) const override { throw std::logic_error("unused"); }
  Tensor sentence_indices(const std::string&) const override { return torch::arange(size("train"), torch::kLong); }
  Sentence sentence(const std::string&, int64_t i) const override { return s_[static_cast<size_t>(i)]; }

 private:
  std::vector<Sentence> s_;
};

// A causal transformer of width 8 (2 heads) for task, seeded with 0.
std::shared_ptr<Model> tiny_transformer(const Task& task, int64_t depth) {
  auto arch = builtins().find(Kind::Architecture, "transformer")
                  ->make_architecture(params_for(Kind::Architecture, "transformer",
                                                 {{"d_model", 8}, {"heads", 2}, {"d_ff", 16}, {"depth", depth},
                                                  {"causal", true}, {"readout", "all"}}));
  torch::manual_seed(0);
  return arch->build(task.spec());
}

EvalContext context(Model& m, const Task& t, uint64_t seed) {
  EvalContext ctx;
  ctx.model = &m;
  ctx.task = &t;
  ctx.seed = seed;
  return ctx;
}

}  // namespace

TEST_CASE("tree search: the greedy best tree of a hand-made SCI table, scored against random splits",
          "[metrics][tree]") {
  // n = 4 with ((w0 w1) (w2 w3)) best: the root's splits score 1.1, 1.8, 1.1.
  SciTable sci(4);
  for (int64_t i = 0; i < 4; ++i) sci.at(i, i) = 1.0;
  sci.at(0, 1) = 0.9, sci.at(2, 3) = 0.9, sci.at(1, 2) = 0.5, sci.at(0, 2) = 0.1, sci.at(1, 3) = 0.1;
  sci.at(0, 3) = 1.0;
  std::set<double> scores;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    SplitMix64 rng(seed), copy(seed);
    const Projection p = project(sci, rng);
    CHECK(p.spans == std::vector<Span>{{0, 3}, {0, 1}, {2, 3}});
    const int64_t r = static_cast<int64_t>(copy.below(3));  // the root's random split; the others have one
    const double expect = 1.8 - (sci.at(0, r) + sci.at(r + 1, 3));
    CHECK(p.score == Approx(expect));
    scores.insert(std::round(p.score * 10) / 10);
  }
  CHECK(scores == std::set<double>{0.0, 0.7});  // r = 1 and r ∈ {0, 2} both drawn

  // Left-branching best tree over 4 words: (((w0 w1) w2) w3).
  SciTable left(4);
  for (int64_t i = 0; i < 4; ++i) left.at(i, i) = 0.5;
  left.at(0, 1) = 0.9, left.at(0, 2) = 0.95;
  SplitMix64 rng(1);
  CHECK(project(left, rng).spans == std::vector<Span>{{0, 3}, {0, 2}, {0, 1}});

  // Determinism: the same seed draws the same splits.
  SciTable noisy(12);
  std::mt19937_64 gen(5);
  for (int64_t i = 0; i < 12; ++i)
    for (int64_t j = i; j < 12; ++j) noisy.at(i, j) = static_cast<double>(gen() % 1000) / 1000.0;
  SplitMix64 a(42, "tree_structuredness"), b(42, "tree_structuredness"), c(43, "tree_structuredness");
  const Projection pa = project(noisy, a), pb = project(noisy, b), pc = project(noisy, c);
  CHECK(pa.score == pb.score);
  CHECK(pa.spans == pc.spans);  // the best tree does not depend on the seed
  CHECK(pa.score != pc.score);
  CHECK(pa.spans.size() == 11u);
}

TEST_CASE("tparseval: corpus-level unlabelled bracketing F1 over spans of two words or more",
          "[metrics][tree]") {
  Bracketing same;
  same.add({{0, 3}, {0, 1}, {2, 3}}, {{2, 3}, {0, 3}, {0, 1}});
  CHECK(same.f1() == 1.0);

  Bracketing corpus;
  corpus.add({{0, 3}, {0, 1}, {2, 3}, {1, 1}}, {{0, 3}, {1, 3}, {2, 3}});  // 2 of 3; (1, 1) ignored
  CHECK(corpus.f1() == Approx(2.0 / 3.0));
  corpus.add({{0, 1}}, {{1, 2}});  // 0 of 1
  // Corpus-level: 2 matched of 4 predicted and 4 gold (a mean over sentences would be 1/3).
  CHECK(corpus.f1() == Approx(0.5));
  CHECK(Bracketing().f1() == 0.0);
}

TEST_CASE("tree_structuredness: SCI through the attention masking of a hand-computable model",
          "[metrics][tree]") {
  // Tokens S = 0, a = 1, b = 2, c = 3 (orthonormal states). Outer states: S+a,
  // S+a+b, S+a+b+c. SCI(0, 0) = SCI(0, 1) = SCI(0, 2) = 1; SCI(1, 2): inner
  // (S+b) + (S+b+c) vs outer 2S+2a+2b+c: 9 / (3·√13); SCI(2, 2): (S+c) vs
  // S+a+b+c: 2 / (√2 · 2). Root splits: k = 0: 1 + 3/√13, k = 1: 1 + 1/√2.
  BagOfKeys model(4);
  const double k0 = 1 + 3 / std::sqrt(13.0), k1 = 1 + 1 / std::sqrt(2.0);
  Sentence s{{0, 1, 2, 3}, {}};
  SECTION("tscore with the seeded random split, tparseval against gold trees") {
    s.gold = {{1, 3}, {2, 3}};  // the projected tree (1-based words)
    Sentence other = s;
    other.gold = {{1, 3}, {1, 2}};
    Sentences same({s}), half({other});
    for (uint64_t seed : {0u, 1u, 2u, 3u}) {
      auto v = metric("tree_structuredness")->evaluate(context(model, same, seed));
      SplitMix64 rng(seed, "tree_structuredness");
      const double expect = rng.below(2) == 0 ? 0.0 : k0 - k1;
      CHECK(v.at("train_tscore") == Approx(expect).margin(1e-6));
      CHECK(v.at("train_tparseval") == 1.0);
    }
    CHECK(metric("tparseval")->evaluate(context(model, half, 0)).at("train_tparseval") == 0.5);
    CHECK(metric("tparseval")->evaluate(context(model, half, 0)).count("train_tscore") == 0);
  }
  SECTION("the mean over sentences; no gold tree: no tparseval, and tparseval refuses") {
    Sentences two({s, s});
    auto v = metric("tree_structuredness", {{"batch_size", 2}})->evaluate(context(model, two, 9));
    SplitMix64 rng(9, "tree_structuredness");
    double sum = 0;
    for (int i = 0; i < 2; ++i) sum += rng.below(2) == 0 ? 0.0 : k0 - k1;
    CHECK(v.at("train_tscore") == Approx(sum / 2).margin(1e-6));
    CHECK(v.count("train_tparseval") == 0);
    CHECK_THROWS_WITH(metric("tparseval")->evaluate(context(model, two, 0)), Catch::Contains("gold trees"));
  }
  SECTION("a task without sentences is a clear error") {
    auto mod = make_task("modular_arithmetic");
    CHECK_THROWS_WITH(metric("tree_structuredness")->evaluate(context(model, *mod, 0)),
                      Catch::Contains("tree_structuredness needs a task with sentences"));
  }
}

TEST_CASE("tree_structuredness on a transformer: seeded, the same in any batching, gold F1 in [0, 1]",
          "[metrics][tree]") {
  auto task = make_task("dyck", {{"k", 2}, {"max_depth", 3}, {"train_size", 200}, {"eval_size", 20},
                                 {"max_len", 12}});
  auto m = tiny_transformer(*task, 2);
  auto tree = [&](uint64_t seed, int64_t batch) {
    return metric("tree_structuredness", {{"sentences", 20}, {"batch_size", batch}})
        ->evaluate(context(*m, *task, seed));
  };
  const auto a = tree(1, 7), b = tree(1, 0), c = tree(2, 7);
  CHECK(a.at("train_tscore") == Approx(b.at("train_tscore")).epsilon(1e-6));
  CHECK(a.at("train_tscore") != c.at("train_tscore"));
  CHECK(a.at("train_tscore") > 0.0);  // the best split never scores below a random one
  CHECK(a.at("train_tparseval") >= 0.0);
  CHECK(a.at("train_tparseval") <= 1.0);
  CHECK(a == tree(1, 7));
}

TEST_CASE("dyck sentences: START and the brackets, the gold tree of the bracket structure", "[metrics][tree][dyck]") {
  auto task = make_task("dyck", {{"k", 2}, {"max_depth", 4}, {"train_size", 300}, {"eval_size", 10}});
  const Tensor idx = task->sentence_indices("train");
  REQUIRE(idx.numel() == 300);
  int checked = 0;
  for (int64_t i = 0; i < 300; ++i) {
    const Sentence s = task->sentence("train", i);
    const Batch b = task->batch("train", torch::tensor({i}, torch::kLong));
    const auto n = static_cast<int64_t>(s.inputs.size()) - 1;
    CHECK(torch::equal(torch::tensor(s.inputs, torch::kLong), b.inputs[0].narrow(0, 0, n + 1)));
    // A full binary tree over n words: n − 1 distinct constituents, the root
    // among them, and every matched pair (x … x) is one.
    std::set<std::pair<int64_t, int64_t>> gold(s.gold.begin(), s.gold.end());
    CHECK(static_cast<int64_t>(gold.size()) == n - 1);
    CHECK(gold.count({1, n}) == 1);
    std::vector<int64_t> stack;
    for (int64_t p = 1; p <= n; ++p) {
      if (s.inputs[static_cast<size_t>(p)] < 2) {
        stack.push_back(p);
      } else {
        CHECK(gold.count({stack.back(), p}) == 1);
        stack.pop_back();
      }
    }
    ++checked;
  }
  CHECK(checked == 300);
}

TEST_CASE("question_formation sentences: quest lines cut before the marker, final '.' removed",
          "[metrics][tree][mccoy]") {
  auto task = make_task("question_formation", {{"train_source", Value(std::string("shipped"))}});
  const Tensor idx = task->sentence_indices("train");
  CHECK(torch::equal(idx, task->scored("train")));
  std::set<int64_t> full_stop, marker;
  for (int64_t k = 0; k < 20; ++k) {
    const int64_t i = idx[k].item<int64_t>();
    const Sentence s = task->sentence("train", i);
    const Batch b = task->batch("train", torch::tensor({i}, torch::kLong));
    const auto n = static_cast<int64_t>(s.inputs.size());
    // The line's tokens before its "." (input position n) and marker (n + 1).
    CHECK(torch::equal(torch::tensor(s.inputs, torch::kLong), b.inputs[0].narrow(0, 0, n)));
    full_stop.insert(b.inputs[0][n].item<int64_t>());
    marker.insert(b.inputs[0][n + 1].item<int64_t>());
    for (int64_t t : s.inputs) CHECK((full_stop.count(t) == 0 && marker.count(t) == 0));
    // The gold tree from the grammar's parse: a full binary tree over the n − 1 words.
    std::set<std::pair<int64_t, int64_t>> gold(s.gold.begin(), s.gold.end());
    CHECK(gold.size() == s.gold.size());
    CHECK(static_cast<int64_t>(gold.size()) == n - 2);
    CHECK(gold.count({1, n - 1}) == 1);
  }
  CHECK(full_stop.size() == 1u);  // always "."
  CHECK(marker.size() == 1u);     // always "quest"
}

TEST_CASE("question_formation and tense_inflection: tparseval against the grammar's gold trees",
          "[metrics][tree][mccoy]") {
  for (const char* name : {"question_formation", "tense_inflection"}) {
    INFO(name);
    auto task = make_task(name, {{"train_size", Value(int64_t{1000})}});
    const Tensor idx = task->sentence_indices("train");
    REQUIRE(idx.numel() > 100);
    // The scoring fed the gold trees themselves: F1 = 1; against right-branching trees below 1.
    Bracketing perfect, right;
    for (int64_t k = 0; k < idx.numel(); ++k) {
      const Sentence s = task->sentence("train", idx[k].item<int64_t>());
      const auto n = static_cast<int64_t>(s.inputs.size()) - 1;
      REQUIRE(static_cast<int64_t>(s.gold.size()) == n - 1);
      std::vector<Span> gold, chain;
      for (const auto& g : s.gold) gold.emplace_back(g.first - 1, g.second - 1);
      for (int64_t i = 0; i + 1 < n; ++i) chain.emplace_back(i, n - 1);
      perfect.add(gold, gold);
      right.add(chain, gold);
    }
    CHECK(perfect.f1() == 1.0);
    CHECK(right.f1() < 1.0);
    CHECK(right.f1() > 0.0);
    // Through a model: tree_structuredness reports tparseval, and tparseval accepts the task.
    auto m = tiny_transformer(*task, 1);
    const std::map<std::string, Value> few{{"sentences", 4}, {"max_words", 8}};
    const auto v = metric("tree_structuredness", few)->evaluate(context(*m, *task, 1));
    REQUIRE(v.count("train_tparseval") == 1);
    CHECK(v.at("train_tparseval") >= 0.0);
    CHECK(v.at("train_tparseval") <= 1.0);
    CHECK(metric("tparseval", few)->evaluate(context(*m, *task, 1)).at("train_tparseval") == v.at("train_tparseval"));
  }
}

// The forward hooks of the transformer and the analysis metrics (issue 7):
// each formula on hand-computable cases, per-metric cadence, and training
// that is bit-identical with and without metrics.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <random>

#include "builtins.h"
#include "groklab/components.h"
#include "groklab/manifest.h"
#include "groklab/trainer.h"
#include "support.h"

using namespace groklab;
using test::builtins;
using test::params_for;

namespace {

using torch::Tensor;

std::shared_ptr<Model> transformer(std::map<std::string, Value> set, const TaskSpec& spec, uint64_t seed = 0) {
  std::map<std::string, Value> v{{"d_model", 8}, {"heads", 2}, {"d_ff", 16}};
  for (auto& [k, x] : set) v[k] = x;
  auto arch = builtins().find(Kind::Architecture, "transformer")
                  ->make_architecture(params_for(Kind::Architecture, "transformer", v));
  torch::manual_seed(seed);
  auto m = arch->build(spec);
  m->eval();
  return m;
}

std::shared_ptr<Metric> metric(const std::string& name, std::map<std::string, Value> set = {}) {
  return builtins().find(Kind::Metric, name)->make_metric(params_for(Kind::Metric, name, std::move(set)));
}

// One split "train" of fixed examples; the targets (-1 = padding) give the lengths.
class FixedTask final : public Task {
 public:
  FixedTask(Tensor inputs, Tensor targets, int64_t vocab) : x_(std::move(inputs)), y_(std::move(targets)), v_(vocab) {}
  TaskSpec spec() const override { return {v_, x_.size(1), v_}; }
  void prepare(uint64_t) override {}
  std::vector<std::string> splits() const override { return {"train"}; }
  int64_t size(const std::string&) const override { return x_.size(0); }
  Batch batch(const std::string&, const Tensor& idx) const override {
    return {x_.index_select(0, idx), y_.index_select(0, idx)};
  }

 private:
  Tensor x_, y_;
  int64_t v_;
};

// A model whose hooks report prescribed internals: attention probabilities
// [heads, T, T] (every layer and example alike), and a last hidden state
// whose last position is row inputs[b, 0] of `rows`.
class Prescribed final : public Model {
 public:
  Prescribed(int64_t layers, Tensor attention, Tensor rows)
      : layers_(layers), att_(std::move(attention)), rows_(std::move(rows)) {
    auto holder = register_module("embed", std::make_shared<torch::nn::Module>());
    embed = holder->register_parameter("weight", torch::zeros({4, 2}));
  }
  Tensor forward(const Tensor& x) override { return torch::zeros({x.size(0), 1, 4}); }
  ModelInternals internals() const override {
    const int64_t d = rows_.defined() ? rows_.size(1) : 2;
    return {layers_, att_.defined() ? att_.size(0) : 1, d, d};
  }
  Tensor forward_hooked(const Tensor& x, ForwardHooks& h) override {
    const int64_t B = x.size(0), T = x.size(1);
    for (int64_t l = 0; l < layers_; ++l)
      if (h.record_attention) h.attention.push_back(att_.unsqueeze(0).expand({B, att_.size(0), T, T}));
    if (h.record_hidden) {
      Tensor last = rows_.index_select(0, x.select(1, 0));
      h.hidden.push_back(last.unsqueeze(1).expand({B, T, last.size(1)}).contiguous());
    }
    return forward(x);
  }
  Tensor embed;

 private:
  int64_t layers_;
  Tensor att_, rows_;
};

EvalContext context(Model& m, const Task& t) {
  EvalContext ctx;
  ctx.model = &m;
  ctx.task = &t;
  return ctx;
}

}  // namespace

TEST_CASE("transformer forward hooks: recording, masking, head ablation", "[metrics][hooks]") {
  const TaskSpec spec{6, 6, 6};
  auto m = transformer({{"depth", 2}, {"causal", true}, {"readout", "all"}}, spec);
  torch::NoGradGuard no_grad;
  const Tensor x = torch::tensor({0, 1, 2, 3, 4, 5, 0, 5, 4, 3, 2, 1}, torch::kLong).view({2, 6});
  const Tensor plain = m->forward(x);
  REQUIRE(m->internals().layers == 2);
  REQUIRE(m->internals().d_head == 4);

  SECTION("hooks that change nothing give the same logits and record every layer") {
    ForwardHooks h;
    h.record_hidden = h.record_attention = h.record_heads = true;
    CHECK(torch::equal(m->forward_hooked(x, h), plain));
    REQUIRE(h.hidden.size() == 3);
    REQUIRE(h.attention.size() == 2);
    REQUIRE(h.heads.size() == 2);
    CHECK(h.hidden[2].sizes() == torch::IntArrayRef({2, 6, 8}));
    CHECK(h.attention[0].sizes() == torch::IntArrayRef({2, 2, 6, 6}));
    CHECK(h.heads[1].sizes() == torch::IntArrayRef({2, 2, 6, 4}));
    CHECK(torch::allclose(h.attention[1].sum(-1), torch::ones({2, 2, 6})));
    CHECK(h.attention[0].triu(1).abs().max().item<float>() == 0.0f);  // causal
  }

  SECTION("masking: attending to every key is the outer pass; a span sees only its keys") {
    ForwardHooks all;
    all.attend = torch::ones({2, 6}, torch::kBool);
    all.record_hidden = true;
    CHECK(torch::allclose(m->forward_hooked(x, all), plain, 0, 1e-6));

    // Keys restricted to the start token and positions 2..4: the states at
    // 2..4 ignore what stands at positions 1 and 5.
    Tensor keys = torch::zeros({2, 6}, torch::kBool);
    keys.select(1, 0).fill_(true);
    keys.narrow(1, 2, 3).fill_(true);
    ForwardHooks a, b;
    a.attend = b.attend = keys;
    a.record_hidden = b.record_hidden = a.record_attention = true;
    m->forward_hooked(x, a);
    Tensor y = x.clone();
    y.select(1, 1).fill_(3);
    y.select(1, 5).fill_(0);
    m->forward_hooked(y, b);
    CHECK(torch::equal(a.hidden[2].narrow(1, 2, 3), b.hidden[2].narrow(1, 2, 3)));
    CHECK_FALSE(torch::equal(a.hidden[2].select(1, 1), b.hidden[2].select(1, 1)));
    CHECK(a.attention[1].select(3, 1).abs().max().item<float>() == 0.0f);
  }

  SECTION("head ablation: none changes nothing, a head replaced by its own output changes nothing, all "
          "heads removes every interaction between positions") {
    ForwardHooks none;
    none.head_gate = torch::ones({2, 2});
    CHECK(torch::equal(m->forward_hooked(x, none), plain));

    const Tensor one = x.narrow(0, 0, 1);
    ForwardHooks rec;
    rec.record_heads = true;
    const Tensor ref = m->forward_hooked(one, rec);
    ForwardHooks own;
    own.head_gate = torch::tensor({1.0f, 0.0f, 0.0f, 1.0f}).view({2, 2});
    own.head_fill = torch::stack({rec.heads[0][0], rec.heads[1][0]});  // [2, heads, T, d_head]
    CHECK(torch::allclose(m->forward_hooked(one, own), ref, 1e-5, 1e-6));

    ForwardHooks all, all2;
    all.head_gate = all2.head_gate = torch::zeros({2, 2});
    Tensor y = x.clone();
    y.narrow(1, 0, 5).fill_(2);  // every position but the last changes
    const Tensor l1 = m->forward_hooked(x, all).select(1, 5);
    const Tensor l2 = m->forward_hooked(y, all2).select(1, 5);
    CHECK(torch::allclose(l1, l2, 1e-5, 1e-6));
    CHECK_FALSE(torch::allclose(plain.select(1, 5), m->forward(y).select(1, 5), 1e-5, 1e-6));
  }

  SECTION("gates are differentiable") {
    torch::AutoGradMode grad(true);
    ForwardHooks g;
    g.head_gate = torch::full({2, 2}, 0.5, torch::requires_grad());
    m->forward_hooked(x, g).sum().backward();
    REQUIRE(g.head_gate.grad().defined());
    CHECK(g.head_gate.grad().abs().sum().item<float>() > 0);
  }
}

TEST_CASE("attention_sparsity and attention_entropy on uniform and one-hot attention", "[metrics]") {
  // Three examples of 4 positions; the last example has length 3 (padding at the end).
  const Tensor x = torch::tensor({0, 1, 2, 3, 1, 2, 3, 0, 2, 3, 0, 0}, torch::kLong).view({3, 4});
  Tensor y = x.clone();
  y[2][3] = -1;
  FixedTask task(x, y, 4);
  const double lens[] = {4, 4, 3};
  // Uniform causal attention: row i spreads over keys 0..i, H = ln(i+1).
  Tensor uniform = torch::ones({4, 4}, torch::kDouble).tril();
  uniform = (uniform / uniform.sum(1, true)).unsqueeze(0).expand({2, 4, 4});
  double sum_h = 0, positions = 0, murty = 0;
  for (double n : lens) {
    double s = 0;
    for (int i = 0; i < n; ++i) s += std::log(i + 1.0);
    murty += s;
    sum_h += s;
    positions += n;
  }
  murty = -murty / 3;  // (1/L) Σ_l over 2 identical layers = one layer's sum

  Prescribed uni(2, uniform, Tensor());
  auto ctx = context(uni, task);
  CHECK(metric("attention_sparsity")->evaluate(ctx).at("train_attention_sparsity") == Approx(murty).epsilon(1e-12));
  CHECK(metric("attention_entropy")->evaluate(ctx).at("train_attention_entropy") ==
        Approx(sum_h / positions).epsilon(1e-12));

  // One-hot (each query on itself): zero entropy. Heads that disagree are averaged first.
  Prescribed hot(2, torch::eye(4).unsqueeze(0).expand({2, 4, 4}), Tensor());
  ctx = context(hot, task);
  CHECK(metric("attention_sparsity")->evaluate(ctx).at("train_attention_sparsity") == 0.0);
  Tensor split = torch::stack({torch::eye(4), torch::zeros({4, 4}).index_fill(1, torch::tensor({0}), 1.0)});
  Prescribed halves(1, split, Tensor());
  ctx = context(halves, task);
  // Row 0: both heads on key 0 (H = 0); rows 1..3: ½ on key 0, ½ on key i (H = ln 2).
  CHECK(metric("attention_entropy")->evaluate(ctx).at("train_attention_entropy") ==
        Approx((3 * std::log(2.0) + 3 * std::log(2.0) + 2 * std::log(2.0)) / positions).epsilon(1e-12));

  // The real transformer with q = k = 0 attends uniformly over its causal prefix.
  auto m = transformer({{"depth", 2}, {"causal", true}, {"readout", "all"}}, task.spec());
  {
    torch::NoGradGuard g;
    for (auto& p : m->named_parameters())
      if (p.key().find("q_proj") != std::string::npos || p.key().find("k_proj") != std::string::npos)
        p.value().zero_();
  }
  ctx = context(*m, task);
  CHECK(metric("attention_sparsity", {{"batch_size", 2}})->evaluate(ctx).at("train_attention_sparsity") ==
        Approx(murty).epsilon(1e-6));
}

TEST_CASE("feature_compressibility: ranks on a diagonal C, Clauset's fit on a known power law", "[metrics]") {
  // Z = diag(√λ) over 4 examples: C = ZᵀZ = diag(4, 1, 1, 0).
  const Tensor x = torch::arange(4, torch::kLong).view({4, 1});
  FixedTask task(x, x.clone(), 4);
  Prescribed diag(1, Tensor(), torch::diag(torch::tensor({2.0, 1.0, 1.0, 0.0})).to(torch::kFloat));
  auto ctx = context(diag, task);
  auto r = metric("feature_compressibility", {{"min_tail", 2}})->evaluate(ctx);
  CHECK(r.at("train_feature_rank") == 3);
  CHECK(r.at("train_feature_stable_rank") == Approx(std::sqrt(18.0) / 4).epsilon(1e-12));
  const double p1 = 4.0 / 6, p2 = 1.0 / 6;
  CHECK(r.at("train_feature_effective_rank") ==
        Approx(std::exp(-(p1 * std::log(p1) + 2 * p2 * std::log(p2)))).epsilon(1e-12));

  // λ: 750 draws from a power law p(x) ∝ x^−2.5 on x ≥ 1, below it 250 from U(0.1, 0.9).
  std::mt19937_64 gen(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int64_t n = 1000;
  std::vector<double> lambda;
  for (int64_t i = 0; i < n; ++i)
    lambda.push_back(i < 750 ? std::pow(1 - u(gen), -1 / 1.5) : 0.1 + 0.8 * u(gen));
  const Tensor rows = torch::diag(torch::tensor(lambda, torch::kDouble).sqrt()).to(torch::kFloat);
  FixedTask big(torch::arange(n, torch::kLong).view({n, 1}), torch::zeros({n, 1}, torch::kLong), n);
  Prescribed pl(1, Tensor(), rows);
  ctx = context(pl, big);
  r = metric("feature_compressibility")->evaluate(ctx);
  CHECK(r.at("train_feature_rank") == n);
  // α̂'s standard error is (α − 1)/√750 ≈ 0.055.
  CHECK(r.at("train_feature_powerlaw_alpha") == Approx(2.5).margin(0.15));
  CHECK(r.at("train_feature_powerlaw_xmin") == Approx(1.0).margin(0.25));
}

TEST_CASE("fourier_sparsity: one frequency vs a flat spectrum", "[metrics]") {
  const int64_t p = 11, K = (p - 1) / 2;
  FixedTask task(torch::zeros({1, 3}, torch::kLong), torch::zeros({1, 3}, torch::kLong), p);
  Prescribed m(1, Tensor(), Tensor());
  auto ctx = context(m, task);
  auto fs = metric("fourier_sparsity");
  torch::NoGradGuard g;
  // E[t, j] = cos(2π·3t/p): all of it at frequency 3.
  m.embed.set_data(torch::cos(torch::arange(p, torch::kDouble) * (2 * M_PI * 3 / p)).unsqueeze(1).expand({p, 5}).to(torch::kFloat));
  CHECK(fs->evaluate(ctx).at("fourier_sparsity") == Approx(1.0 - 1.0 / K).epsilon(1e-5));
  // E = a spike at token 0: every frequency has magnitude 1.
  m.embed.set_data(torch::zeros({p, 5}).index_fill(0, torch::tensor({0}), 1.0));
  CHECK(fs->evaluate(ctx).at("fourier_sparsity") == Approx(0.0).margin(1e-9));
  // Too few rows for the task's num_classes: an error naming the parameter.
  m.embed.set_data(torch::zeros({4, 2}));
  CHECK_THROWS_WITH(fs->evaluate(ctx), Catch::Contains("embed.weight"));
}

TEST_CASE("weight_norm per layer, normalised by depth as Murty et al.", "[metrics]") {
  auto m = transformer({{"depth", 3}}, {5, 3, 5});
  FixedTask task(torch::zeros({1, 3}, torch::kLong), torch::zeros({1, 3}, torch::kLong), 5);
  auto ctx = context(*m, task);
  auto r = metric("weight_norm")->evaluate(ctx);
  double total = 0, layer1 = 0;
  for (const auto& p : m->named_parameters()) {
    const double sq = p.value().to(torch::kDouble).pow(2).sum().item<double>();
    total += sq;
    if (p.key().rfind("blocks.1.", 0) == 0) layer1 += sq;
  }
  CHECK(r.at("weight_norm") == Approx(std::sqrt(total)).epsilon(1e-12));
  CHECK(r.at("weight_norm_per_layer") == Approx(std::sqrt(total) / 3).epsilon(1e-12));
  CHECK(r.at("weight_norm_layer_1") == Approx(std::sqrt(layer1)).epsilon(1e-12));
  CHECK(r.count("weight_norm_layer_2") == 1);
  CHECK(r.count("weight_norm_layer_3") == 0);
  CHECK(metric("weight_norm", {{"layer_prefix", ""}})->evaluate(ctx).count("weight_norm_layer_0") == 0);
}

namespace {

// A small modular-addition run on the built-in plugins, with extra manifest text.
const char* kSmallRun = R"(
[task]
plugin = "modular_arithmetic"
p = 11
[architecture]
plugin = "transformer"
d_model = 16
heads = 2
d_ff = 32
dropout = 0.1
[optimizer]
plugin = "sgd"
lr = 0.1
[run]
steps = 7
eval_every = 2
checkpoint_every = 3
)";

struct Collect : TrainObserver {
  std::vector<std::pair<int64_t, std::map<std::string, double>>> evals;
  std::vector<std::string> hashes;
  void on_eval(int64_t step, const std::map<std::string, double>& v) override { evals.emplace_back(step, v); }
  void on_checkpoint(const Checkpoint& c) override { hashes.push_back(std::to_string(c.step) + ":" + c.params_hash); }
};

Collect train(const std::string& text, const std::vector<std::string>& overrides = {}) {
  Composer composer(builtins());
  Trainer t(composer.compose_string(text, "<test>", overrides), builtins());
  Collect c;
  t.run(c);
  return c;
}

}  // namespace

TEST_CASE("per-metric cadence, and gradient and update norms of the evaluated step", "[metrics][trainer]") {
  auto c = train(std::string(kSmallRun) + R"(
[[metrics]]
plugin = "grad_norm"
[[metrics]]
plugin = "update_norm"
every = 3
)");
  std::vector<int64_t> steps;
  for (const auto& [s, v] : c.evals) steps.push_back(s);
  CHECK(steps == std::vector<int64_t>{2, 3, 4, 6, 7});
  for (const auto& [s, v] : c.evals) {
    INFO("step " << s);
    CHECK(v.count("grad_norm") == (s % 2 == 0 || s == 7 ? 1u : 0u));
    CHECK(v.count("update_norm") == (s % 3 == 0 || s == 7 ? 1u : 0u));
    // Plain SGD: θ_t − θ_{t−1} = −lr · g_t.
    if (v.count("grad_norm") && v.count("update_norm"))
      CHECK(v.at("update_norm") == Approx(0.1 * v.at("grad_norm")).epsilon(1e-5));
    if (v.count("grad_norm")) CHECK(v.at("grad_norm") > 0);
  }
  // `every` is a parameter of every metric, checked like the others.
  Composer composer(builtins());
  CHECK_THROWS_WITH(composer.compose_string(std::string(kSmallRun) + "[[metrics]]\nplugin = \"loss\"\nevery = -1\n", "<t>"),
                    Catch::Contains("metrics.0.every"));
}

TEST_CASE("training is bit-identical with and without the analysis metrics", "[metrics][trainer][determinism]") {
  const std::string all = std::string(kSmallRun) + R"(
[[metrics]]
plugin = "accuracy"
[[metrics]]
plugin = "feature_compressibility"
min_tail = 2
[[metrics]]
plugin = "fourier_sparsity"
[[metrics]]
plugin = "attention_entropy"
[[metrics]]
plugin = "attention_sparsity"
max_examples = 20
[[metrics]]
plugin = "weight_norm"
[[metrics]]
plugin = "grad_norm"
[[metrics]]
plugin = "update_norm"
)";
  auto with = train(all, {"run.batch_size=16"});
  auto without = train(kSmallRun, {"run.batch_size=16"});
  CHECK(with.hashes == without.hashes);
  CHECK(with.evals.size() == without.evals.size());
  // The metrics themselves are deterministic.
  auto again = train(all, {"run.batch_size=16"});
  CHECK(again.evals == with.evals);
}

TEST_CASE("the default experiment trains bit-identically with and without its metrics", "[metrics][presets]") {
  // Its first 6 steps at p = 31 (fast), checkpointed every 2, with its metrics vs none.
  test::TempDir dir("metrics-preset");
  const std::string preset = std::string(GROKLAB_SOURCE_DIR) + "/manifests/grokking/modadd_mlp_pre.toml";
  const std::string bare = (dir.path / "bare.toml").string();
  std::ofstream(bare) << "include = [\"" << preset << "\"]\nmetrics = []\n";
  const std::vector<std::string> o{"task.p=31", "run.steps=6", "run.checkpoint_every=2", "run.eval_every=2",
                                   "run.stop_metric=\"\""};
  Composer composer(builtins());
  const ResolvedConfig full = composer.compose(preset, o);
  REQUIRE(full.metrics.size() == 5);
  CHECK(full.metrics[3].plugin == "feature_compressibility");
  Collect a, b;
  Trainer(full, builtins()).run(a);
  Trainer(composer.compose(bare, o), builtins()).run(b);
  CHECK(a.hashes == b.hashes);
  CHECK(a.hashes.size() == 3);
  CHECK(a.evals.back().second.count("train_feature_effective_rank") == 1);
  CHECK(a.evals.back().second.count("fourier_sparsity") == 1);
}

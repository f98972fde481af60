// The built-in architecture, optimizer and metric plugins, and the
// modular_arithmetic split, loaded from the built plugin directory.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <functional>

#include "builtins.h"
#include "groklab/components.h"
#include "groklab/host.h"

using namespace groklab;
using test::builtins;
using test::params_for;

namespace {

std::shared_ptr<Model> make_model(std::map<std::string, Value> set, const TaskSpec& spec,
                                  uint64_t seed = 0) {
  auto arch = builtins().find(Kind::Architecture, "transformer")
                  ->make_architecture(params_for(Kind::Architecture, "transformer", std::move(set)));
  torch::manual_seed(seed);
  return arch->build(spec);
}

std::shared_ptr<Optimizer> make_optimizer(const std::string& name, std::map<std::string, Value> set) {
  return builtins().find(Kind::Optimizer, name)->make_optimizer(params_for(Kind::Optimizer, name, std::move(set)));
}

std::vector<std::string> names_of(torch::nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& p : m.named_parameters()) out.push_back(p.key());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> named(torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m.named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

const TaskSpec kTiny{5, 3, 5};  // vocab 5, 3 positions, 5 classes
const std::map<std::string, Value> kSmall{{"d_model", 8}, {"heads", 2}, {"d_ff", 16}};

std::map<std::string, Value> small(std::map<std::string, Value> more = {}) {
  auto m = kSmall;
  for (auto& [k, v] : more) m[k] = v;
  return m;
}

torch::Tensor tiny_inputs() { return torch::tensor({0, 1, 2, 3, 4, 0, 2, 2, 1, 4, 3, 3}, torch::kLong).view({4, 3}); }

// Checks the gradients backward() left on m's parameters against central
// differences of f (a float64 scalar of m) at three entries of each parameter.
void check_gradients(torch::nn::Module& m, const std::function<torch::Tensor()>& f) {
  for (const auto& np : m.named_parameters()) {
    torch::Tensor p = np.value();
    torch::NoGradGuard g;
    auto flat = p.view({-1});
    for (int64_t i : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
      const double old = flat[i].item<double>(), eps = 1e-6;
      flat[i] = old + eps;
      const double up = f().item<double>();
      flat[i] = old - eps;
      const double down = f().item<double>();
      flat[i] = old;
      const double numeric = (up - down) / (2 * eps);
      const double analytic = p.grad().view({-1})[i].item<double>();
      INFO(np.key() << "[" << i << "]: analytic " << analytic << ", numeric " << numeric);
      CHECK(std::abs(analytic - numeric) <= 1e-6 * std::max(1.0, std::abs(numeric)));
    }
  }
}

}  // namespace

TEST_CASE("built-in plugins register their components with documented defaults", "[builtin]") {
  const auto& reg = builtins();
  for (const char* n : {"adamw", "adam", "sgd"}) CHECK(reg.find(Kind::Optimizer, n) != nullptr);
  for (const char* n : {"accuracy", "loss", "weight_norm"}) CHECK(reg.find(Kind::Metric, n) != nullptr);
  const Component* t = reg.find(Kind::Architecture, "transformer");
  REQUIRE(t != nullptr);
  CHECK(t->library->name == "groklab_architectures");
  auto def = [&](const char* n) { return *t->schema.find(n)->default_value; };
  CHECK(def("d_model") == Value(128));
  CHECK(def("layer_norm") == Value("mlp-pre"));
  CHECK(def("init") == Value("reference"));
  CHECK(def("ln_eps") == Value(1e-5));
  for (const auto& spec : t->schema.params()) CHECK_FALSE(spec.doc.empty());
  const Component* adamw = reg.find(Kind::Optimizer, "adamw");
  CHECK(*adamw->schema.find("weight_decay")->default_value == Value(0.01));
  CHECK(*adamw->schema.find("beta2")->default_value == Value(0.999));
}

TEST_CASE("transformer parameter names follow PyTorch conventions", "[builtin]") {
  auto m = make_model({}, {114, 3, 114});
  std::vector<std::string> expected{
      "blocks.0.attn.k_proj.weight", "blocks.0.attn.out_proj.weight", "blocks.0.attn.q_proj.weight",
      "blocks.0.attn.v_proj.weight", "blocks.0.ln_mlp.bias",          "blocks.0.ln_mlp.weight",
      "blocks.0.mlp.fc1.bias",       "blocks.0.mlp.fc1.weight",       "blocks.0.mlp.fc2.bias",
      "blocks.0.mlp.fc2.weight",     "embed.weight",                  "pos",
      "readout"};
  CHECK(names_of(*m) == expected);
  auto p = m->named_parameters();
  CHECK(p["readout"].sizes() == torch::IntArrayRef({128, 114}));
  CHECK(p["blocks.0.mlp.fc1.weight"].sizes() == torch::IntArrayRef({512, 128}));

  auto full = make_model(small({{"depth", 2}, {"layer_norm", "peri"}, {"attn_bias", true},
                                {"final_ln", true}, {"tied_readout", true},
                                {"positions", "sinusoidal"}}),
                         kTiny);
  auto n = names_of(*full);
  auto has = [&](const std::string& s) { return std::find(n.begin(), n.end(), s) != n.end(); };
  CHECK(has("blocks.1.ln_attn_out.weight"));
  CHECK(has("blocks.1.ln_mlp_out.bias"));
  CHECK(has("blocks.0.attn.q_proj.bias"));
  CHECK(has("blocks.1.attn.out_proj.bias"));
  CHECK(has("ln_final.weight"));
  CHECK_FALSE(has("readout"));
  CHECK_FALSE(has("pos"));
  auto* table = full->named_buffers().find("pos");  // sinusoids: row t = sin, cos, sin, … of t·ω
  REQUIRE(table != nullptr);
  CHECK(torch::equal(table->select(0, 0), torch::tensor({0.f, 1.f}).repeat({4})));
  CHECK(table->select(0, 1)[0].item<float>() == Approx(std::sin(1.0)));
}

TEST_CASE("transformer: reading out the last position, the last block runs there alone and computes the same",
          "[builtin][transformer]") {
  // forward() (last block at the last position only) against forward_hooked()
  // with no hooks set (every block at every position), in float64. With 16
  // examples of a 5-token vocabulary (more than twice the vocabulary) and one
  // block, forward() computes the block's input side from the table of
  // (token, position) rows.
  for (const char* placement : {"off", "pre", "post", "peri", "mlp-pre", "attn-pre", "attn-pre-qk", "attn-pre-v",
                                "pre-v"})
    for (bool causal : {false, true})
      for (int64_t depth : {1, 2})
        for (int64_t batch : {4, 16}) {
          INFO("layer_norm = " << placement << ", causal = " << causal << ", depth = " << depth
                               << ", batch = " << batch);
          auto m = make_model(small({{"layer_norm", placement}, {"readout", "last"}, {"causal", causal},
                                     {"depth", depth}, {"attn_bias", true}, {"final_ln", true}}),
                              kTiny);
          m->to(torch::kDouble);
          torch::manual_seed(batch);
          const auto x = batch == 4 ? tiny_inputs() : torch::randint(0, 5, {batch, 3}, torch::kLong);
          auto grads = [&](const torch::Tensor& y) {
            m->zero_grad();
            (y * torch::linspace(-1, 1, y.numel(), torch::kDouble).view(y.sizes())).sum().backward();
            std::vector<torch::Tensor> g;
            for (auto& p : m->parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
            return g;
          };
          ForwardHooks none;
          const torch::Tensor full = m->forward_hooked(x, none);
          const auto g_full = grads(full);
          const torch::Tensor fast = m->forward(x);
          const auto g_fast = grads(fast);
          REQUIRE(fast.sizes() == torch::IntArrayRef({batch, 1, 5}));
          CHECK(torch::allclose(fast, full, 1e-12, 1e-12));
          REQUIRE(g_fast.size() == g_full.size());
          for (size_t i = 0; i < g_fast.size(); ++i) CHECK(torch::allclose(g_fast[i], g_full[i], 1e-10, 1e-12));
        }
}

TEST_CASE("transformer: every LayerNorm placement computes and its gradients match finite differences",
          "[builtin]") {
  // Which LayerNorms each placement has in a block.
  const std::map<std::string, std::vector<std::string>> lns{
      {"off", {}},
      {"pre", {"ln_attn", "ln_mlp"}},
      {"post", {"ln_attn", "ln_mlp"}},
      {"peri", {"ln_attn", "ln_attn_out", "ln_mlp", "ln_mlp_out"}},
      {"mlp-pre", {"ln_mlp"}},
      {"attn-pre", {"ln_attn"}},
      {"attn-pre-qk", {"ln_attn"}},
      {"attn-pre-v", {"ln_attn"}},
      {"pre-v", {"ln_attn", "ln_mlp"}}};
  std::map<std::string, torch::Tensor> outputs;
  for (const auto& [placement, expected] : lns) {
    INFO("layer_norm = " << placement);
    auto m = make_model(small({{"layer_norm", placement}, {"readout", "all"}, {"attn_bias", true},
                               {"activation", "gelu"}}),
                        kTiny);
    std::vector<std::string> found;
    for (const auto& n : names_of(*m))
      if (n.rfind("blocks.0.ln", 0) == 0 && n.size() > 15 && n.substr(n.size() - 7) == ".weight")
        found.push_back(n.substr(9, n.size() - 16));
    std::sort(found.begin(), found.end());
    auto want = expected;
    std::sort(want.begin(), want.end());
    CHECK(found == want);

    // Float64 copy: analytic vs central-difference gradients of a scalar loss.
    m->to(torch::kDouble);
    for (auto& p : m->parameters()) {  // non-trivial LN affine parameters
      torch::NoGradGuard g;
      if (p.dim() == 1) p.add_(torch::randn(p.sizes(), torch::kDouble) * 0.3);
    }
    auto x = tiny_inputs();
    auto w = torch::randn({4, 3, 5}, torch::kDouble);
    auto f = [&] { return (m->forward(x) * w).sum(); };
    auto y = m->forward(x);
    REQUIRE(y.sizes() == torch::IntArrayRef({4, 3, 5}));
    outputs[placement] = y.detach();
    m->zero_grad();
    f().backward();
    check_gradients(*m, f);
  }
  // Same draws (LayerNorms consume no randomness), different computations.
  CHECK_FALSE(torch::equal(outputs["off"], outputs["pre"]));
  CHECK_FALSE(torch::equal(outputs["attn-pre-qk"], outputs["attn-pre-v"]));
  CHECK_FALSE(torch::equal(outputs["pre"], outputs["peri"]));
}

TEST_CASE("transformer options change the computation as specified", "[builtin]") {
  auto x = tiny_inputs();
  SECTION("readout last is the last position of readout all") {
    auto all = make_model(small({{"readout", "all"}}), kTiny)->forward(x);
    auto last = make_model(small(), kTiny)->forward(x);
    REQUIRE(last.sizes() == torch::IntArrayRef({4, 1, 5}));
    CHECK(torch::allclose(last.select(1, 0), all.select(1, 2), 1e-5, 1e-6));
  }
  SECTION("readout_scale multiplies the logits") {
    auto one = make_model(small(), kTiny)->forward(x);
    auto two = make_model(small({{"readout_scale", 2.0}}), kTiny)->forward(x);
    CHECK(torch::equal(two, one * 2));
  }
  SECTION("a causal mask hides later tokens") {
    auto m = make_model(small({{"causal", true}, {"readout", "all"}}), kTiny);
    auto x2 = x.clone();
    x2.select(1, 2).fill_(4);
    auto a = m->forward(x), b = m->forward(x2);
    CHECK(torch::equal(a.narrow(1, 0, 2), b.narrow(1, 0, 2)));
    CHECK_FALSE(torch::equal(a.select(1, 2), b.select(1, 2)));
    auto open = make_model(small({{"readout", "all"}}), kTiny);
    CHECK_FALSE(torch::equal(open->forward(x).narrow(1, 0, 2), open->forward(x2).narrow(1, 0, 2)));
  }
  SECTION("tied readout uses the embedding matrix") {
    auto m = make_model(small({{"tied_readout", true}, {"layer_norm", "off"}, {"depth", 1}}), kTiny);
    CHECK(m->named_parameters().find("readout") == nullptr);
    CHECK_THROWS_WITH(make_model(small({{"tied_readout", true}}), {5, 3, 4}),
                      Catch::Contains("tied_readout needs num_classes"));
  }
  SECTION("dropout acts in train mode only") {
    auto m = make_model(small({{"dropout", 0.5}}), kTiny);
    torch::manual_seed(1);
    auto a = m->forward(x);
    auto b = m->forward(x);
    CHECK_FALSE(torch::equal(a, b));
    m->eval();
    CHECK(torch::equal(m->forward(x), m->forward(x)));
  }
  SECTION("sqrt_d embedding scale and sinusoidal positions") {
    auto m = make_model(small({{"embed_scale", "sqrt_d"}, {"positions", "sinusoidal"}}), kTiny);
    CHECK(m->forward(x).isfinite().all().item<bool>());
  }
  SECTION("bad configurations are refused") {
    CHECK_THROWS_WITH(make_model(small({{"heads", 3}}), kTiny), Catch::Contains("not divisible"));
  }
}

TEST_CASE("readout_center: α·(f(θ) − f(θ₀)), θ₀ kept as buffers", "[builtin]") {
  auto x = tiny_inputs();
  const auto opts = small({{"readout_center", true}, {"readout", "all"}, {"readout_scale", 1.5},
                           {"layer_norm", "pre"}, {"attn_bias", true}});
  auto m = make_model(opts, kTiny, 3);
  auto y = m->forward(x);
  REQUIRE(y.sizes() == torch::IntArrayRef({4, 3, 5}));
  CHECK(y.abs().max().item<double>() == 0.0);  // exactly zero at initialisation

  // The same draws as without centring; θ₀ is a buffer copy under init.<name>.
  auto plain_opts = opts;
  plain_opts["readout_center"] = false;
  plain_opts["readout_scale"] = 1.0;
  auto plain = make_model(plain_opts, kTiny, 3);
  auto buffers = m->named_buffers();
  for (const auto& p : plain->named_parameters()) {
    INFO(p.key());
    CHECK(torch::equal(p.value(), m->named_parameters()[p.key()]));
    REQUIRE(buffers.find("init." + p.key()) != nullptr);
    CHECK(torch::equal(p.value(), buffers["init." + p.key()]));
  }
  for (const auto& p : m->named_parameters()) CHECK(p.key().rfind("init.", 0) != 0);
  CHECK(m->named_parameters().size() == plain->named_parameters().size());

  // Move θ; the output is α·(f(θ) − f(θ₀)) with f the uncentred network.
  const auto f0 = plain->forward(x).detach();
  {
    torch::NoGradGuard g;
    for (auto& p : m->named_parameters()) {
      p.value().add_(torch::randn(p.value().sizes()) * 0.1);
      plain->named_parameters()[p.key()].copy_(p.value());
    }
  }
  auto moved = m->forward(x);
  CHECK(torch::equal(moved, at::mul(plain->forward(x) - f0, 1.5)));
  CHECK(moved.abs().max().item<double>() > 0);

  // Gradients in float64 against central differences; θ₀ gets none.
  m->to(torch::kDouble);
  auto w = torch::randn({4, 3, 5}, torch::kDouble);
  auto f = [&] { return (m->forward(x) * w).sum(); };
  m->zero_grad();
  f().backward();
  for (const auto& b : m->named_buffers()) CHECK_FALSE(b.value().grad().defined());
  check_gradients(*m, f);
}

TEST_CASE("transformer init schemes", "[builtin]") {
  for (const char* scheme : {"reference", "pytorch", "xavier", "lecun", "nanda"}) {
    INFO(scheme);
    auto a = make_model({{"init", scheme}}, {114, 3, 114}, 7);
    auto b = make_model({{"init", scheme}}, {114, 3, 114}, 7);
    for (const auto& p : a->named_parameters())
      CHECK(torch::equal(p.value(), b->named_parameters()[p.key()]));  // deterministic per seed
  }
  auto m = make_model({}, {114, 3, 114});
  auto p = m->named_parameters();
  const double d = 128;
  CHECK(p["embed.weight"].std().item<double>() == Approx(1 / std::sqrt(d)).epsilon(0.05));
  CHECK(p["readout"].std().item<double>() == Approx(1 / std::sqrt(d)).epsilon(0.05));
  CHECK(p["pos"].std().item<double>() == Approx(0.02).epsilon(0.2));
  CHECK(p["blocks.0.mlp.fc2.weight"].abs().max().item<double>() <= 2 / std::sqrt(512.0) + 1e-7);
  CHECK(p["blocks.0.mlp.fc1.bias"].abs().sum().item<double>() == 0);
  CHECK(p["blocks.0.ln_mlp.weight"].eq(1).all().item<bool>());
}

TEST_CASE("adamw and adam follow the PyTorch update", "[builtin]") {
  auto p = torch::tensor({1.0f, -2.0f}).requires_grad_();
  auto opt = make_optimizer("adamw", {{"lr", 0.1}, {"weight_decay", 0.5}});
  opt->attach({{"w", p}});
  p.mutable_grad() = torch::tensor({0.5f, 0.25f});
  opt->step(1);
  // Step 1: m̂ = g, v̂ = g², so p ← p·(1 − lr·wd) − lr·g/(|g| + eps).
  CHECK(p[0].item<double>() == Approx(1.0 * 0.95 - 0.1).epsilon(1e-6));
  CHECK(p[1].item<double>() == Approx(-2.0 * 0.95 - 0.1).epsilon(1e-6));

  auto q = torch::tensor({1.0f}).requires_grad_();
  auto adam = make_optimizer("adam", {{"lr", 0.1}, {"weight_decay", 1.0}});
  adam->attach({{"w", q}});
  q.mutable_grad() = torch::tensor({-2.0f});  // g + wd·p = -1
  adam->step(1);
  CHECK(q.item<double>() == Approx(1.1).epsilon(1e-6));
  adam->zero_grad();
  CHECK_FALSE(q.grad().defined());
}

TEST_CASE("schedules, clipping and decay selection", "[builtin]") {
  // SGD with lr 1 and gradient 1: each update moves the parameter by lr·m(k−1).
  auto moves = [](std::map<std::string, Value> set, int steps) {
    set["lr"] = 1.0;
    auto opt = make_optimizer("sgd", set);
    auto p = torch::zeros({1}).requires_grad_();
    opt->attach({{"w", p}});
    std::vector<double> out;
    for (int k = 1; k <= steps; ++k) {
      p.mutable_grad() = torch::ones({1});
      const double before = p.item<double>();
      opt->step(k);
      out.push_back(before - p.item<double>());
    }
    return out;
  };
  auto lin = moves({{"warmup_steps", 4}, {"schedule", "linear"}, {"decay_steps", 8}}, 10);
  std::vector<double> want{0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0, 0};
  for (size_t i = 0; i < want.size(); ++i) CHECK(lin[i] == Approx(want[i]));
  auto cos = moves({{"schedule", "cosine"}, {"decay_steps", 4}}, 5);
  CHECK(cos[0] == Approx(1));
  CHECK(cos[2] == Approx(0.5));
  CHECK(cos[4] == Approx(0).margin(1e-12));
  CHECK(moves({{"warmup_steps", 10}}, 11).back() == Approx(1));
  CHECK_THROWS_WITH(make_optimizer("sgd", {{"schedule", "linear"}}), Catch::Contains("decay_steps"));

  auto opt = make_optimizer("sgd", {{"lr", 1.0}, {"clip_grad_norm", 1.0}});
  auto a = torch::zeros({1}).requires_grad_(), b = torch::zeros({1}).requires_grad_();
  opt->attach({{"a", a}, {"b", b}});
  a.mutable_grad() = torch::tensor({3.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  opt->step(1);
  CHECK(a.item<double>() == Approx(-0.6));
  CHECK(b.item<double>() == Approx(-0.8));

  auto dec = make_optimizer("adamw", {{"lr", 0.1}, {"weight_decay", 1.0}, {"decay_params", "matrices"}});
  auto w = torch::ones({2, 2}).requires_grad_(), bias = torch::ones({2}).requires_grad_();
  auto e = torch::ones({2, 2}).requires_grad_();
  dec->attach({{"fc.weight", w}, {"fc.bias", bias}, {"embed.weight", e}});
  for (auto* t : {&w, &bias, &e}) t->mutable_grad() = torch::zeros_like(*t);
  dec->step(1);  // zero gradients: only decay moves a parameter
  CHECK(w[0][0].item<double>() == Approx(0.9));
  CHECK(bias[0].item<double>() == 1.0);
  CHECK(e[0][0].item<double>() == 1.0);
}

TEST_CASE("Grokfast and the fixed-norm constraint on a toy quadratic", "[builtin]") {
  // L = ½θ², so g = θ; SGD with lr 0.1 from θ = 1, in float64.
  auto run = [](std::map<std::string, Value> set, int steps, TensorMap* state = nullptr) {
    set["lr"] = 0.1;
    auto opt = make_optimizer("sgd", set);
    auto p = torch::ones({1}, torch::kDouble).requires_grad_();
    opt->attach({{"w", p}});
    std::vector<double> out;
    for (int k = 1; k <= steps; ++k) {
      p.mutable_grad() = p.detach().clone();
      opt->step(k);
      out.push_back(p.item<double>());
    }
    if (state != nullptr) *state = opt->state();
    return out;
  };
  SECTION("off: plain SGD") {
    auto th = run({}, 2);
    CHECK(th[0] == Approx(0.9).epsilon(1e-14));
    CHECK(th[1] == Approx(0.81).epsilon(1e-14));
  }
  SECTION("ema: μ₀ = g₀, μ_t = α·μ_{t−1} + (1−α)·g_t, update with g + λ·μ") {
    TensorMap state;
    auto th = run({{"grokfast", "ema"}}, 3, &state);  // α 0.98, λ 2
    CHECK(th[0] == Approx(1 - 0.1 * (1 + 2 * 1.0)).epsilon(1e-14));             // 0.7
    CHECK(th[1] == Approx(0.7 - 0.1 * (0.7 + 2 * 0.994)).epsilon(1e-14));       // μ = 0.994
    CHECK(th[2] == Approx(0.4312 - 0.1 * (0.4312 + 2 * 0.982744)).epsilon(1e-14));
    REQUIRE(state.count("grokfast_ema.w"));
    CHECK(state.at("grokfast_ema.w").item<double>() == Approx(0.982744).epsilon(1e-14));
    auto other = run({{"grokfast", "ema"}, {"grokfast_alpha", 0.5}, {"grokfast_lambda", 1.0}}, 2);
    CHECK(other[1] == Approx(0.8 - 0.1 * (0.8 + 0.9)).epsilon(1e-14));  // μ = 0.5·1 + 0.5·0.8
  }
  SECTION("ma: mean of the last w gradients, once w have been seen") {
    TensorMap state;
    auto th = run({{"grokfast", "ma"}, {"grokfast_window", 2}}, 3, &state);  // λ 2
    CHECK(th[0] == Approx(0.9).epsilon(1e-14));                           // window not full
    CHECK(th[1] == Approx(0.9 - 0.1 * (0.9 + 2 * 0.95)).epsilon(1e-14));  // mean(1, 0.9)
    CHECK(th[2] == Approx(0.62 - 0.1 * (0.62 + 2 * 0.76)).epsilon(1e-14));  // mean(0.9, 0.62)
    CHECK(state.at("grokfast_count.w").item<int64_t>() == 3);
    CHECK(state.at("grokfast_window.w").sizes() == torch::IntArrayRef({2, 1}));
  }
  SECTION("fixed_norm keeps ‖θ‖ at its initial value, after init_scale") {
    // θ = (3, 4) scaled by 2 → (6, 8), ‖θ₀‖ = 10; only the first coordinate
    // has a gradient (L = ½a²): a ← 0.9a, then both × 10/‖θ‖.
    auto opt = make_optimizer("sgd", {{"lr", 0.1}, {"fixed_norm", true}, {"init_scale", 2.0}});
    auto a = torch::tensor({3.0}, torch::kDouble).requires_grad_();
    auto b = torch::tensor({4.0}, torch::kDouble).requires_grad_();
    opt->attach({{"a", a}, {"b", b}});
    CHECK(a.item<double>() == 6.0);
    CHECK(b.item<double>() == 8.0);
    CHECK(opt->state().at("fixed_norm.init_norm").item<double>() == 10.0);
    double ea = 6, eb = 8;
    for (int k = 1; k <= 3; ++k) {
      a.mutable_grad() = a.detach().clone();
      opt->step(k);
      ea *= 0.9;
      const double f = 10 / std::sqrt(ea * ea + eb * eb);
      ea *= f;
      eb *= f;
      CHECK(a.item<double>() == Approx(ea).epsilon(1e-14));
      CHECK(b.item<double>() == Approx(eb).epsilon(1e-14));
      CHECK(std::hypot(a.item<double>(), b.item<double>()) == Approx(10).epsilon(1e-14));
    }
    CHECK(b.item<double>() > 8.0);  // the norm lost by a went to b
    CHECK_THROWS_WITH(make_optimizer("sgd", {{"init_scale", 0.0}}), Catch::Contains("init_scale"));
  }
}

TEST_CASE("optimizer state round-trips bit for bit", "[builtin]") {
  struct Case {
    std::string name;
    std::map<std::string, Value> set;
    size_t per_param;  // state tensors per parameter
    size_t global;     // state tensors not per parameter
  };
  const std::vector<Case> cases{
      {"adamw", {{"lr", 0.01}}, 3, 0},
      {"sgd", {{"lr", 0.01}, {"momentum", 0.9}}, 1, 0},
      {"adamw", {{"lr", 0.01}, {"grokfast", "ema"}, {"fixed_norm", true}, {"init_scale", 0.5}}, 4, 1},
      {"sgd", {{"lr", 0.01}, {"momentum", 0.9}, {"grokfast", "ma"}, {"grokfast_window", 2}}, 3, 0},
      {"adam", {{"lr", 0.01}, {"weight_decay", 0.1}, {"grokfast", "ma"}, {"grokfast_window", 5},
                {"fixed_norm", true}}, 5, 1}};
  for (const auto& c : cases) {
    INFO(c.name << " with " << c.set.size() << " settings");
    auto m = make_model(small(), kTiny);
    auto x = tiny_inputs();
    auto train = [&](Model& model, Optimizer& opt, int from, int to) {
      for (int k = from; k <= to; ++k) {
        opt.zero_grad();
        model.forward(x).pow(2).mean().backward();
        opt.step(k);
      }
    };
    auto opt = make_optimizer(c.name, c.set);
    opt->attach(named(*m));
    train(*m, *opt, 1, 3);

    // A checkpoint: copies of the parameters and of the optimizer state.
    TensorMap saved_params, saved_state;
    for (const auto& p : m->named_parameters()) saved_params[p.key()] = p.value().detach().clone();
    for (const auto& [k, t] : opt->state()) saved_state[k] = t.clone();
    CHECK(saved_state.size() == c.per_param * saved_params.size() + c.global);
    train(*m, *opt, 4, 6);

    // As the trainer resumes: build, attach (init_scale acts here), then restore.
    auto m2 = make_model(small(), kTiny, 99);
    auto opt2 = make_optimizer(c.name, c.set);
    opt2->attach(named(*m2));
    {
      torch::NoGradGuard g;
      for (auto& p : m2->named_parameters()) p.value().copy_(saved_params.at(p.key()));
    }
    opt2->load_state(saved_state);
    train(*m2, *opt2, 4, 6);
    for (const auto& p : m->named_parameters()) CHECK(torch::equal(p.value(), m2->named_parameters()[p.key()]));
    if (c.global > 0) {
      // ‖θ₀‖ is required state: loading a state without it is refused.
      auto m3 = make_model(small(), kTiny, 99);
      auto opt3 = make_optimizer(c.name, c.set);
      opt3->attach(named(*m3));
      TensorMap partial = saved_state;
      partial.erase("fixed_norm.init_norm");
      CHECK_THROWS_WITH(opt3->load_state(partial), Catch::Contains("fixed_norm.init_norm"));
    }
  }
}

namespace {
// Predicts (a + b) mod p perfectly with confidence c, recording its modes.
class Oracle final : public Model {
 public:
  Oracle(int64_t p, double c) : p_(p), c_(c) {}
  torch::Tensor forward(const torch::Tensor& x) override {
    saw_training = is_training();
    saw_grad = torch::GradMode::is_enabled();
    auto y = (x.select(1, 0) + x.select(1, 1)).remainder(p_);
    return torch::one_hot(y, p_ + 1).to(torch::kFloat).mul(c_).unsqueeze(1);
  }
  bool saw_training = true, saw_grad = true;

 private:
  int64_t p_;
  double c_;
};
}  // namespace

TEST_CASE("accuracy, loss and weight_norm metrics", "[builtin]") {
  auto task = builtins().find(Kind::Task, "modular_arithmetic")
                  ->make_task(params_for(Kind::Task, "modular_arithmetic", {{"p", 11}}));
  task->prepare(0);
  Oracle oracle(11, 3.0);
  oracle.train();
  EvalContext ctx;
  ctx.model = &oracle;
  ctx.task = task.get();
  auto acc = builtins().find(Kind::Metric, "accuracy")
                 ->make_metric(params_for(Kind::Metric, "accuracy", {{"split", "all"}, {"batch_size", 7}}));
  auto r = acc->evaluate(ctx);
  CHECK(r.at("train_accuracy") == 1.0);
  CHECK(r.at("test_accuracy") == 1.0);
  CHECK_FALSE(oracle.saw_training);
  CHECK_FALSE(oracle.saw_grad);
  CHECK(oracle.is_training());  // restored

  auto loss = builtins().find(Kind::Metric, "loss")->make_metric(params_for(Kind::Metric, "loss"));
  // Cross-entropy of logits 3·onehot over 12 classes at the right class.
  const double want = std::log(std::exp(3.0) + 11) - 3.0;
  CHECK(loss->evaluate(ctx).at("test_loss") == Approx(want).epsilon(1e-12));

  auto m = make_model(small(), {12, 3, 12});
  ctx.model = m.get();
  auto whole = acc->evaluate(ctx);
  auto batched = builtins().find(Kind::Metric, "accuracy")
                     ->make_metric(params_for(Kind::Metric, "accuracy", {{"split", "all"}}))
                     ->evaluate(ctx);
  CHECK(whole == batched);

  auto wn = builtins().find(Kind::Metric, "weight_norm")
                ->make_metric(params_for(Kind::Metric, "weight_norm"))
                ->evaluate(ctx);
  double sum = 0;
  for (const auto& p : m->parameters()) sum += p.to(torch::kDouble).pow(2).sum().item<double>();
  CHECK(wn.at("weight_norm") == Approx(std::sqrt(sum)).epsilon(1e-12));
}

TEST_CASE("modular_arithmetic splits as Python's random.Random(seed).shuffle", "[builtin]") {
  // Pairs printed by CPython 3.11 for p = 113:
  //   random.Random(seed).shuffle([(i, j) for i in range(113) for j in range(113)])
  auto task = builtins().find(Kind::Task, "modular_arithmetic")
                  ->make_task(params_for(Kind::Task, "modular_arithmetic"));
  auto check = [&](uint64_t seed, std::vector<std::pair<int64_t, int64_t>> first,
                   std::pair<int64_t, int64_t> last_train, std::pair<int64_t, int64_t> last_test) {
    INFO("seed " << seed);
    task->prepare(seed);
    REQUIRE(task->size("train") == 3830);
    auto tr = task->batch("train", torch::arange(3830)).inputs;
    for (size_t k = 0; k < first.size(); ++k) {
      CHECK(tr[static_cast<int64_t>(k)][0].item<int64_t>() == first[k].first);
      CHECK(tr[static_cast<int64_t>(k)][1].item<int64_t>() == first[k].second);
    }
    CHECK(tr[3829][0].item<int64_t>() == last_train.first);
    CHECK(tr[3829][1].item<int64_t>() == last_train.second);
    auto te = task->batch("test", torch::tensor({task->size("test") - 1})).inputs;
    CHECK(te[0][0].item<int64_t>() == last_test.first);
    CHECK(te[0][1].item<int64_t>() == last_test.second);
  };
  check(0, {{18, 34}, {10, 83}, {55, 28}, {25, 51}, {63, 65}, {14, 104}}, {65, 24}, {55, 96});
  check(1, {{58, 58}, {76, 57}, {60, 23}, {100, 89}, {29, 27}, {34, 30}}, {25, 50}, {19, 54});
  check(12345678901, {{40, 100}, {48, 82}, {8, 1}, {13, 99}, {44, 68}, {111, 71}}, {36, 98}, {86, 56});
}

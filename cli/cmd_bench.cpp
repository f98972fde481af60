// groklab bench [--rounds R] [--only small|paper] [--peers DIR] [--grok] [--json FILE]
//
// Training throughput, side by side in one invocation, 1 intra-op thread:
//   (a) groklab's real path: a manifest composed against the loaded plugins,
//       the trainer, the ledger on (a temporary one);
//   (b) a minimal hand-written LibTorch loop of the same model, in this binary;
//   (c) the PyTorch peer, torch_reference.py under /usr/bin/python3, when found;
// on the configurations "small" and "paper", as medians over R interleaved
// rounds; ratios a/b (host overhead) and a/c; achieved FLOP/s against a GEMM
// peak measured in the same run. Then seed-vectorised ensembles: S seeds as
// one batched model (run.ensemble = S) against S single runs, as aggregate
// member-steps/s, on "small" and "tiny". --grok also times the default
// experiment to test accuracy ≥ 99.5% against grok_reference.py.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "common.h"
#include "groklab/ledger/ledger.h"
#include "groklab/manifest.h"
#include "groklab/runs.h"
#include "groklab/trainer.h"

namespace groklab::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Shape {
  std::string name;
  int64_t layers, d, heads, d_ff, vocab, seq, batch;
  bool pre_ln;
  int64_t steps, warmup;  // timed steps, untimed warm-up steps

  // Matmul FLOPs of one training step (forward + backward ≈ 3 × forward):
  // per token and layer q, k, v, output (8d²), MLP (4·d·d_ff), attention
  // scores and mixing (4·T·d, dense), plus the readout (2·d·V).
  double flops_per_step() const {
    const double per_token = static_cast<double>(layers) * (8.0 * d * d + 4.0 * d * d_ff + 4.0 * seq * d) +
                             2.0 * d * vocab;
    return 3.0 * per_token * static_cast<double>(batch * seq);
  }

  json to_json() const {
    return {{"layers", layers}, {"d_model", d},     {"heads", heads}, {"d_ff", d_ff},
            {"vocab", vocab},   {"seq", seq},       {"batch", batch}, {"ln", pre_ln ? "pre" : "post"}};
  }
};

// The two configurations of issue #10: the default experiment's model (pre-LN)
// and Murty et al.'s (6 layers, post-LN).
std::vector<Shape> shapes() {
  return {{"small", 1, 128, 4, 512, 114, 3, 64, true, 400, 20},
          {"paper", 6, 512, 8, 2048, 114, 24, 8, false, 30, 3}};
}

// The ensemble configurations of issue #10: "small", and a tiny model where a
// single run is furthest from compute-bound.
std::vector<Shape> ensemble_shapes() {
  Shape small = shapes().front();
  small.steps = 200;  // an ensemble step trains S members: fewer of them
  small.warmup = 10;
  return {small, {"tiny", 1, 64, 4, 256, 114, 3, 32, true, 300, 10}};
}

// (a) The manifest of a shape: random tokens, loss at every position in
// float32 (as the peer's and the hand loop's cross_entropy; groklab's default
// is float64), AdamW as the peer's (lr 1e-3, betas 0.9/0.98, weight decay 1),
// no metrics, checkpoint at the end only.
std::string manifest(const Shape& s) {
  std::ostringstream m;
  m << "[task]\nplugin = \"random_tokens\"\nvocab = " << s.vocab << "\nseq_len = " << s.seq
    << "\ntrain_size = " << 16 * s.batch << "\n\n[architecture]\nplugin = \"transformer\"\ndepth = " << s.layers
    << "\nd_model = " << s.d << "\nheads = " << s.heads << "\nd_ff = " << s.d_ff
    << "\nactivation = \"relu\"\nlayer_norm = \"" << (s.pre_ln ? "pre" : "post") << "\"\nfinal_ln = "
    << (s.pre_ln ? "true" : "false")
    << "\nattn_bias = true\ncausal = true\nreadout = \"all\"\ninit = \"pytorch\"\n\n"
       "[optimizer]\nplugin = \"adamw\"\nlr = 1e-3\nbeta1 = 0.9\nbeta2 = 0.98\nweight_decay = 1.0\n\n"
       "[run]\nthreads = 1\nloss_dtype = \"float32\"\ncheckpoint_every = 0\nbatch_size = "
    << s.batch << "\nsteps = " << s.warmup + s.steps << "\neval_every = " << s.warmup + s.steps << "\n";
  return m.str();
}

// Steps/s of groklab's real path on shape s; with ensemble = S > 1, steps/s
// of the ensemble (each step trains S members).
double groklab_path(const Shape& s, const PluginHost& host, const fs::path& scratch, int64_t ensemble = 1) {
  Composer composer(host.registry());
  const std::string label = s.name + (ensemble > 1 ? "-ensemble" : "");
  const ResolvedConfig config = composer.compose_string(manifest(s), "<bench " + label + ">",
                                                        {"run.ensemble=" + std::to_string(ensemble)});
  const fs::path dir = scratch / ("ledger-" + label);
  fs::remove_all(dir);
  auto ledger = ledger::Ledger::create(dir.string());
  StepClock clock(s.warmup);
  Provenance prov;
  prov.manifest = "<groklab bench " + label + ">";
  if (ensemble > 1) run_ensemble_recorded(config, host, ledger, prov, &clock);
  else run_recorded(config, host, ledger, prov, &clock);
  return static_cast<double>(s.steps) / clock.seconds();
}

// (b) The same model, written the obvious way with torch::nn.
struct BlockImpl : torch::nn::Module {
  BlockImpl(const Shape& s)
      : pre(s.pre_ln), heads(s.heads),
        ln1(register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.d})))),
        ln2(register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.d})))),
        qkv(register_module("qkv", torch::nn::Linear(s.d, 3 * s.d))),
        proj(register_module("proj", torch::nn::Linear(s.d, s.d))),
        fc1(register_module("fc1", torch::nn::Linear(s.d, s.d_ff))),
        fc2(register_module("fc2", torch::nn::Linear(s.d_ff, s.d))) {}

  torch::Tensor attend(const torch::Tensor& x, const torch::Tensor& mask) {
    const int64_t B = x.size(0), T = x.size(1), D = x.size(2);
    auto qkv_ = qkv(x).view({B, T, 3, heads, D / heads}).permute({2, 0, 3, 1, 4});
    auto att = torch::matmul(qkv_[0], qkv_[1].transpose(-1, -2)) / std::sqrt(static_cast<double>(D / heads));
    att = att.masked_fill(mask, -std::numeric_limits<double>::infinity()).softmax(-1);
    return proj(torch::matmul(att, qkv_[2]).transpose(1, 2).reshape({B, T, D}));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask) {
    if (pre) {
      x = x + attend(ln1(x), mask);
      return x + fc2(torch::relu(fc1(ln2(x))));
    }
    x = ln1(x + attend(x, mask));
    return ln2(x + fc2(torch::relu(fc1(x))));
  }
  bool pre;
  int64_t heads;
  torch::nn::LayerNorm ln1, ln2;
  torch::nn::Linear qkv, proj, fc1, fc2;
};
TORCH_MODULE(Block);

double hand_loop(const Shape& s) {
  torch::manual_seed(0);
  torch::nn::Embedding emb(s.vocab, s.d);
  torch::Tensor pos = torch::randn({s.seq, s.d}) * 0.02;
  pos.set_requires_grad(true);
  std::vector<Block> blocks;
  for (int64_t l = 0; l < s.layers; ++l) blocks.emplace_back(s);
  torch::nn::LayerNorm ln_f(torch::nn::LayerNormOptions({s.d}));
  torch::nn::Linear out(s.d, s.vocab);
  std::vector<torch::Tensor> params = emb->parameters();
  params.push_back(pos);
  for (auto& b : blocks)
    for (auto& p : b->parameters()) params.push_back(p);
  for (auto* m : {static_cast<torch::nn::Module*>(ln_f.get()), static_cast<torch::nn::Module*>(out.get())})
    for (auto& p : m->parameters()) params.push_back(p);
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-3).betas({0.9, 0.98}).weight_decay(1.0));
  const torch::Tensor mask = torch::ones({s.seq, s.seq}, torch::kBool).triu(1);
  const torch::Tensor x = torch::randint(s.vocab, {s.batch, s.seq}, torch::kLong);
  const torch::Tensor y = torch::randint(s.vocab, {s.batch, s.seq}, torch::kLong);
  auto step = [&] {
    opt.zero_grad();
    torch::Tensor h = emb(x) + pos;
    for (auto& b : blocks) h = b(h, mask);
    if (s.pre_ln) h = ln_f(h);
    auto loss = torch::nn::functional::cross_entropy(out(h).reshape({-1, s.vocab}), y.reshape({-1}));
    loss.backward();
    opt.step();
    return loss.item<double>();  // as the trainer does each step
  };
  for (int64_t i = 0; i < s.warmup; ++i) step();
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < s.steps; ++i) step();
  return static_cast<double>(s.steps) / std::chrono::duration<double>(Clock::now() - t0).count();
}

// The last JSON object a command printed, or nullopt (and why) if it failed.
std::optional<json> run_python(const std::string& cmd, std::string& why) {
  std::string out;
  if (capture(cmd + " 2>&1", out) != 0) {
    why = out.substr(out.size() > 400 ? out.size() - 400 : 0);
    return std::nullopt;
  }
  std::istringstream lines(out);
  std::optional<json> last;
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line.front() == '{') last = json::parse(line, nullptr, false);
  if (!last || last->is_discarded()) {
    why = "no JSON line in its output";
    return std::nullopt;
  }
  return last;
}

const char* kPython = "/usr/bin/python3";

// (c) The PyTorch peer on the same shape; steps/s.
std::optional<double> peer(const Shape& s, const fs::path& peers, std::string& why) {
  std::ostringstream cmd;
  cmd << kPython << " " << (peers / "torch_reference.py") << " --layers " << s.layers << " --d-model " << s.d
      << " --heads " << s.heads << " --d-ff " << s.d_ff << " --vocab " << s.vocab << " --seq " << s.seq
      << " --batch " << s.batch << " --ln " << (s.pre_ln ? "pre" : "post") << " --steps " << s.steps
      << " --warmup " << s.warmup << " --threads 1";
  auto j = run_python(cmd.str(), why);
  if (!j) return std::nullopt;
  return j->at("steps_per_s").get<double>();
}

// Single-thread float32 GEMM peak: the best of several 1024² products.
double gemm_peak() {
  const int64_t n = 1024;
  auto a = torch::randn({n, n}), b = torch::randn({n, n});
  auto c = torch::mm(a, b);
  double best = 0;
  for (int i = 0; i < 8; ++i) {
    const auto t0 = Clock::now();
    torch::mm_out(c, a, b);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / dt);
  }
  return best;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? std::nan("") : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Where torch_reference.py and grok_reference.py are: --peers, $GROKLAB_PEERS,
// or the workspace's shared/peers next to the source tree.
std::optional<fs::path> find_peers(const std::string& option) {
  std::vector<fs::path> candidates;
  if (!option.empty()) candidates.emplace_back(option);
  if (const char* env = std::getenv("GROKLAB_PEERS"); env != nullptr && *env != '\0') candidates.emplace_back(env);
  candidates.emplace_back(fs::path(GROKLAB_SOURCE_DIR) / ".." / "shared" / "peers");
  for (const auto& c : candidates)
    if (fs::exists(c / "torch_reference.py")) return fs::canonical(c);
  return std::nullopt;
}

struct BenchArgs {
  int rounds = 3;
  int64_t ensemble = 10;
  std::string only;
  std::string peers;
  bool grok = false;
  std::string json_path;
};

// The default experiment to test accuracy ≥ 99.5%: groklab vs grok_reference.py.
json time_to_grok(const PluginHost& host, const fs::path& scratch, const std::optional<fs::path>& peers) {
  json out;
  Composer composer(host.registry());
  const std::string m = std::string(GROKLAB_SOURCE_DIR) + "/manifests/grokking/modadd_mlp_pre.toml";
  const ResolvedConfig config = composer.compose(m);
  auto ledger = ledger::Ledger::create((scratch / "ledger-grok").string());
  Provenance prov;
  prov.manifest = m;
  const auto t0 = Clock::now();
  RunOutcome o = run_recorded(config, host, ledger, prov, nullptr);
  out["groklab"] = {{"seconds", std::chrono::duration<double>(Clock::now() - t0).count()},
                    {"steps", o.steps},
                    {"test_accuracy", o.final_metrics.count("test_accuracy") ? o.final_metrics.at("test_accuracy") : 0}};
  if (peers && fs::exists(*peers / "grok_reference.py")) {
    std::string why;
    auto j = run_python(std::string(kPython) + " " + (*peers / "grok_reference.py").string() + " --threads 1", why);
    if (j) out["peer"] = {{"seconds", j->value("test_acc_0.995_seconds", 0.0)}, {"steps", j->value("test_acc_0.995_step", 0)}};
    else out["peer_skipped"] = why;
  } else {
    out["peer_skipped"] = "grok_reference.py not found";
  }
  if (out.contains("peer")) out["ratio"] = out["groklab"]["seconds"].get<double>() / out["peer"]["seconds"].get<double>();
  return out;
}

void bench(const BenchArgs& a) {
  set_threads(1);
  PluginHost host;
  load_plugins(host);
  const auto peers = find_peers(a.peers);
  std::string peer_note;
  if (!peers) peer_note = "PyTorch peer skipped: torch_reference.py not found (--peers DIR or $GROKLAB_PEERS)";
  else if (::access(kPython, X_OK) != 0) peer_note = std::string("PyTorch peer skipped: no ") + kPython;
  const fs::path scratch = fs::temp_directory_path() / ("groklab-bench-" + std::to_string(::getpid()));
  fs::create_directories(scratch);
  struct Cleanup {
    fs::path p;
    ~Cleanup() { fs::remove_all(p); }
  } cleanup{scratch};

  const double peak = gemm_peak();
  json summary = {{"threads", 1},
                  {"rounds", a.rounds},
                  {"torch", TORCH_VERSION},
                  {"gemm_peak_gflops", peak / 1e9},
                  {"configs", json::array()}};
  std::printf("GEMM peak (1 thread, float32 1024² mm): %.1f GFLOP/s\n", peak / 1e9);
  std::printf("%-6s %12s %12s %12s %7s %7s %9s %7s\n", "config", "a groklab", "b hand loop", "c peer", "a/b", "a/c",
              "GFLOP/s", "of peak");
  for (const Shape& s : shapes()) {
    if (!a.only.empty() && a.only != s.name) continue;
    std::vector<double> ga, hb, pc;
    for (int r = 0; r < a.rounds; ++r) {  // interleaved, so drift hits all three alike
      ga.push_back(groklab_path(s, host, scratch));
      hb.push_back(hand_loop(s));
      if (peer_note.empty()) {
        std::string why;
        if (auto v = peer(s, *peers, why)) pc.push_back(*v);
        else peer_note = "PyTorch peer failed: " + why;
      }
    }
    const double A = median(ga), B = median(hb), C = pc.empty() ? std::nan("") : median(pc);
    const double achieved = A * s.flops_per_step();
    std::printf("%-6s %8.1f st/s %8.1f st/s %8.1f st/s %7.3f %7.3f %9.2f %6.1f%%\n", s.name.c_str(), A, B, C, A / B,
                A / C, achieved / 1e9, 100 * achieved / peak);
    json c = {{"name", s.name},
              {"shape", s.to_json()},
              {"timed_steps", s.steps},
              {"groklab_steps_per_s", ga},
              {"hand_loop_steps_per_s", hb},
              {"median", {{"groklab", A}, {"hand_loop", B}}},
              {"ratio_groklab_over_hand_loop", A / B},
              {"gflops_achieved", achieved / 1e9},
              {"fraction_of_gemm_peak", achieved / peak}};
    if (!pc.empty()) {
      c["peer_steps_per_s"] = pc;
      c["median"]["peer"] = C;
      c["ratio_groklab_over_peer"] = A / C;
    }
    summary["configs"].push_back(c);
  }
  if (!peer_note.empty()) {
    std::printf("%s\n", peer_note.c_str());
    summary["peer_skipped"] = peer_note;
  }
  if (a.ensemble > 1) {
    const int64_t S = a.ensemble;
    std::printf("ensembles: S = %lld seeds as one batched model vs S single runs (aggregate member-steps/s)\n",
                static_cast<long long>(S));
    std::printf("%-6s %14s %14s %16s %7s\n", "config", "single run", "ensemble", "aggregate", "gain");
    summary["ensembles"] = json::array();
    for (const Shape& s : ensemble_shapes()) {
      if (!a.only.empty() && a.only != s.name) continue;
      std::vector<double> single, group;
      for (int r = 0; r < a.rounds; ++r) {
        single.push_back(groklab_path(s, host, scratch));
        group.push_back(groklab_path(s, host, scratch, S));
      }
      const double one = median(single), all = median(group);
      const double gain = all * static_cast<double>(S) / one;
      std::printf("%-6s %9.1f st/s %9.1f st/s %9.1f mst/s %7.2f\n", s.name.c_str(), one, all,
                  all * static_cast<double>(S), gain);
      summary["ensembles"].push_back(
          {{"name", s.name},
           {"members", S},
           {"shape", s.to_json()},
           {"single_steps_per_s", single},
           {"ensemble_steps_per_s", group},
           {"median", {{"single", one}, {"ensemble", all}}},
           {"aggregate_member_steps_per_s", all * static_cast<double>(S)},
           {"gain_over_single_runs", gain}});
    }
  }
  if (a.grok) {
    std::printf("time to grok (default experiment, test accuracy ≥ 0.995, 1 thread)…\n");
    json g = time_to_grok(host, scratch, peers);
    std::printf("  groklab %.1f s (%lld steps)", g["groklab"]["seconds"].get<double>(),
                static_cast<long long>(g["groklab"]["steps"].get<int64_t>()));
    if (g.contains("peer"))
      std::printf("; peer %.1f s (%lld steps); ratio %.3f\n", g["peer"]["seconds"].get<double>(),
                  static_cast<long long>(g["peer"]["steps"].get<int64_t>()), g["ratio"].get<double>());
    else
      std::printf("; peer skipped: %s\n", g["peer_skipped"].get<std::string>().c_str());
    summary["time_to_grok"] = g;
  }
  std::printf("%s\n", summary.dump().c_str());
  if (!a.json_path.empty()) {
    std::ofstream out(a.json_path);
    out << summary.dump(2) << "\n";
    if (!out.flush()) throw std::runtime_error("cannot write " + a.json_path);
  }
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand(
      "bench", "Training throughput vs a hand-written LibTorch loop and the PyTorch peer (ratios, FLOP/s)");
  cmd->add_option("--rounds", args->rounds, "Interleaved rounds; medians are reported")->check(CLI::PositiveNumber);
  cmd->add_option("--only", args->only, "Only this configuration")->check(CLI::IsMember({"small", "paper", "tiny"}));
  cmd->add_option("--ensemble", args->ensemble,
                  "Members of the ensemble measurement (run.ensemble = S vs S single runs); 1 skips it")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--peers", args->peers, "Folder with torch_reference.py and grok_reference.py");
  cmd->add_flag("--grok", args->grok, "Also time the default experiment to grokking (minutes) against the peer");
  cmd->add_option("--json", args->json_path, "Also write the JSON summary to this file");
  cmd->callback([args] { bench(*args); });
}

}  // namespace groklab::cli

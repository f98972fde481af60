// Parity with the Python peer (grok_reference.py, run by Debian's
// python3-torch on the same libtorch): the default experiment's split, initial
// parameters, logits, float64 losses and parameters after AdamW updates must be
// bit-identical. tests/peer/grok_peer.py writes Python's side.
#include <sys/wait.h>
#include <unistd.h>

#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "builtins.h"
#include "groklab/components.h"
#include "groklab/host.h"
#include "groklab/manifest.h"
#include "groklab/trainer.h"

namespace fs = std::filesystem;
using namespace groklab;
using test::params_for;
using test::builtins;

namespace {

// AdamW updates compared; GROKLAB_PEER_STEPS overrides (e.g. 1000 for a long check).
int steps() {
  const char* env = std::getenv("GROKLAB_PEER_STEPS");
  return env != nullptr ? std::max(1, std::atoi(env)) : 5;
}
const char* kPython = "/usr/bin/python3";

// Runs the Python peer once per process; returns its output directory.
const fs::path& python_side() {
  static const fs::path dir = [] {
    fs::path out = fs::temp_directory_path() / ("groklab-peer-" + std::to_string(::getpid()));
    fs::remove_all(out);
    const std::string check = std::string(kPython) + " -c 'import torch' 2>/dev/null";
    if (std::system(check.c_str()) != 0)
      FAIL("python3-torch is missing: " << kPython
                                        << " cannot import torch (run scripts/setup.sh, which "
                                           "installs Debian's python3-torch)");
    const std::string cmd = std::string(kPython) + " " + GROKLAB_SOURCE_DIR +
                            "/tests/peer/grok_peer.py --out " + out.string() +
                            " --steps " + std::to_string(steps());
    const int rc = std::system(cmd.c_str());
    if (rc != 0) FAIL("the Python peer failed (" << cmd << ", status " << rc << ")");
    return out;
  }();
  return dir;
}

// Reads a raw little-endian file written by the peer as a tensor of `like`'s shape and dtype.
torch::Tensor read_raw(const fs::path& file, const torch::Tensor& like) {
  std::ifstream in(file, std::ios::binary);
  REQUIRE(in.good());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto t = torch::empty(like.sizes(), like.options().requires_grad(false));
  REQUIRE(bytes.size() == static_cast<size_t>(t.numel()) * t.element_size());
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

// Largest |a − b|, for the report when two tensors differ.
double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

void check_params(Model& m, const fs::path& dir) {
  for (const auto& p : m.named_parameters()) {
    auto want = read_raw(dir / (p.key() + ".bin"), p.value());
    INFO(p.key() << ": max |C++ − Python| = " << max_abs_diff(p.value(), want));
    CHECK(torch::equal(p.value().detach(), want));
  }
}

}  // namespace

TEST_CASE("the default experiment is bit-identical to the Python peer", "[peer]") {
  at::set_num_threads(1);
  const fs::path& py = python_side();
  auto task = builtins().find(Kind::Task, "modular_arithmetic")
                  ->make_task(params_for(Kind::Task, "modular_arithmetic"));

  // Split: every train example, for two seeds.
  for (int seed : {0, 1}) {
    task->prepare(static_cast<uint64_t>(seed));
    auto x = task->batch("train", torch::arange(task->size("train"))).inputs;
    INFO("split seed " << seed);
    CHECK(torch::equal(x, read_raw(py / ("split_" + std::to_string(seed) + ".bin"), x)));
  }

  task->prepare(0);
  auto train = task->batch("train", torch::arange(task->size("train")));
  const auto xtr = train.inputs;
  const auto ytr = train.targets.select(1, 2).contiguous();

  // Initial parameters: the trainer seeds the default generator before build().
  auto arch = builtins().find(Kind::Architecture, "transformer")
                  ->make_architecture(params_for(Kind::Architecture, "transformer",
                                                    {{"ln_eps", 0.0}, {"last_block_at_readout", false}}));
  torch::manual_seed(0);
  auto model = arch->build(task->spec());
  {
    INFO("initial parameters");
    check_params(*model, py / "init");
  }

  // Forward pass.
  {
    torch::NoGradGuard g;
    auto logits = model->forward(xtr);
    REQUIRE(logits.sizes() == torch::IntArrayRef({xtr.size(0), 1, 114}));
    auto want = read_raw(py / "logits0.bin", logits.squeeze(1));
    INFO("logits at init: max |C++ − Python| = " << max_abs_diff(logits.squeeze(1), want));
    CHECK(torch::equal(logits.squeeze(1), want));
  }

  // AdamW as grok_reference.py: lr 1e-3, betas (0.9, 0.98), weight decay 1, float64 loss.
  auto opt = builtins().find(Kind::Optimizer, "adamw")
                 ->make_optimizer(params_for(Kind::Optimizer, "adamw",
                                           {{"lr", 1e-3}, {"beta2", 0.98}, {"weight_decay", 1.0}}));
  std::vector<std::pair<std::string, torch::Tensor>> params;
  for (const auto& p : model->named_parameters()) params.emplace_back(p.key(), p.value());
  opt->attach(params);
  const int n_steps = steps();
  auto losses = torch::empty({n_steps}, torch::kDouble);
  for (int step = 1; step <= n_steps; ++step) {
    opt->zero_grad();
    auto logits = model->forward(xtr);
    auto loss = at::cross_entropy_loss(logits.reshape({-1, logits.size(2)}).to(torch::kDouble), ytr,
                                       {}, at::Reduction::Mean, -100, 0.0);
    loss.backward();
    opt->step(step);
    losses[step - 1] = loss.item<double>();
  }
  auto want_losses = read_raw(py / "losses.bin", losses);
  {
    auto differ = losses.ne(want_losses).nonzero();
    INFO("first differing loss at update "
         << (differ.numel() > 0 ? differ[0].item<int64_t>() + 1 : 0)
         << ", max |C++ − Python| = " << max_abs_diff(losses, want_losses));
    CHECK(torch::equal(losses, want_losses));
  }
  {
    INFO("parameters after " << n_steps << " AdamW updates");
    check_params(*model, py / "final");
  }

  // The same through the manifest and the trainer: the default experiment's
  // seed policy, split, init, loss and optimizer are the peer's (with the
  // last block at every position, as PyTorch code computes it).
  {
    struct Last : TrainObserver {
      std::string bytes;
      void on_eval(int64_t, const std::map<std::string, double>&) override {}
      void on_checkpoint(const Checkpoint& c) override { bytes = c.bytes; }
    } last;
    Composer composer(builtins());
    const ResolvedConfig config = composer.compose(
        std::string(GROKLAB_SOURCE_DIR) + "/manifests/grokking/modadd_mlp_pre.toml",
        {"architecture.last_block_at_readout=false", "run.steps=" + std::to_string(n_steps), "run.eval_every=1000"});
    Trainer(config, builtins()).run(last);
    std::vector<char> data(last.bytes.begin(), last.bytes.end());
    const auto state = torch::pickle_load(data).toGenericDict().at("model").toGenericDict();
    for (const auto& e : state) {
      const torch::Tensor t = e.value().toTensor();
      auto want = read_raw(py / "final" / (e.key().toStringRef() + ".bin"), t);
      INFO("trainer, " << e.key().toStringRef() << ": max |C++ − Python| = " << max_abs_diff(t, want));
      CHECK(torch::equal(t, want));
    }
  }
  fs::remove_all(py);
}

// examples/sparse_parity end to end, as a user meets it: install groklab,
// build the example against the installed package, list it, run its manifest
// for a few steps into a ledger and verify the ledger; then the task's data,
// through the built library loaded by a plugin host.
#include <unistd.h>

#include <torch/torch.h>  // before Catch2: glog's CHECK must not replace Catch2's
#include <catch2/catch.hpp>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "groklab/components.h"
#include "groklab/host.h"
#include "groklab/ledger/hash.h"
#include "groklab/manifest.h"
#include "support.h"

namespace fs = std::filesystem;
using groklab::test::run_command;

namespace {

const std::string kExample = std::string(GROKLAB_SOURCE_DIR) + "/examples/sparse_parity";

// Runs a command that must succeed; returns its output.
std::string must(const std::string& cmd) {
  std::string out;
  if (run_command(cmd, out) != 0) FAIL("command failed: " << cmd << "\n" << out);
  return out;
}

// The data of one prepared task: inputs and targets of both splits.
struct Data {
  torch::Tensor train_in, train_tg, test_in, test_tg;
};

Data prepare(groklab::Task& task, uint64_t seed) {
  task.prepare(seed);
  auto all = [&](const std::string& split) {
    return task.batch(split, torch::arange(task.size(split), torch::kLong));
  };
  groklab::Batch tr = all("train"), te = all("test");
  return {tr.inputs, tr.targets, te.inputs, te.targets};
}

// XXH3-128 of every tensor's bytes, in order.
std::string hash(const Data& d) {
  groklab::ledger::Hasher h;
  for (const auto& t : {d.train_in, d.train_tg, d.test_in, d.test_tg}) {
    auto c = t.contiguous();
    h.update(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
  }
  return h.hex();
}

// The bits of each example as a string of '0'/'1' (the readout token dropped).
std::vector<std::string> patterns(const torch::Tensor& inputs) {
  std::vector<std::string> out;
  auto a = inputs.accessor<int64_t, 2>();
  for (int64_t e = 0; e < inputs.size(0); ++e) {
    std::string s;
    for (int64_t j = 0; j + 1 < inputs.size(1); ++j) s += static_cast<char>('0' + a[e][j]);
    out.push_back(s);
  }
  return out;
}

// The labels (target at the readout position) of each example.
std::vector<int64_t> labels(const torch::Tensor& targets) {
  auto last = targets.select(1, targets.size(1) - 1).contiguous();
  return {last.data_ptr<int64_t>(), last.data_ptr<int64_t>() + last.numel()};
}

// Every k-subset of 0..n-1 whose parity equals every label of the examples.
std::vector<std::vector<int>> consistent_subsets(const std::vector<std::string>& xs,
                                                 const std::vector<int64_t>& ys, int n, int k) {
  std::vector<std::vector<int>> found;
  for (unsigned mask = 0; mask < (1U << n); ++mask) {
    if (__builtin_popcount(mask) != k) continue;
    bool ok = true;
    for (size_t e = 0; e < xs.size() && ok; ++e) {
      int parity = 0;
      for (int j = 0; j < n; ++j)
        if (mask & (1U << j)) parity ^= xs[e][static_cast<size_t>(j)] - '0';
      ok = parity == ys[e];
    }
    if (!ok) continue;
    std::vector<int> s;
    for (int j = 0; j < n; ++j)
      if (mask & (1U << j)) s.push_back(j);
    found.push_back(s);
  }
  return found;
}

}  // namespace

TEST_CASE("examples/sparse_parity builds out of tree, runs into a ledger, and its data is right",
          "[example][sparse_parity]") {
  const fs::path work =
      fs::temp_directory_path() / ("groklab-example-sp-" + std::to_string(::getpid()));
  fs::remove_all(work);
  const fs::path prefix = work / "prefix", build = work / "build", ledger = work / "ledger";
  const std::string cmake = GROKLAB_CMAKE_COMMAND;

  // Install, then build the example exactly as docs/writing-a-task-plugin.md says.
  must(cmake + " --install " GROKLAB_BUILD_DIR " --prefix " + prefix.string());
  must(cmake + " -S " + kExample + " -B " + build.string() +
       " -G Ninja -DCMAKE_PREFIX_PATH=" + prefix.string());
  must(cmake + " --build " + build.string());
  const fs::path library = build / "libsparse_parity.so";
  REQUIRE(fs::exists(library));

  const std::string host =
      "GROKLAB_PLUGIN_PATH=" + build.string() + " " + (prefix / "bin" / "groklab").string();
  {
    std::string out = must(host + " -q plugins");
    INFO(out);
    CHECK(out.find("sparse_parity") != std::string::npos);
    CHECK(out.find("failed to load") == std::string::npos);
    out = must(host + " -q plugins show sparse_parity");
    for (const char* param : {"train_size", "test_size", "subset"})
      CHECK(out.find(param) != std::string::npos);
  }

  {  // The manifest runs for a few steps into a ledger that verifies.
    const std::string manifest = kExample + "/sparse_parity.toml";
    std::string out = must(host + " -q run " + manifest +
                           " run.steps=6 run.eval_every=3 run.checkpoint_every=3 --ledger " +
                           ledger.string());
    INFO(out);
    CHECK(out.find("test_accuracy") != std::string::npos);
    out = must(host + " -q ledger --ledger " + ledger.string() + " verify");
    INFO(out);
    // The run names its task; the entry list shows the manifest's file name
    // whatever the length of the checkout's path.
    out = must(host + " -q ledger --ledger " + ledger.string() + " list --runs");
    CHECK_THAT(out, Catch::Contains("finished") && Catch::Contains("sparse_parity/transformer/adamw"));
    out = must(host + " -q ledger --ledger " + ledger.string() + " list");
    CHECK_THAT(out, Catch::Contains("sparse_parity.toml"));

    // A parameter the task rejects is a clear error, and nothing is trained.
    std::string bad;
    CHECK(run_command(host + " -q run " + manifest + " task.n=8 task.k=9 --ledger " +
                          ledger.string(),
                      bad) != 0);
    CHECK_THAT(bad, Catch::Contains("sparse_parity: k = 9 exceeds n = 8"));
  }

  {  // The data: deterministic, labelled by the subset's parity, splits disjoint.
    groklab::PluginHost plugins;
    plugins.load_directory(GROKLAB_BUILTIN_PLUGIN_DIR);
    REQUIRE(plugins.load_library(library.string()));
    const groklab::Component* c =
        plugins.registry().find(groklab::Kind::Task, "sparse_parity");
    REQUIRE(c != nullptr);
    groklab::Composer composer(plugins.registry());
    auto make = [&](const std::vector<std::string>& overrides) {
      auto cfg = composer.compose(kExample + "/sparse_parity.toml", overrides);
      return c->make_task(cfg.task.params);
    };

    // Shapes and tokens: n bits then the readout token 2, scored there only, 2 classes.
    auto task = make({"task.n=10", "task.k=3", "task.train_size=300", "task.test_size=200"});
    const groklab::TaskSpec spec = task->spec();
    CHECK(spec.vocab_size == 3);
    CHECK(spec.seq_len == 11);
    CHECK(spec.num_classes == 2);
    const Data d = prepare(*task, 0);
    REQUIRE(d.train_in.sizes() == torch::IntArrayRef({300, 11}));
    REQUIRE(d.test_in.sizes() == torch::IntArrayRef({200, 11}));
    for (const auto& [in, tg] : {std::pair(d.train_in, d.train_tg), std::pair(d.test_in, d.test_tg)}) {
      CHECK(torch::all(in.select(1, 10) == 2).item<bool>());
      CHECK(torch::all(in.narrow(1, 0, 10).le(1)).item<bool>());
      CHECK(torch::all(in.narrow(1, 0, 10).ge(0)).item<bool>());
      CHECK(torch::all(tg.narrow(1, 0, 10) == -1).item<bool>());
      CHECK(torch::all(tg.select(1, 10).le(1)).item<bool>());
      CHECK(torch::all(tg.select(1, 10).ge(0)).item<bool>());
    }

    // Deterministic: the same seed gives the same bytes from a fresh task, another seed does not.
    const std::string h0 = hash(d);
    auto again = make({"task.n=10", "task.k=3", "task.train_size=300", "task.test_size=200"});
    CHECK(hash(prepare(*again, 0)) == h0);
    CHECK(hash(prepare(*again, 1)) != h0);
    CHECK(hash(prepare(*again, 0)) == h0);

    // Train and test: no input twice, none in both.
    const auto train_x = patterns(d.train_in), test_x = patterns(d.test_in);
    std::set<std::string> train_set(train_x.begin(), train_x.end());
    std::set<std::string> test_set(test_x.begin(), test_x.end());
    CHECK(train_set.size() == train_x.size());
    CHECK(test_set.size() == test_x.size());
    for (const auto& x : test_x) CHECK(train_set.count(x) == 0);

    // The label is the parity of one hidden 3-subset, the same in both splits:
    // exactly one of the 120 candidates explains all 500 labels. The subset and
    // first examples are those of the algorithm documented in the example's
    // README, computed there independently in Python.
    std::vector<std::string> xs = train_x;
    xs.insert(xs.end(), test_x.begin(), test_x.end());
    std::vector<int64_t> ys = labels(d.train_tg), test_y = labels(d.test_tg);
    ys.insert(ys.end(), test_y.begin(), test_y.end());
    CHECK(consistent_subsets(xs, ys, 10, 3) == std::vector<std::vector<int>>{{1, 5, 9}});
    CHECK(train_x[0] == "0011011110");
    CHECK(test_x[0] == "1010001001");
    CHECK(labels(d.train_tg)[0] == 1);

    // An explicit subset labels the same inputs by its parity instead.
    auto fixed = make({"task.n=10", "task.k=3", "task.train_size=300", "task.test_size=200",
                       "task.subset=[7, 0, 3]"});
    const Data f = prepare(*fixed, 0);
    CHECK(torch::equal(f.train_in, d.train_in));
    CHECK(torch::equal(f.test_in, d.test_in));
    const auto fixed_y = labels(f.train_tg);
    for (size_t e = 0; e < train_x.size(); ++e) {
      const int parity = (train_x[e][0] - '0') ^ (train_x[e][3] - '0') ^ (train_x[e][7] - '0');
      CHECK(fixed_y[e] == parity);
    }

    // Every input of n bits in one of the splits: still all distinct.
    auto whole = make({"task.n=10", "task.train_size=1000", "task.test_size=24"});
    const Data w = prepare(*whole, 3);
    auto wx = patterns(w.train_in);
    const auto wt = patterns(w.test_in);
    wx.insert(wx.end(), wt.begin(), wt.end());
    CHECK(std::set<std::string>(wx.begin(), wx.end()).size() == 1024);

    // The documented 40-bit default: subset and first inputs from the same Python reference.
    auto wide = make({"task.n=40", "task.train_size=5", "task.test_size=5"});
    const Data g = prepare(*wide, 7);
    CHECK(patterns(g.train_in)[0] == "1101001110010100011111001110011000001110");
    CHECK(patterns(g.test_in)[0] == "0110010010000010001111111001100101011110");
    CHECK(labels(g.train_tg)[0] == 0);
    CHECK(labels(g.test_tg)[0] == 1);

    // Bad parameters the schema cannot see are clear errors from the task.
    auto rejects = [&](const std::vector<std::string>& overrides, const std::string& message) {
      INFO(message);
      CHECK_THROWS_WITH(make(overrides), Catch::Contains(message));
    };
    rejects({"task.n=4", "task.k=5"}, "sparse_parity: k = 5 exceeds n = 4");
    rejects({"task.n=10", "task.train_size=1000", "task.test_size=25"},
            "train_size + test_size = 1025 exceeds the 2^10 = 1024 distinct inputs");
    rejects({"task.subset=[1, 2]"}, "subset has 2 positions but k = 3");
    rejects({"task.n=10", "task.train_size=300", "task.test_size=200", "task.subset=[1, 2, 10]"},
            "subset position 10 is not in [0, 9]");
    rejects({"task.subset=[4, 2, 4]"}, "subset position 4 is given twice");
    CHECK_THROWS_AS(make({"task.n=0"}), groklab::ManifestErrors);
  }
  fs::remove_all(work);
}

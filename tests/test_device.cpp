// run.device: what the composer accepts, what a build without CUDA says, and
// what the environment fingerprint records. On a CUDA build with a GPU the
// same test trains on the GPU instead and checks its determinism and resume.
#include <torch/torch.h>  // before Catch2: glog's CHECK must not replace Catch2's
#include <ATen/detail/CUDAHooksInterface.h>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "groklab/host.h"
#include "groklab/manifest.h"
#include "groklab/runs.h"
#include "groklab/trainer.h"
#include "support.h"

using namespace groklab;
using test::test_host;
using json = nlohmann::json;

namespace {

const std::string kTiny = std::string(GROKLAB_SOURCE_DIR) + "/tests/data/tiny_copy.toml";

struct Hashes : TrainObserver {
  std::vector<std::string> params;
  std::vector<std::string> bytes;
  void on_eval(int64_t, const std::map<std::string, double>&) override {}
  void on_checkpoint(const Checkpoint& c) override {
    params.push_back(c.params_hash);
    bytes.push_back(c.bytes);
  }
};

}  // namespace

TEST_CASE("run.device is cpu, cuda or cuda:N; anything else is a manifest error", "[device][manifest]") {
  Composer composer(test_host().registry());
  for (const char* ok : {"cpu", "cuda", "cuda:0", "cuda:12"})
    CHECK(composer.compose(kTiny, {std::string("run.device=") + ok}).run.device == ok);
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "CUDA", "cuda:0:1", "mps"}) {
    INFO(bad);
    try {
      composer.compose(kTiny, {std::string("run.device=") + bad});
      FAIL("accepted");
    } catch (const ManifestErrors& e) {
      REQUIRE(e.errors().size() == 1);
      CHECK(e.errors()[0].key_path == "run.device");
      CHECK(e.errors()[0].file == "<command line>");
      CHECK_THAT(e.errors()[0].message, Catch::Contains("expected \"cpu\", \"cuda\" or \"cuda:N\""));
    }
  }
}

TEST_CASE("training on CUDA: a clear error without it, deterministic and resumable with it", "[device][trainer]") {
  const ResolvedConfig cuda = Composer(test_host().registry()).compose(kTiny, {"run.device=cuda"});
  if (!torch::cuda::is_available()) {
    CHECK_THROWS_WITH(Trainer(cuda, test_host().registry()),
                      Catch::Contains("run.device = \"cuda\"") &&
                          (Catch::Contains("built against a LibTorch without CUDA") ||
                           Catch::Contains("no CUDA GPU is visible")));
    const json env = environment(test_host(), 1, "cuda");
    CHECK(env.at("cuda").at("device") == "cuda");
    CHECK(env.at("cuda").at("built_with_cuda") == at::detail::getCUDAHooks().hasCUDART());
  } else {
    Hashes a, b;
    Trainer(cuda, test_host().registry()).run(a);
    Trainer(cuda, test_host().registry()).run(b);
    CHECK(a.params == b.params);
    TrainPlan from_second;  // resume from the second checkpoint: same last bits
    from_second.resume_from = a.bytes.at(1);
    Hashes r;
    Trainer(cuda, test_host().registry()).run(r, from_second);
    CHECK(r.params.back() == a.params.back());
    const json env = environment(test_host(), 1, "cuda");
    CHECK(env.at("cuda").at("deterministic_algorithms") == true);
    CHECK(env.at("cuda").at("CUBLAS_WORKSPACE_CONFIG") == ":4096:8");
    CHECK_THROWS_WITH(Trainer(Composer(test_host().registry()).compose(kTiny, {"run.device=cuda:99"}),
                              test_host().registry()),
                      Catch::Contains("visible CUDA GPU"));
  }
  // A CPU run's fingerprint has no CUDA part (CPU fingerprints stay as they were).
  CHECK_FALSE(environment(test_host(), 1, "cpu").contains("cuda"));
}

// The plugin host against real built libraries: good ones, bad ones, and
// directories that are missing or unreadable.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "groklab/components.h"
#include "groklab/host.h"
#include "groklab/ledger/hash.h"
#include "groklab/plugin.h"

namespace fs = std::filesystem;
using namespace groklab;

namespace {
const std::string kGood = std::string(GROKLAB_TEST_PLUGIN_DIR) + "/good";
const std::string kBad = std::string(GROKLAB_TEST_PLUGIN_DIR) + "/bad";
const std::string kDup = std::string(GROKLAB_TEST_PLUGIN_DIR) + "/dup";

std::string reason_for(const PluginHost& host, const std::string& file) {
  for (const auto& b : host.broken())
    if (fs::path(b.path).filename() == file) return b.reason;
  return "";
}
}  // namespace

TEST_CASE("a good plugin registers one component of each kind", "[host]") {
  PluginHost host;
  REQUIRE(host.load_directory(kGood) == 1);
  CHECK(host.broken().empty());
  const auto& reg = host.registry();
  REQUIRE(reg.find(Kind::Task, "test_copy") != nullptr);
  REQUIRE(reg.find(Kind::Architecture, "test_linear") != nullptr);
  REQUIRE(reg.find(Kind::Optimizer, "test_sgd") != nullptr);
  REQUIRE(reg.find(Kind::Metric, "test_param_count") != nullptr);

  const Component* task = reg.find(Kind::Task, "test_copy");
  REQUIRE(task->library);
  CHECK(task->library->name == "test_components");
  CHECK(task->library->version == "1.2.3");
  CHECK(task->library->torch_version == TORCH_VERSION);
  CHECK(task->library->hash == ledger::hash_file(kGood + "/libtest_components.so"));
  CHECK(task->library->hash.size() == 32);
  REQUIRE(task->schema.find("vocab") != nullptr);
  CHECK(task->schema.find("vocab")->default_value->as_int() == 16);
}

TEST_CASE("components from a plugin are usable end to end", "[host]") {
  PluginHost host;
  host.load_directory(kGood);
  const auto& reg = host.registry();
  auto task = reg.find(Kind::Task, "test_copy")->make_task(Params({{"vocab", 16}, {"examples", 8}, {"odd_seed_examples", 0}}));
  task->prepare(7);
  auto batch = task->batch("train", torch::arange(8));
  auto arch = reg.find(Kind::Architecture, "test_linear")->make_architecture(Params({{"width", 4}}));
  auto model = arch->build(task->spec());
  auto logits = model->forward(batch.inputs);
  CHECK(logits.sizes() == torch::IntArrayRef({8, 4, 16}));
  CHECK(task->correct(logits, batch).sizes() == torch::IntArrayRef({8}));
  auto metric = reg.find(Kind::Metric, "test_param_count")->make_metric(Params());
  EvalContext ctx;
  ctx.model = model.get();
  CHECK(metric->evaluate(ctx).at("parameters") == 16 * 4 + 4 * 16 + 16);
}

TEST_CASE("bad plugins are reported with their reason and never stop the host", "[host][bad-input]") {
  PluginHost host;
  CHECK(host.load_directory(kBad) == 0);
  CHECK(host.load_directory(kGood) == 1);  // the good one still loads afterwards

  SECTION("wrong ABI version names both versions") {
    auto r = reason_for(host, "libtest_bad_abi.so");
    CHECK_THAT(r, Catch::Contains("plugin ABI version " + std::to_string(GROKLAB_PLUGIN_ABI_VERSION + 41)));
    CHECK_THAT(r, Catch::Contains("host expects " + std::to_string(GROKLAB_PLUGIN_ABI_VERSION)));
  }
  SECTION("a throwing register function is caught and registers nothing") {
    CHECK_THAT(reason_for(host, "libtest_throws.so"),
               Catch::Contains("register function failed: deliberate failure in test_throws"));
    CHECK(host.registry().find(Kind::Metric, "test_never_registered") == nullptr);
  }
  SECTION("a text file named .so") {
    CHECK_THAT(reason_for(host, "libnot_elf.so"), Catch::Contains("not a loadable shared library"));
  }
  SECTION("a library without the entry symbol") {
    CHECK_THAT(reason_for(host, "libtest_no_entry.so"), Catch::Contains("no entry symbol 'groklab_plugin_entry'"));
  }
  SECTION("a component of an undeclared kind") {
    CHECK_THAT(reason_for(host, "libtest_wrong_kind.so"),
               Catch::Contains("does not declare kind optimizer"));
    CHECK(host.registry().find(Kind::Optimizer, "test_sneaky") == nullptr);
  }
  SECTION("every broken entry names its file") {
    CHECK(host.broken().size() == 5);
    for (const auto& b : host.broken()) CHECK(fs::path(b.path).is_absolute());
  }
  CHECK(host.registry().find(Kind::Task, "test_copy") != nullptr);
}

TEST_CASE("two libraries registering the same component: the second registers nothing", "[host][bad-input]") {
  PluginHost host;
  host.load_directory(kGood);
  CHECK(host.load_directory(kDup) == 0);
  auto r = reason_for(host, "libtest_duplicate.so");
  CHECK_THAT(r, Catch::Contains("task 'test_copy' is already provided by"));
  CHECK_THAT(r, Catch::Contains("libtest_components.so"));
  CHECK(host.registry().find(Kind::Task, "test_unique_from_duplicate") == nullptr);
  CHECK(host.registry().find(Kind::Task, "test_copy")->library->name == "test_components");
}

TEST_CASE("missing and unreadable plugin directories are reported", "[host][bad-input]") {
  PluginHost host;
  CHECK(host.load_directory("/nonexistent/groklab/plugins") == 0);
  REQUIRE(host.broken().size() == 1);
  CHECK(host.broken()[0].path == "/nonexistent/groklab/plugins");
  CHECK_THAT(host.broken()[0].reason, Catch::Contains("No such file or directory"));

  // A file where a directory is expected cannot be listed, even by root.
  auto file = fs::temp_directory_path() / ("groklab-notadir-" + std::to_string(::getpid()));
  std::ofstream(file) << "x";
  CHECK(host.load_directory(file.string()) == 0);
  CHECK_THAT(host.broken().back().reason, Catch::Contains("Not a directory"));
  fs::remove(file);

  CHECK(host.load_directory(kGood) == 1);
}

TEST_CASE("GROKLAB_PLUGIN_PATH adds directories to the search path", "[host]") {
  ::setenv("GROKLAB_PLUGIN_PATH", (kGood + ":/nonexistent/dir").c_str(), 1);
  auto dirs = PluginHost::default_search_path();
  ::unsetenv("GROKLAB_PLUGIN_PATH");
  REQUIRE(dirs.size() >= 2);
  CHECK(dirs[dirs.size() - 2] == kGood);
  CHECK(dirs.back() == "/nonexistent/dir");
}

TEST_CASE("loading the same library twice is a no-op", "[host]") {
  PluginHost host;
  CHECK(host.load_library(kGood + "/libtest_components.so"));
  CHECK_FALSE(host.load_library(kGood + "/./libtest_components.so"));
  CHECK(host.broken().empty());
  CHECK(host.libraries().size() == 1);
}

// libFuzzer target over the manifest composer: parse, includes, overrides,
// sweeps, validation and the canonical round trip, against a hand-built
// registry (no plugins, no LibTorch).
//
// Input: NUL-separated parts. Part 0 is fuzz/main.toml, parts 1 and 2 are
// fuzz/a.toml and fuzz/b.toml (includable), the rest are command-line
// overrides. The composer may only throw ManifestErrors; every child it
// returns must round-trip: its canonical text composes to the same text.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "groklab/manifest.h"
#include "groklab/registry.h"

using namespace groklab;

namespace {

template <class T>
std::function<std::shared_ptr<T>(const Params&)> none() {
  return [](const Params&) { return std::shared_ptr<T>(); };
}

const Registry& registry() {
  static Registry reg = [] {
    Registrar r;
    r.add_task("test_copy", "", Schema().integer("vocab", 16, "").range(2, 1000).integer("examples", 64, "").min(1),
               none<Task>());
    r.add_task("modular_arithmetic", "",
               Schema()
                   .integer("p", 113, "").range(2, 4096)
                   .choice("operation", "add", {"add", "sub", "mul", "div"}, "")
                   .real("train_fraction", 0.3, "").range(0.0, 1.0),
               none<Task>());
    r.add_architecture("test_linear", "", Schema().integer("width", 8, "").min(1), none<Architecture>());
    r.add_architecture("edge", "",
                       Schema()
                           .boolean("flag", false, "")
                           .string("name", std::nullopt, "")
                           .list("dims", Value::List{1, 2}, "", ParamType::Int).range(1, 4)
                           .list("scales", std::nullopt, "", ParamType::Float)
                           .list("anything", Value::List{}, "")
                           .real("eps", std::nullopt, ""),
                       none<Architecture>());
    r.add_optimizer("test_sgd", "", Schema().real("lr", 0.1, "").min(0), none<Optimizer>());
    r.add_optimizer("adamw", "",
                    Schema().real("lr", 1e-3, "").min(0).list("betas", Value::List{0.9, 0.98}, "", ParamType::Float)
                        .real("weight_decay", 1.0, ""),
                    none<Optimizer>());
    r.add_metric("test_param_count", "", Schema(), none<Metric>());
    r.add_metric("accuracy", "", Schema().choice("split", "test", {"train", "test"}, ""), none<Metric>());
    Registry out;
    if (!out.add_all(r.take()).empty()) std::abort();
    return out;
  }();
  return reg;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) parts.emplace_back();
    else parts.back() += static_cast<char>(data[i]);
  }
  auto files = std::make_shared<std::map<std::string, std::string>>();
  if (parts.size() > 1) (*files)["fuzz/a.toml"] = parts[1];
  if (parts.size() > 2) (*files)["fuzz/b.toml"] = parts[2];
  std::vector<std::string> overrides;
  for (size_t i = 3; i < parts.size() && overrides.size() < 8; ++i) overrides.push_back(parts[i]);

  ComposerOptions options;
  options.reader = [files](const std::string& path, std::string& contents, std::string& error) {
    auto it = files->find(path);
    if (it == files->end()) {
      error = "no such file";
      return false;
    }
    contents = it->second;
    return true;
  };
  options.max_sweep_children = 64;
  options.max_files = 32;
  const Composer composer(registry(), options);

  std::vector<SweepChild> children;
  try {
    children = composer.expand_string(parts[0], "fuzz/main.toml", overrides);
  } catch (const ManifestErrors& e) {
    if (e.errors().empty() || std::string(e.what()).empty()) std::abort();
    for (const auto& err : e.errors())
      if (err.file.empty() || err.message.empty()) std::abort();
    return 0;
  }
  if (children.empty()) std::abort();
  for (size_t i = 0; i < children.size() && i < 4; ++i) {
    const std::string text = children[i].config.canonical();
    try {
      ResolvedConfig again = composer.compose_string(text, "canonical.toml");
      if (again.canonical() != text || again.hash() != children[i].config.hash()) {
        std::fprintf(stderr, "canonical text does not round-trip:\n%s\n---\n%s\n", text.c_str(),
                     again.canonical().c_str());
        std::abort();
      }
    } catch (const ManifestErrors& e) {
      std::fprintf(stderr, "canonical text does not compose:\n%s\n---\n%s\n", text.c_str(), e.what());
      std::abort();
    }
  }
  return 0;
}

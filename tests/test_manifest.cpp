// The manifest composer: canonical form and hash (invariances and
// sensitivities, property-style), includes, overrides, sweeps, round trip.
// Error messages are in test_manifest_errors.cpp.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "groklab/host.h"
#include "groklab/manifest.h"
#include "support.h"

using namespace groklab;
namespace fs = std::filesystem;

namespace Catch {
template <>
struct StringMaker<groklab::Value> {
  static std::string convert(const groklab::Value& v) { return v.canonical(); }
};
}  // namespace Catch

namespace {

const std::string kGood = std::string(GROKLAB_TEST_PLUGIN_DIR) + "/good";
const std::string kManifests = std::string(GROKLAB_SOURCE_DIR) + "/tests/manifests";

// The test plugins and the built-in ones.
const Registry& plugins() {
  static PluginHost host;
  static const bool loaded = [] {
    host.load_directory(kGood);
    host.load_directory(GROKLAB_BUILTIN_PLUGIN_DIR);
    return true;
  }();
  (void)loaded;
  return host.registry();
}

using groklab::test::none;

// Hand-built components with every parameter type: bools, strings, lists, required values.
const Registry& edge_registry() {
  static const Registry reg = [] {
    Registrar r;
    r.add_task("t", "", Schema().integer("n", 3, "").min(1), none<Task>());
    r.add_architecture("a", "",
                       Schema()
                           .boolean("flag", false, "")
                           .string("name", "net", "")
                           .list("dims", Value::List{1, 2}, "", ParamType::Int)
                           .range(1, 4)
                           .list("scales", Value::List{0.5}, "", ParamType::Float)
                           .list("anything", Value::List{}, ""),
                       none<Architecture>());
    r.add_optimizer("o", "", Schema().real("lr", 0.1, "").min(0).real("eps", std::nullopt, ""),
                    none<Optimizer>());
    r.add_optimizer("o2", "", Schema().real("lr", 0.01, "").min(0).real("momentum", 0.9, ""),
                    none<Optimizer>());
    r.add_metric("m", "", Schema().choice("split", "test", {"train", "test"}, ""), none<Metric>());
    Registry out;
    REQUIRE(out.add_all(r.take()).empty());
    return out;
  }();
  return reg;
}

using groklab::test::in_memory;

std::string compose_hash(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return Composer(plugins()).compose_string(text, "m.toml", overrides).hash();
}

// One key of the base manifest and the ways TOML can spell its value.
struct Entry {
  std::string table;
  std::string key;
  std::vector<std::string> spellings;
};

const std::vector<Entry> kBase = {
    {"task", "plugin", {"\"test_copy\"", "'test_copy'", "\"test\\u005fcopy\""}},
    {"task", "vocab", {"32", "+32", "0x20", "3_2"}},
    {"task", "examples", {"100", "1_0_0", "0o144"}},
    {"architecture", "plugin", {"\"test_linear\"", "'test_linear'"}},
    {"architecture", "width", {"12", "0b1100"}},
    {"optimizer", "plugin", {"\"test_sgd\"", "'test_sgd'"}},
    {"optimizer", "lr", {"0.001", "1e-3", "1.0e-3", "1E-3", "0.0010", "10e-4"}},
    {"run", "seed", {"5"}},
    {"run", "steps", {"300", "3_00"}},
    {"run", "device", {"\"cpu\"", "'cpu'"}},
};
const char* kMetric = "[[metrics]]\nplugin = \"test_param_count\"\n";

std::string plain(const std::vector<Entry>& entries, bool with_metric = true) {
  std::string out;
  std::string table;
  for (const auto& e : entries) {
    if (e.table != table) out += "[" + (table = e.table) + "]\n";
    out += e.key + " = " + e.spellings.front() + "\n";
  }
  return with_metric ? out + kMetric : out;
}

// The base manifest in a random key order, table style, spelling and layout.
std::string shuffled(std::mt19937& rng) {
  std::map<std::string, std::vector<const Entry*>> by_table;
  for (const auto& e : kBase) by_table[e.table].push_back(&e);
  std::vector<std::string> tables;
  for (const auto& [t, es] : by_table) tables.push_back(t);
  std::shuffle(tables.begin(), tables.end(), rng);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  auto space = [&] { return std::string(pick(3), pick(2) ? ' ' : '\t'); };
  auto spell = [&](const Entry& e) { return e.spellings[pick(e.spellings.size())]; };
  std::string root, headers;
  for (const auto& t : tables) {
    auto es = by_table[t];
    std::shuffle(es.begin(), es.end(), rng);
    switch (pick(3)) {
      case 0:  // [table] then keys
        headers += (pick(2) ? "\n" : "") + std::string("[") + t + "]" + space() +
                   (pick(2) ? "# a comment\n" : "\n");
        for (const Entry* e : es)
          headers += space() + e->key + space() + "=" + space() + spell(*e) + space() +
                     (pick(3) == 0 ? "# why\n" : "\n");
        break;
      case 1:  // dotted keys at the root
        for (const Entry* e : es) root += t + "." + e->key + space() + "=" + space() + spell(*e) + "\n";
        break;
      default: {  // an inline table
        root += t + " = {";
        for (size_t i = 0; i < es.size(); ++i)
          root += (i ? ", " : " ") + es[i]->key + " = " + spell(*es[i]);
        root += " }\n";
      }
    }
  }
  if (pick(2)) headers += std::string("\n# metrics\n") + kMetric;
  else headers = kMetric + headers;
  return (pick(2) ? "# leading comment\n\n" : "") + root + headers;
}

// A value of spec that differs from its default and passes Schema::check.
std::optional<Value> perturb(const ParamSpec& spec) {
  if (!spec.default_value) return std::nullopt;
  const Value& d = *spec.default_value;
  std::vector<Value> candidates;
  switch (spec.type) {
    case ParamType::Int:
      candidates = {Value(d.as_int() + 1), Value(d.as_int() - 1)};
      break;
    case ParamType::Float: {
      double x = d.as_float();
      candidates = {Value(x * 2), Value(x + 0.5), Value(x / 2), Value(x - 0.5), Value(x + 1e-9)};
      break;
    }
    case ParamType::Bool: candidates = {Value(!d.as_bool())}; break;
    case ParamType::String:
      for (const auto& c : spec.choices) candidates.push_back(c);
      // run.device: the composer accepts only cpu, cuda and cuda:N.
      candidates.emplace_back(spec.name == "device" ? std::string("cuda:1") : d.as_string() + "x");
      break;
    case ParamType::List: {
      Value::List more = d.as_list(), fewer = d.as_list();
      more.push_back(more.empty() ? Value(1) : more.back());
      if (!fewer.empty()) fewer.pop_back();
      candidates = {Value(more), Value(fewer)};
      break;
    }
  }
  for (const auto& c : candidates)
    if (c != d && Schema::check(spec, c).empty()) return c;
  return std::nullopt;
}

std::string minimal(const std::string& task = "test_copy", const std::string& arch = "test_linear",
                    const std::string& opt = "test_sgd") {
  return "[task]\nplugin = \"" + task + "\"\n[architecture]\nplugin = \"" + arch +
         "\"\n[optimizer]\nplugin = \"" + opt + "\"\n";
}

}  // namespace

TEST_CASE("a manifest resolves with every default filled in", "[manifest]") {
  ResolvedConfig cfg = Composer(plugins()).compose(kManifests + "/basic.toml");
  CHECK(cfg.task.plugin == "test_copy");
  CHECK(cfg.task.params.get_int("vocab") == 32);
  CHECK(cfg.task.params.get_int("examples") == 64);  // default
  CHECK(cfg.architecture.params.get_int("width") == 16);
  CHECK(cfg.optimizer.params.get("lr") == Value(0.001));
  REQUIRE(cfg.metrics.size() == 1);
  CHECK(cfg.metrics[0].plugin == "test_param_count");
  CHECK(cfg.run.seed == 7);
  CHECK(cfg.run.steps == 200);
  CHECK(cfg.run.batch_size == 0);
  CHECK(cfg.run.eval_every == 100);
  CHECK(cfg.run.checkpoint_every == 1000);
  CHECK(cfg.run.threads == 1);
  CHECK(cfg.run.device == "cpu");
  CHECK(cfg.hash().size() == 32);

  CHECK(cfg.get("architecture.width") == Value(16));
  CHECK(cfg.get("run.seed") == Value(7));
  CHECK(cfg.get("run.device") == Value("cpu"));
  CHECK(cfg.get("task.plugin") == Value("test_copy"));
  CHECK(cfg.get("metrics.0.plugin") == Value("test_param_count"));
  CHECK_FALSE(cfg.get("metrics.1.plugin"));
  CHECK_FALSE(cfg.get("architecture.depth"));
  CHECK_FALSE(cfg.get("task"));
  CHECK_FALSE(cfg.get("nothing.here"));
}

TEST_CASE("the canonical form is sorted TOML with every default explicit", "[manifest]") {
  ResolvedConfig cfg = Composer(plugins()).compose(kManifests + "/basic.toml");
  CHECK(cfg.canonical() ==
        "[architecture]\n"
        "plugin = \"test_linear\"\n"
        "width = 16\n"
        "\n"
        "[[metrics]]\n"
        "plugin = \"test_param_count\"\n"
        "every = 0\n"
        "\n"
        "[optimizer]\n"
        "plugin = \"test_sgd\"\n"
        "lr = 0.001\n"
        "\n"
        "[run]\n"
        "batch_size = 0\n"
        "checkpoint_every = 1000\n"
        "device = \"cpu\"\n"
        "eval_every = 100\n"
        "loss_dtype = \"float64\"\n"
        "seed = 7\n"
        "seed_streams = \"derived\"\n"
        "steps = 200\n"
        "stop_metric = \"\"\n"
        "stop_threshold = 1.0\n"
        "threads = 1\n"
        "\n"
        "[task]\n"
        "plugin = \"test_copy\"\n"
        "examples = 64\n"
        "odd_seed_examples = 0\n"
        "vocab = 32\n");
}

TEST_CASE("the hash ignores key order, table style, spelling, whitespace and comments",
          "[manifest][property]") {
  const std::string base = compose_hash(plain(kBase));
  std::mt19937 rng(20240611);
  for (int i = 0; i < 200; ++i) {
    const std::string text = shuffled(rng);
    INFO(text);
    CHECK(compose_hash(text) == base);
  }
}

TEST_CASE("the hash ignores whether a value comes from an include", "[manifest][property]") {
  const std::string base = compose_hash(plain(kBase));
  const Composer direct(plugins());
  SECTION("each value moved into an include, alone") {
    for (size_t i = 0; i < kBase.size(); ++i) {
      std::vector<Entry> rest = kBase;
      rest.erase(rest.begin() + static_cast<long>(i));
      const std::string inc = plain({kBase[i]}, false);
      const std::string main = "include = [\"inc.toml\"]\n" + plain(rest);
      INFO(inc << "---\n" << main);
      Composer c(plugins(), in_memory({{"dir/inc.toml", inc}}));
      CHECK(c.compose_string(main, "dir/main.toml").hash() == base);
    }
  }
  SECTION("random halves in two includes, metrics in one of them") {
    std::mt19937 rng(7);
    for (int round = 0; round < 30; ++round) {
      std::vector<Entry> a, b, mine;
      for (const auto& e : kBase) {
        int where = std::uniform_int_distribution<int>(0, 2)(rng);
        (where == 0 ? a : where == 1 ? b : mine).push_back(e);
      }
      std::map<std::string, std::string> files = {
          {"conf/a.toml", plain(a, false) + (round % 2 ? kMetric : "")},
          {"conf/sub/b.toml", plain(b, false)}};
      const std::string main = "include = [\"conf/a.toml\", \"conf/sub/b.toml\"]\n" +
                               plain(mine, round % 2 == 0);
      Composer c(plugins(), in_memory(files));
      CHECK(c.compose_string(main, "main.toml").hash() == base);
    }
  }
  SECTION("an including file overrides its include, a later include an earlier one") {
    std::map<std::string, std::string> files = {
        {"a.toml", "[optimizer]\nlr = 0.5\n[task]\nvocab = 7\n"},
        {"b.toml", "[task]\nvocab = 32\n"}};
    Composer c(plugins(), in_memory(files));
    CHECK(c.compose_string("include = [\"a.toml\", \"b.toml\"]\n" + plain(kBase), "m.toml").hash() ==
          base);
  }
  SECTION("real files: child.toml includes base.toml includes run.toml") {
    ResolvedConfig cfg = direct.compose(kManifests + "/include/child.toml");
    CHECK(cfg.hash() == direct.compose(kManifests + "/basic.toml").hash());
    CHECK(cfg.run.seed == 7);     // child overrides base's run.toml
    CHECK(cfg.run.steps == 200);  // from run.toml
    CHECK(cfg.optimizer.params.get_float("lr") == 0.001);
  }
}

TEST_CASE("the hash ignores whether a default is spelled out", "[manifest][property]") {
  int checked = 0;
  for (const Component* c : plugins().all()) {
    bool required = false;
    for (const auto& p : c->schema.params()) required = required || !p.default_value;
    if (required) continue;  // no minimal manifest to compare with
    std::string spelled;
    for (const auto& p : c->schema.params()) {
      if (!p.default_value) continue;
      spelled += p.name + " = " + p.default_value->canonical() + "\n";
      ++checked;
    }
    std::string base, with_defaults;
    switch (c->kind) {
      case Kind::Task: base = minimal(c->name); break;
      case Kind::Architecture: base = minimal("test_copy", c->name); break;
      case Kind::Optimizer: base = minimal("test_copy", "test_linear", c->name); break;
      case Kind::Metric: base = minimal(); break;
    }
    const std::string plugin_line = "plugin = \"" + c->name + "\"\n";
    if (c->kind == Kind::Metric) {
      with_defaults = base + "[[metrics]]\n" + plugin_line + spelled;
      base += "[[metrics]]\n" + plugin_line;
    } else {
      with_defaults = base;
      with_defaults.insert(with_defaults.find(plugin_line) + plugin_line.size(), spelled);
    }
    INFO(with_defaults);
    CHECK(compose_hash(with_defaults) == compose_hash(base));
  }
  std::string run = "[run]\n";
  for (const auto& p : run_schema().params()) run += p.name + " = " + p.default_value->canonical() + "\n";
  CHECK(compose_hash(minimal() + run) == compose_hash(minimal()));
  CHECK(checked >= 7);
}

TEST_CASE("numbers have one canonical value", "[manifest]") {
  const std::string m = minimal();
  auto lr = [&](const std::string& v) { return compose_hash(m, {"optimizer.lr=" + v}); };
  CHECK(lr("1e-3") == lr("0.001"));
  CHECK(lr("1E-3") == lr("0.0010"));
  CHECK(lr("2") == lr("2.0"));
  CHECK(lr("2") == lr("2e0"));
  CHECK(lr("0") == lr("-0.0"));
  CHECK(lr("2") != lr("2.0000001"));
  ResolvedConfig cfg = Composer(plugins()).compose_string(m, "m.toml", {"optimizer.lr=2"});
  CHECK(cfg.optimizer.params.get("lr").is_float());  // an int for a float parameter becomes a float
  CHECK(cfg.canonical().find("lr = 2.0\n") != std::string::npos);
}

TEST_CASE("the hash changes when any one value changes", "[manifest][property]") {
  const Registry& reg = plugins();
  std::set<std::string> hashes;
  int perturbed = 0;
  std::set<std::string> bases;
  auto distinct = [&](const std::string& text, const std::vector<std::string>& overrides) {
    if (overrides.empty() && !bases.insert(text).second) return;  // a base seen before
    std::string h = compose_hash(text, overrides);
    INFO(text);
    for (const auto& o : overrides) INFO(o);
    CHECK(hashes.insert(h).second);
  };
  for (const Component* c : reg.all()) {
    std::string base;
    std::string prefix;
    switch (c->kind) {
      case Kind::Task: base = minimal(c->name); prefix = "task."; break;
      case Kind::Architecture: base = minimal("test_copy", c->name); prefix = "architecture."; break;
      case Kind::Optimizer: base = minimal("test_copy", "test_linear", c->name); prefix = "optimizer."; break;
      case Kind::Metric:
        base = minimal() + "[[metrics]]\nplugin = \"" + c->name + "\"\n";
        prefix = "metrics.0.";
        break;
    }
    bool required = false;
    for (const auto& p : c->schema.params()) required = required || !p.default_value;
    if (required) {
      WARN(c->name << " has a required parameter: not perturbed");
      continue;
    }
    distinct(base, {});
    for (const auto& p : c->schema.params()) {
      auto v = perturb(p);
      if (!v) continue;
      std::string text = v->canonical();
      distinct(base, {prefix + p.name + "=" + text});
      ++perturbed;
    }
  }
  // [run]: every parameter.
  for (const auto& p : run_schema().params()) {
    auto v = perturb(p);
    REQUIRE(v);
    distinct(minimal(), {"run." + p.name + "=" + v->canonical()});
    ++perturbed;
  }
  // Structure: another metric, metric order, no metrics.
  const std::string one = minimal() + "[[metrics]]\nplugin = \"test_param_count\"\n";
  CHECK(compose_hash(one) != compose_hash(one + "[[metrics]]\nplugin = \"test_param_count\"\n"));
  CHECK(perturbed >= 12);
}

TEST_CASE("every parameter type survives the canonical round trip", "[manifest]") {
  const Composer c(edge_registry());
  const std::string m =
      "[task]\nplugin = \"t\"\n"
      "[architecture]\nplugin = \"a\"\nflag = true\n"
      "name = \"q\\\"uote \\\\ back\\nnew\\ttab\\u007f del \\u00e9 \\U0001F600 \\u0001\"\n"
      "dims = [4, 3, 2]\nscales = [1, 2.5, -0.0, 1e300]\nanything = [[1, \"x\"], [], true]\n"
      "[optimizer]\nplugin = \"o\"\neps = inf\n"
      "[[metrics]]\nplugin = \"m\"\n[[metrics]]\nplugin = \"m\"\nsplit = \"train\"\n";
  ResolvedConfig cfg = c.compose_string(m, "edge.toml");
  CHECK(cfg.architecture.params.get("scales") == Value(Value::List{1.0, 2.5, 0.0, 1e300}));
  CHECK(cfg.architecture.params.get("scales").as_list()[0].is_float());
  CHECK(cfg.optimizer.params.get_float("eps") == std::numeric_limits<double>::infinity());
  const std::string text = cfg.canonical();
  INFO(text);
  ResolvedConfig again = c.compose_string(text, "canonical.toml");
  CHECK(again.canonical() == text);
  CHECK(again.hash() == cfg.hash());
  CHECK(again.architecture.params.get_string("name") == cfg.architecture.params.get_string("name"));
  CHECK(text.find("scales = [1.0, 2.5, 0.0, 1e+300]\n") != std::string::npos);

  // And for the real plugins, every fixture.
  for (const char* f : {"basic.toml", "modular.toml", "include/child.toml"}) {
    ResolvedConfig r = Composer(plugins()).compose(kManifests + "/" + f);
    CHECK(Composer(plugins()).compose_string(r.canonical(), "c.toml").hash() == r.hash());
  }
}

TEST_CASE("changing a component's plugin drops the old plugin's parameters", "[manifest]") {
  const Composer c(edge_registry());
  const std::string m = "[task]\nplugin = \"t\"\n[architecture]\nplugin = \"a\"\n"
                        "[optimizer]\nplugin = \"o\"\neps = 1e-8\nlr = 0.5\n";
  SECTION("by an override, whatever its position") {
    for (auto order : {std::vector<std::string>{"optimizer.momentum=0.5", "optimizer.plugin=o2"},
                       std::vector<std::string>{"optimizer.plugin=o2", "optimizer.momentum=0.5"}}) {
      ResolvedConfig cfg = c.compose_string(m, "m.toml", order);
      CHECK(cfg.optimizer.plugin == "o2");
      CHECK(cfg.optimizer.params.get_float("lr") == 0.01);  // o2's default, not the file's 0.5
      CHECK(cfg.optimizer.params.get_float("momentum") == 0.5);
    }
  }
  SECTION("by an including file") {
    Composer ci(edge_registry(), in_memory({{"base.toml", m}}));
    ResolvedConfig cfg =
        ci.compose_string("include = [\"base.toml\"]\n[optimizer]\nplugin = \"o2\"\n", "m.toml");
    CHECK(cfg.optimizer.plugin == "o2");
    CHECK(cfg.optimizer.params.get_float("lr") == 0.01);
  }
  SECTION("by a sweep, keeping the command line's other overrides") {
    auto children = c.expand_string(m + "[sweep]\n\"optimizer.plugin\" = [\"o\", \"o2\"]\n", "m.toml",
                                    {"optimizer.lr=0.25"});
    REQUIRE(children.size() == 2);
    CHECK(children[0].config.optimizer.params.get_float("eps") == 1e-8);
    CHECK(children[0].config.optimizer.params.get_float("lr") == 0.25);
    CHECK(children[1].config.optimizer.plugin == "o2");
    CHECK(children[1].config.optimizer.params.get_float("lr") == 0.25);
    CHECK(children[1].config.optimizer.params.get_float("momentum") == 0.9);
  }
  SECTION("the same plugin named again merges") {
    ResolvedConfig cfg = c.compose_string(m, "m.toml", {"optimizer.plugin=o", "optimizer.lr=0.25"});
    CHECK(cfg.optimizer.params.get_float("eps") == 1e-8);
    CHECK(cfg.optimizer.params.get_float("lr") == 0.25);
  }
}

TEST_CASE("an including file's metrics replace the included ones", "[manifest]") {
  Composer c(edge_registry(),
             in_memory({{"base.toml", "[[metrics]]\nplugin = \"m\"\n[[metrics]]\nplugin = \"m\"\n"}}));
  const std::string parts = "[task]\nplugin = \"t\"\n[architecture]\nplugin = \"a\"\n[optimizer]\n"
                            "plugin = \"o\"\neps = 1.0\n";
  CHECK(c.compose_string("include = [\"base.toml\"]\n" + parts, "m.toml").metrics.size() == 2);
  auto one = c.compose_string("include = [\"base.toml\"]\n" + parts +
                                  "[[metrics]]\nplugin = \"m\"\nsplit = \"train\"\n",
                              "m.toml");
  REQUIRE(one.metrics.size() == 1);
  CHECK(one.metrics[0].params.get_string("split") == "train");
  CHECK(c.compose_string("include = [\"base.toml\"]\nmetrics = []\n" + parts, "m.toml").metrics.empty());
}

TEST_CASE("overrides parse values as TOML", "[manifest][overrides]") {
  const Composer c(edge_registry());
  const std::string m = "[task]\nplugin = \"t\"\n[architecture]\nplugin = \"a\"\n"
                        "[optimizer]\nplugin = \"o\"\neps = 1.0\n[[metrics]]\nplugin = \"m\"\n";
  ResolvedConfig cfg = c.compose_string(
      m, "m.toml",
      {"optimizer.lr=3e-4", "task.n=4", "architecture.flag=true", "architecture.name=bare-word/x",
       "architecture.dims=[1,2,3]", "architecture.anything=[\"a,b\", 'c']", "metrics.0.split=train",
       "run.device=\"cuda\"", "run.seed=2", "run.seed=3"});
  CHECK(cfg.optimizer.params.get("lr") == Value(3e-4));
  CHECK(cfg.task.params.get("n") == Value(4));
  CHECK(cfg.architecture.params.get("flag") == Value(true));
  CHECK(cfg.architecture.params.get("name") == Value("bare-word/x"));
  CHECK(cfg.architecture.params.get("dims") == Value(Value::List{1, 2, 3}));
  CHECK(cfg.architecture.params.get("anything") == Value(Value::List{"a,b", "c"}));
  CHECK(cfg.metrics[0].params.get("split") == Value("train"));
  CHECK(cfg.run.device == "cuda");
  CHECK(cfg.run.seed == 3);  // the later override wins

  SECTION("an override can add one metric at the end") {
    ResolvedConfig two = c.compose_string(m, "m.toml", {"metrics.1.plugin=m", "metrics.1.split=train"});
    REQUIRE(two.metrics.size() == 2);
    CHECK(two.metrics[1].params.get_string("split") == "train");
  }
  SECTION("an override can create a table the manifest lacks") {
    ResolvedConfig r = c.compose_string("[task]\nplugin = \"t\"\n[architecture]\nplugin = \"a\"\n", "m.toml",
                                        {"optimizer.plugin=o", "optimizer.eps=2"});
    CHECK(r.optimizer.params.get_float("eps") == 2.0);
  }
  SECTION("an override equals writing the value in the manifest") {
    CHECK(compose_hash(minimal(), {"architecture.width=4", "optimizer.lr=3e-4"}) ==
          compose_hash("[task]\nplugin = \"test_copy\"\n[architecture]\nplugin = \"test_linear\"\n"
                       "width = 4\n[optimizer]\nplugin = \"test_sgd\"\nlr = 0.0003\n"));
  }
}

TEST_CASE("sweeps expand in sorted key order, the last key fastest", "[manifest][sweep]") {
  const Composer c(plugins());
  auto children = c.expand(kManifests + "/sweep.toml");
  REQUIRE(children.size() == 6);
  std::set<std::string> hashes;
  const std::vector<std::pair<int, int>> expected = {{4, 0}, {4, 1}, {4, 2}, {8, 0}, {8, 1}, {8, 2}};
  for (size_t i = 0; i < children.size(); ++i) {
    const auto& ch = children[i];
    REQUIRE(ch.varied.size() == 2);
    CHECK(ch.varied[0].first == "architecture.width");
    CHECK(ch.varied[1].first == "run.seed");
    CHECK(ch.varied[0].second == Value(expected[i].first));
    CHECK(ch.varied[1].second == Value(expected[i].second));
    CHECK(ch.config.architecture.params.get_int("width") == expected[i].first);
    CHECK(ch.config.run.seed == static_cast<uint64_t>(expected[i].second));
    CHECK(hashes.insert(ch.config.hash()).second);
    // A child is exactly the manifest with its values as overrides, without the sweep.
    CHECK(ch.config.hash() ==
          compose_hash(minimal(), {"architecture.width=" + std::to_string(expected[i].first),
                                   "run.seed=" + std::to_string(expected[i].second)}));
    CHECK(ch.config.canonical().find("sweep") == std::string::npos);
  }

  SECTION("command-line sweeps join, replace and fix axes") {
    auto more = c.expand(kManifests + "/sweep.toml", {"optimizer.lr=0.1,0.2"});
    REQUIRE(more.size() == 12);
    CHECK(more[0].varied[1].first == "optimizer.lr");  // architecture < optimizer < run
    CHECK(more[1].varied[2].second == Value(1));
    CHECK(more[3].varied[1].second == Value(0.2));
    auto replaced = c.expand(kManifests + "/sweep.toml", {"run.seed=5,6,7,8"});
    CHECK(replaced.size() == 8);
    CHECK(replaced[0].varied[1].second == Value(5));
    auto fixed = c.expand(kManifests + "/sweep.toml", {"run.seed=9"});
    REQUIRE(fixed.size() == 2);
    CHECK(fixed[0].varied.size() == 1);
    CHECK(fixed[1].config.run.seed == 9);
  }
  SECTION("a manifest without a sweep is one child") {
    auto one = c.expand(kManifests + "/basic.toml");
    REQUIRE(one.size() == 1);
    CHECK(one[0].varied.empty());
    CHECK(one[0].config.hash() == c.compose(kManifests + "/basic.toml").hash());
  }
  SECTION("a sweep of one value composes") {
    CHECK(c.compose_string(minimal() + "[sweep]\n\"run.seed\" = [4]\n", "m.toml").run.seed == 4);
  }
  SECTION("a sweep over plugins, and floats given as ints") {
    auto p = c.expand_string(minimal() + "[sweep]\n\"task.plugin\" = [\"test_copy\", \"modular_arithmetic\"]\n"
                             "optimizer.lr = [1, 0.5]\n",
                             "m.toml");
    REQUIRE(p.size() == 4);
    CHECK(p[0].varied[0].first == "optimizer.lr");
    CHECK(p[0].varied[0].second == Value(1.0));  // the resolved value: a float
    CHECK(p[0].varied[1].first == "task.plugin");
    CHECK(p[0].varied[1].second == Value("test_copy"));
    CHECK(p[1].config.task.params.get_int("p") == 113);
  }
}

TEST_CASE("compose prints canonical TOML and the hash; --sweep lists children", "[manifest][cli]") {
  const fs::path tmp = fs::temp_directory_path() / ("groklab-compose-" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  // Runs `groklab compose ARGS`; returns the exit status, stdout and stderr
  // (without log lines, which start with '[').
  auto run = [&](const std::string& args, std::string& out, std::string& err) {
    const std::string cmd = "GROKLAB_PLUGIN_PATH=" + kGood + " " GROKLAB_BINARY " compose " + args +
                            " >" + (tmp / "out").string() + " 2>" + (tmp / "err").string();
    int status = std::system(cmd.c_str());
    auto slurp = [](const fs::path& f, bool skip_logs) {
      std::ifstream in(f);
      std::string line, text;
      while (std::getline(in, line))
        if (!skip_logs || line.empty() || line[0] != '[') text += line + "\n";
      return text;
    };
    out = slurp(tmp / "out", false);
    err = slurp(tmp / "err", true);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  const Composer c(plugins());
  std::string out, err;

  REQUIRE(run(kManifests + "/modular.toml optimizer.lr=0.5", out, err) == 0);
  ResolvedConfig cfg = c.compose(kManifests + "/modular.toml", {"optimizer.lr=0.5"});
  CHECK(out == cfg.canonical() + "\n# hash: " + cfg.hash() + "\n");

  REQUIRE(run(kManifests + "/sweep.toml --sweep optimizer.lr=0.5,1", out, err) == 0);
  auto children = c.expand(kManifests + "/sweep.toml", {"optimizer.lr=0.5,1"});
  std::string want = "# 12 configurations\n";
  for (size_t i = 0; i < children.size(); ++i) {
    want += std::to_string(i) + " " + children[i].config.hash();
    for (const auto& [k, v] : children[i].varied) want += " " + k + "=" + v.canonical();
    want += "\n";
  }
  CHECK(out == want);
  CHECK_THAT(out, Catch::Contains("\n1 " + children[1].config.hash() +
                                  " architecture.width=4 optimizer.lr=0.5 run.seed=1\n"));

  REQUIRE(run(kManifests + "/sweep.toml --child 4", out, err) == 0);
  const ResolvedConfig fourth = c.expand(kManifests + "/sweep.toml")[4].config;
  CHECK(out == fourth.canonical() + "\n# hash: " + fourth.hash() + "\n");

  CHECK(run(kManifests + "/basic.toml run.sede=1 task.vocab=1", out, err) == 2);
  CHECK(out.empty());
  CHECK(err == "<command line>:1:1: run.sede: unknown parameter of [run] (did you mean \"seed\"?); "
               "expected one of: batch_size, checkpoint_every, device, ensemble, eval_every, loss_dtype, seed, seed_streams, "
               "steps, stop_metric, stop_threshold, threads\n"
               "<command line>:2:12: task.vocab: expected a value of type int in [2, 1000], got 1\n"
               "groklab: 2 errors in " + kManifests + "/basic.toml\n");
  fs::remove_all(tmp);
}

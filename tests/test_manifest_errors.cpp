// Golden tests of the composer's error messages: every kind of bad input
// names file:line:col, the key path and what was expected, and every error in
// a manifest is reported at once.
#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

#include "groklab/host.h"
#include "groklab/manifest.h"
#include "support.h"

using namespace groklab;

namespace {

const std::string kGood = std::string(GROKLAB_TEST_PLUGIN_DIR) + "/good";
const std::string kManifests = std::string(GROKLAB_SOURCE_DIR) + "/tests/manifests";

// Only the test plugins, so that "expected one of" lists are fixed.
const Registry& test_plugins() {
  static PluginHost host;
  static const bool loaded = host.load_directory(kGood) == 1;
  REQUIRE(loaded);
  return host.registry();
}

using groklab::test::none;

// Hand-built components with required values, lists and bools.
const Registry& edge_registry() {
  static const Registry reg = [] {
    Registrar r;
    r.add_task("t", "", Schema().integer("n", std::nullopt, "").range(1, 9), none<Task>());
    r.add_architecture("a", "",
                       Schema()
                           .boolean("flag", false, "")
                           .list("dims", Value::List{1}, "", ParamType::Int)
                           .range(1, 2)
                           .choice("act", "relu", {"relu", "gelu"}, "")
                           .string("name", std::nullopt, ""),
                       none<Architecture>());
    r.add_optimizer("o", "", Schema().real("lr", std::nullopt, "").min(0), none<Optimizer>());
    Registry out;
    REQUIRE(out.add_all(r.take()).empty());
    return out;
  }();
  return reg;
}

using groklab::test::in_memory;

const std::string kParts =
    "[task]\nplugin = \"test_copy\"\n[architecture]\nplugin = \"test_linear\"\n"
    "[optimizer]\nplugin = \"test_sgd\"\n";

// Returns what() of the ManifestErrors that composing text throws ("" if none).
std::string errors_of(const std::string& text, const std::vector<std::string>& overrides = {},
                      const Registry& reg = test_plugins(), ComposerOptions options = {}) {
  try {
    Composer(reg, std::move(options)).expand_string(text, "bad.toml", overrides);
  } catch (const ManifestErrors& e) {
    CHECK_FALSE(e.errors().empty());
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("TOML syntax errors name file, line and column", "[manifest][errors]") {
  CHECK(errors_of("[task]\nplugin = \"test_copy\"\nvocab = = 3\n") ==
        "bad.toml:3:9: invalid TOML: Error while parsing value: could not determine value type");
  CHECK(errors_of("[task\n") ==
        "bad.toml:1:6: invalid TOML: Error while parsing table header: expected ']', saw '\\n'");
  CHECK(errors_of("[task]\n[task]\n") ==
        "bad.toml:2:1: invalid TOML: Error while parsing table header: cannot redefine existing "
        "table 'task'");
}

TEST_CASE("unknown tables and plugins are named with suggestions", "[manifest][errors]") {
  SECTION("unknown top-level table") {
    CHECK(errors_of(kParts + "[tsak]\nx = 1\n") ==
          "bad.toml:7:2: tsak: unknown table (did you mean \"task\"?); expected one of: "
          "architecture, include, metrics, optimizer, run, sweep, task");
  }
  SECTION("missing tables") {
    CHECK(errors_of("[task]\nplugin = \"test_copy\"\n") ==
          "bad.toml:1:1: architecture: missing table; expected [architecture] with plugin = one "
          "of: test_linear\n"
          "bad.toml:1:1: optimizer: missing table; expected [optimizer] with plugin = one of: "
          "test_sgd");
  }
  SECTION("missing plugin") {
    CHECK(errors_of("[task]\nvocab = 3\n[architecture]\nplugin = \"test_linear\"\n[optimizer]\n"
                    "plugin = \"test_sgd\"\n") ==
          "bad.toml:1:1: task.plugin: missing; expected the name of a task plugin, one of: test_copy");
  }
  SECTION("unknown plugin, with did-you-mean and a plugin of another kind") {
    CHECK(errors_of("[task]\nplugin = \"test_cpy\"\n[architecture]\nplugin = \"test_sgd\"\n"
                    "[optimizer]\nplugin = \"adamw\"\n") ==
          "bad.toml:2:10: task.plugin: unknown task plugin \"test_cpy\" (did you mean "
          "\"test_copy\"?); expected one of: test_copy\n"
          "bad.toml:4:10: architecture.plugin: unknown architecture plugin \"test_sgd\" (test_sgd "
          "is an optimizer); expected one of: test_linear\n"
          "bad.toml:6:10: optimizer.plugin: unknown optimizer plugin \"adamw\"; expected one of: "
          "test_sgd");
  }
  SECTION("plugin of the wrong type") {
    CHECK(errors_of("[task]\nplugin = 3\n[architecture]\nplugin = \"test_linear\"\n[optimizer]\n"
                    "plugin = \"test_sgd\"\n") ==
          "bad.toml:2:10: task.plugin: expected a string naming a task plugin, got 3 (an int)");
  }
  SECTION("a table of the wrong type") {
    CHECK(errors_of("run = 3\nmetrics = { plugin = \"test_param_count\" }\n" + kParts) ==
          "bad.toml:1:7: run: expected a table ([run]), got 3 (an int)\n"
          "bad.toml:2:11: metrics: expected an array of tables ([[metrics]]), got a table");
  }
}

TEST_CASE("parameter errors say what was expected", "[manifest][errors]") {
  SECTION("unknown key, with did-you-mean") {
    CHECK(errors_of(kParts + "[run]\nsede = 1\n[[metrics]]\nplugin = \"test_param_count\"\nx = 1\n") ==
          "bad.toml:8:1: run.sede: unknown parameter of [run] (did you mean \"seed\"?); expected "
          "one of: batch_size, checkpoint_every, device, ensemble, eval_every, loss_dtype, seed, seed_streams, "
          "steps, stop_metric, stop_threshold, threads\n"
          "bad.toml:11:1: metrics.0.x: unknown parameter of metric \"test_param_count\"; "
          "expected one of: every");
  }
  SECTION("wrong type") {
    CHECK(errors_of("[task]\nplugin = \"test_copy\"\nvocab = \"big\"\nexamples = 2.0\n"
                    "[architecture]\nplugin = \"test_linear\"\n[optimizer]\nplugin = \"test_sgd\"\n"
                    "lr = true\n") ==
          "bad.toml:3:9: task.vocab: expected a value of type int in [2, 1000], got \"big\" (a string)\n"
          "bad.toml:4:12: task.examples: expected a value of type int in [1, inf], got 2.0 (a float)\n"
          "bad.toml:9:6: optimizer.lr: expected a value of type float in [0, inf], got true (a bool)");
  }
  SECTION("out of range and not among the choices") {
    CHECK(errors_of(kParts + "[run]\nthreads = 0\nsteps = 0\ndevice = \"tpu\"\nseed = -1\n") ==
          "bad.toml:8:11: run.threads: expected a value of type int in [1, 256], got 0\n"
          "bad.toml:9:9: run.steps: expected a value of type int in [1, inf], got 0\n"
          "bad.toml:10:10: run.device: expected \"cpu\", \"cuda\" or \"cuda:N\" (N a device index), got \"tpu\"\n"
          "bad.toml:11:8: run.seed: expected a value of type int in [0, inf], got -1");
  }
  SECTION("values no parameter can hold") {
    CHECK(errors_of(kParts + "[run]\nseed = { a = 1 }\nsteps = 1979-05-27\nthreads = [{ a = 1 }]\n") ==
          "bad.toml:8:8: run.seed: expected a value of type int in [0, inf], got a table\n"
          "bad.toml:9:9: run.steps: expected a value of type int in [1, inf], got a date\n"
          "bad.toml:10:11: run.threads: expected a value of type int in [1, 256], got a list "
          "containing a table");
  }
  SECTION("missing required values, lists, bools, strings") {
    CHECK(errors_of("[task]\nplugin = \"t\"\n[architecture]\nplugin = \"a\"\nflag = 1\n"
                    "dims = [1, 2, 3]\nact = \"tanh\"\nname = 5\n[optimizer]\nplugin = \"o\"\n",
                    {}, edge_registry()) ==
          "bad.toml:2:10: task.n: missing required value; expected a value of type int in [1, 9]\n"
          "bad.toml:5:8: architecture.flag: expected a value of type bool, got 1 (an int)\n"
          "bad.toml:6:8: architecture.dims: expected a list with length in [1, 2], got [1, 2, 3]\n"
          "bad.toml:7:7: architecture.act: expected one of \"relu\", \"gelu\", got \"tanh\"\n"
          "bad.toml:8:8: architecture.name: expected a value of type string, got 5 (an int)\n"
          "bad.toml:10:10: optimizer.lr: missing required value; expected a value of type float in "
          "[0, inf]");
    CHECK(errors_of("[task]\nplugin = \"t\"\nn = 1\n[architecture]\nplugin = \"a\"\nname = \"x\"\n"
                    "dims = [1.5]\n[optimizer]\nplugin = \"o\"\nlr = 1\n",
                    {}, edge_registry()) ==
          "bad.toml:7:8: architecture.dims: expected a list of int values, got [1.5]");
  }
}

TEST_CASE("all errors are reported at once, in file order", "[manifest][errors]") {
  const std::string text =
      "[run]\nsteps = 0\n"
      "[task]\nplugin = \"test_copy\"\nvocb = 3\n"
      "[optimizer]\nplugin = \"test_sgd\"\nlr = -1.0\n"
      "[architecture]\nplugin = \"test_linear\"\nwidth = 0\n"
      "[bogus]\n";
  CHECK(errors_of(text, {"architecture.width=0", "run.seed=x"}) ==
        "bad.toml:2:9: run.steps: expected a value of type int in [1, inf], got 0\n"
        "bad.toml:5:1: task.vocb: unknown parameter of task \"test_copy\" (did you mean \"vocab\"?); "
        "expected one of: examples, odd_seed_examples, vocab\n"
        "bad.toml:8:6: optimizer.lr: expected a value of type float in [0, inf], got -1.0\n"
        "bad.toml:12:2: bogus: unknown table; expected one of: architecture, include, metrics, "
        "optimizer, run, sweep, task\n"
        "<command line>:1:20: architecture.width: expected a value of type int in [1, inf], got 0\n"
        "<command line>:2:10: run.seed: expected a value of type int in [0, inf], got \"x\" (a string)");
}

TEST_CASE("include errors name the files", "[manifest][errors][include]") {
  SECTION("a cycle names the whole cycle") {
    const std::string a = kManifests + "/cycle/a.toml";
    const std::string b = kManifests + "/cycle/b.toml";
    try {
      Composer(test_plugins()).compose(a);
      FAIL("no error");
    } catch (const ManifestErrors& e) {
      CHECK(std::string(e.what()) == b + ":1:12: include.0: include cycle: " + a + " -> " + b +
                                         " -> " + a);
    }
    try {
      Composer(test_plugins()).compose(kManifests + "/cycle/self.toml");
      FAIL("no error");
    } catch (const ManifestErrors& e) {
      const std::string self = kManifests + "/cycle/self.toml";
      CHECK(std::string(e.what()) == self + ":1:12: include.0: include cycle: " + self + " -> " + self);
    }
  }
  SECTION("a cycle through relative paths in memory") {
    auto files = in_memory({{"x/a.toml", "include = [\"../y/b.toml\"]\n"},
                            {"y/b.toml", "\n\ninclude = [\"c.toml\"]\n"},
                            {"y/c.toml", "include = [\"../x/a.toml\"]\n"}});
    try {
      Composer(test_plugins(), files).compose("x/a.toml");
      FAIL("no error");
    } catch (const ManifestErrors& e) {
      CHECK(std::string(e.what()) ==
            "y/c.toml:1:12: include.0: include cycle: x/a.toml -> y/b.toml -> y/c.toml -> x/a.toml");
    }
  }
  SECTION("a missing or malformed include") {
    CHECK(errors_of("include = [\"nope.toml\", 3]\n" + kParts, {}, test_plugins(), in_memory({})) ==
          "bad.toml:1:12: include.0: cannot read \"nope.toml\": no such file\n"
          "bad.toml:1:25: include.1: expected a manifest file name, got 3 (an int)");
    CHECK(errors_of("include = { a = 1 }\n" + kParts) ==
          "bad.toml:1:11: include: expected a list of manifest file names, got a table");
  }
  SECTION("errors inside an include name the included file") {
    auto files = in_memory({{"base.toml", "[task]\nplugin = \"test_copy\"\nvocab = 1\n"},
                            {"broken.toml", "[run\n"}});
    CHECK(errors_of("include = [\"base.toml\"]\n[architecture]\nplugin = \"test_linear\"\n"
                    "[optimizer]\nplugin = \"test_sgd\"\n",
                    {}, test_plugins(), files) ==
          "base.toml:3:9: task.vocab: expected a value of type int in [2, 1000], got 1");
    CHECK(errors_of("include = [\"broken.toml\"]\n" + kParts, {}, test_plugins(), files) ==
          "broken.toml:1:5: invalid TOML: Error while parsing table header: expected ']', saw "
          "'\\n'");
  }
  SECTION("includes nested too deep, or too many files") {
    std::map<std::string, std::string> chain;
    for (int i = 0; i < 40; ++i)
      chain["f" + std::to_string(i) + ".toml"] = "include = [\"f" + std::to_string(i + 1) + ".toml\"]\n";
    CHECK(errors_of("include = [\"f0.toml\"]\n", {}, test_plugins(), in_memory(chain)) ==
          "f30.toml:1:12: include.0: includes nested deeper than 32");
    // Each file includes the next one twice: 2^k loads without a cycle.
    std::map<std::string, std::string> diamond;
    for (int i = 0; i < 12; ++i) {
      const std::string next = "\"d" + std::to_string(i + 1) + ".toml\"";
      diamond["d" + std::to_string(i) + ".toml"] = "include = [" + next + ", " + next + "]\n";
    }
    diamond["d12.toml"] = kParts;
    ComposerOptions opts = in_memory(diamond);
    opts.max_files = 100;
    CHECK_THAT(errors_of("include = [\"d0.toml\"]\n", {}, test_plugins(), opts),
               Catch::Contains(": more than 100 manifest files; expected fewer includes"));
  }
  SECTION("a file that cannot be read") {
    try {
      Composer(test_plugins()).compose(kManifests + "/no-such.toml");
      FAIL("no error");
    } catch (const ManifestErrors& e) {
      CHECK(std::string(e.what()) == kManifests + "/no-such.toml:1:1: cannot read \"" + kManifests +
                                         "/no-such.toml\": No such file or directory");
    }
  }
}

TEST_CASE("override errors point at the argument", "[manifest][errors][overrides]") {
  CHECK(errors_of(kParts, {"run.seed", "tsk.x=1", "task.vocb=3", "metrics.1.plugin=x", "run=1",
                           "run.seed=[1,", "run.seed=1,,2", "task.x.y=1"}) ==
        "<command line>:1:1: expected key=value (e.g. architecture.depth=4), got \"run.seed\"\n"
        "<command line>:2:1: tsk.x: unknown table \"tsk\" (did you mean \"task\"?); expected "
        "task.<key>, architecture.<key>, optimizer.<key>, run.<key> or metrics.<index>.<key>\n"
        "<command line>:3:1: task.vocb: unknown parameter of task \"test_copy\" (did you mean "
        "\"vocab\"?); expected one of: examples, odd_seed_examples, vocab\n"
        "<command line>:4:1: metrics.1.plugin: there are 0 metrics; expected an index in [0, 0] "
        "(0 adds one)\n"
        "<command line>:5:1: run: not a key path; expected run.<key>\n"
        "<command line>:6:10: run.seed: invalid TOML value: Error while parsing array: encountered "
        "end-of-file\n"
        "<command line>:7:12: run.seed: empty value in a sweep list; expected values separated by "
        "commas\n"
        "<command line>:8:1: task.x.y: not a key path; expected task.<key>");
}

TEST_CASE("an override ending inside a quoted escape is an error, not an empty sweep",
          "[manifest][errors][overrides]") {
  // Found by fuzz_manifest: the escape skipped past the end, the value had no
  // part, and the sweep's size became 0 (then a division by zero).
  CHECK(errors_of(kParts, {"run.seed=\"1\\", "run.steps=1,2"}) ==
        "<command line>:1:10: run.seed: invalid TOML value: Error while parsing string: encountered end-of-file");
}

TEST_CASE("sweep errors", "[manifest][errors][sweep]") {
  SECTION("keys, lists and values") {
    CHECK(errors_of(kParts + "[sweep]\n\"run.sede\" = [1, 2]\n\"tsk.x\" = [1]\n\"run.seed\" = 3\n"
                             "\"run.steps\" = []\n\"run.threads\" = [1, 0]\n") ==
          "bad.toml:8:1: run.sede: unknown parameter of [run] (did you mean \"seed\"?); expected "
          "one of: batch_size, checkpoint_every, device, ensemble, eval_every, loss_dtype, seed, seed_streams, "
          "steps, stop_metric, stop_threshold, threads\n"
          "bad.toml:9:1: sweep.\"tsk.x\": unknown table \"tsk\" (did you mean \"task\"?); expected "
          "task.<key>, architecture.<key>, optimizer.<key>, run.<key> or metrics.<index>.<key>\n"
          "bad.toml:10:14: sweep.\"run.seed\": expected a non-empty list of values, got 3 (an int)\n"
          "bad.toml:11:15: sweep.\"run.steps\": expected a non-empty list of values, got [] (a list)\n"
          "bad.toml:12:21: run.threads: expected a value of type int in [1, 256], got 0");
  }
  SECTION("too many children") {
    ComposerOptions small;
    small.max_sweep_children = 5;
    CHECK(errors_of(kParts + "[sweep]\n\"run.seed\" = [1, 2, 3]\n", {"run.steps=1,2"}, test_plugins(),
                    small) ==
          "bad.toml:8:1: sweep: the sweep expands to more than 5 configurations; expected "
          "at most 5");
  }
  SECTION("children that are the same configuration") {
    CHECK(errors_of(kParts + "[sweep]\n\"optimizer.lr\" = [1, 1.0, 0.5]\n") ==
          "bad.toml:8:1: sweep: children 0 and 1 resolve to the same configuration; expected "
          "distinct values");
  }
  SECTION("compose() of a sweep") {
    try {
      Composer(test_plugins()).compose_string(kParts + "[sweep]\n\"run.seed\" = [1, 2]\n", "bad.toml");
      FAIL("no error");
    } catch (const ManifestErrors& e) {
      CHECK(std::string(e.what()) ==
            "bad.toml:8:1: sweep: the sweep expands to 2 configurations; expected a single one "
            "(expand the sweep: groklab compose --sweep)");
    }
  }
}

TEST_CASE("ManifestError formats as file:line:col: key: message", "[manifest][errors]") {
  CHECK(ManifestError{"m.toml", 3, 7, "task.p", "expected x"}.to_string() == "m.toml:3:7: task.p: expected x");
  CHECK(ManifestError{"m.toml", 1, 1, "", "invalid TOML: y"}.to_string() == "m.toml:1:1: invalid TOML: y");
  ManifestErrors e({{"a", 1, 2, "k", "m"}, {"b", 3, 4, "", "n"}});
  CHECK(std::string(e.what()) == "a:1:2: k: m\nb:3:4: n");
  CHECK(e.errors().size() == 2);
}

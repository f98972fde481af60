// groklab ledger list/show/diff/query/export/audit on a ledger of short real
// runs (modular addition p = 7, a transformer with d_model 16, 60 steps), built
// once by the groklab executable. Expected numbers are computed here from
// entries.jsonl and the series objects directly, not through groklab/audit.h.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "groklab/audit.h"
#include "groklab/host.h"
#include "groklab/manifest.h"
#include "groklab/runs.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kPlugins = GROKLAB_BUILTIN_PLUGIN_DIR;

const char* kManifest = R"([task]
plugin = "modular_arithmetic"
p = 7
operation = "add"
train_fraction = 0.5

[architecture]
plugin = "transformer"
depth = 1
d_model = 16
heads = 2
d_ff = 32
layer_norm = "mlp-pre"

[optimizer]
plugin = "adamw"
lr = 1e-2
weight_decay = 1.0

[[metrics]]
plugin = "accuracy"
split = "train"

[[metrics]]
plugin = "accuracy"
split = "test"

[[metrics]]
plugin = "loss"
split = "test"

[run]
seed = 0
steps = 60
eval_every = 10
checkpoint_every = 20
)";

struct Result {
  int status = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// Runs groklab ARGS (the executable BINARY) with plugins from PLUGIN_DIR; stdout and stderr apart.
Result gl_run(const std::string& args, const std::string& binary = GROKLAB_BINARY,
              const std::string& plugin_dir = kPlugins) {
  static int n = 0;
  const fs::path err = fs::temp_directory_path() /
                       ("groklab-query-err-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
  const std::string cmd = "GROKLAB_PLUGIN_PATH=" + plugin_dir + " " + binary + " -q " + args + " 2>" +
                          err.string();
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  Result r;
  std::array<char, 4096> buf;
  size_t got;
  while ((got = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), got);
  int rc = ::pclose(p);
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.err = slurp(err);
  fs::remove(err);
  return r;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  std::string line;
  while (std::getline(is, line))
    if (!line.empty()) out.push_back(line);
  return out;
}

// One run of the fixture, as the test made it.
struct Run {
  std::string id;
  int depth = 0;
  int seed = 0;
  std::string layer_norm;
  std::map<int64_t, std::map<std::string, double>> series;  // read from the object directly
};

struct Fixture {
  fs::path dir;
  std::string ledger;
  std::vector<Run> runs;
  Fixture() {
    dir = fs::temp_directory_path() / ("groklab-query-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    ledger = (dir / "ledger").string();
    std::ofstream(dir / "m.toml") << kManifest;
    struct Spec {
      int depth, seed;
      const char* ln;
    };
    const Spec specs[] = {{1, 0, "mlp-pre"}, {1, 1, "mlp-pre"}, {1, 2, "mlp-pre"}, {2, 0, "mlp-pre"},
                          {2, 1, "mlp-pre"}, {2, 2, "mlp-pre"}, {1, 0, "pre"},     {1, 1, "pre"}};
    for (const Spec& s : specs) {
      Result r = gl_run("run " + (dir / "m.toml").string() + " architecture.depth=" + std::to_string(s.depth) +
                         " run.seed=" + std::to_string(s.seed) + " architecture.layer_norm=" + s.ln + " --ledger " +
                         ledger);
      INFO(r.out << r.err);
      REQUIRE(r.status == 0);
      auto at = r.out.find("run ");
      REQUIRE(at != std::string::npos);
      runs.push_back({r.out.substr(at + 4, 32), s.depth, s.seed, s.ln, {}});
    }
    // The series, straight from entries.jsonl and the object files.
    std::ifstream in(ledger + "/entries.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      json e = json::parse(line);
      if (e.value("kind", "") != "result") continue;
      for (Run& run : runs) {
        if (e.at("run") != run.id) continue;
        const std::string h = e.at("objects").at("series");
        for (const auto& p : json::parse(slurp(ledger + "/objects/" + h.substr(0, 2) + "/" + h.substr(2))))
          for (const auto& [k, v] : p.at("values").items()) run.series[p.at("step").get<int64_t>()][k] = v.get<double>();
      }
    }
    for (const Run& run : runs) REQUIRE(run.series.size() == 6);
  }
  ~Fixture() { fs::remove_all(dir); }
  std::string L() const { return " --ledger " + ledger; }
};

const Fixture& fixture() {
  static Fixture f;
  return f;
}

double final_value(const Run& r, const std::string& metric) { return r.series.rbegin()->second.at(metric); }

// Parses simple CSV (fields quoted only when needed, no embedded newlines).
std::vector<std::string> csv_split(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') cur += '"', ++i;
      else if (c == '"') quoted = false;
      else cur += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

}  // namespace

TEST_CASE("ledger list: filters on config keys, components, status and time", "[ledger-query][list]") {
  const Fixture& f = fixture();
  auto ids_in = [](const std::string& out) {
    std::set<std::string> ids;
    for (const auto& line : lines_of(out)) ids.insert(line.substr(0, 12));
    return ids;
  };
  auto expect = [&](auto pred) {
    std::set<std::string> ids;
    for (const Run& r : f.runs)
      if (pred(r)) ids.insert(r.id.substr(0, 12));
    return ids;
  };

  Result all = gl_run("ledger list --runs" + f.L());
  INFO(all.out << all.err);
  REQUIRE(all.status == 0);
  CHECK(lines_of(all.out).size() == f.runs.size());
  CHECK_THAT(all.out, Catch::Contains("finished  modular_arithmetic/transformer/adamw  steps=60"));
  CHECK_THAT(all.out, Catch::Contains("test_accuracy="));

  Result depth2 = gl_run("ledger list --runs --where architecture.depth=2" + f.L());
  INFO(depth2.err);
  CHECK(ids_in(depth2.out) == expect([](const Run& r) { return r.depth == 2; }));
  // Values compare canonically: 2.0 is 2, 1e-2 is the recorded 0.01.
  CHECK(ids_in(gl_run("ledger list --runs --where architecture.depth=2.0" + f.L()).out) == ids_in(depth2.out));
  CHECK(ids_in(gl_run("ledger list --runs --where optimizer.lr=1e-2 --where architecture.depth=2" + f.L()).out) ==
        ids_in(depth2.out));
  CHECK(gl_run("ledger list --runs --where optimizer.lr=1e-3" + f.L()).status == 3);

  Result pre = gl_run("ledger list --runs --where architecture.layer_norm=pre --where run.seed=1" + f.L());
  CHECK(ids_in(pre.out) == expect([](const Run& r) { return r.layer_norm == "pre" && r.seed == 1; }));

  CHECK(lines_of(gl_run("ledger list --runs --task modular_arithmetic --architecture transformer "
                         "--optimizer adamw --status finished --since 2000-01-01" + f.L()).out).size() == f.runs.size());
  CHECK(gl_run("ledger list --runs --task dyck" + f.L()).status == 3);

  // Without --runs, filters keep every entry of the selected runs (run, 3 checkpoints, result).
  Result entries = gl_run("ledger list --where architecture.depth=2 --where run.seed=0" + f.L());
  CHECK(lines_of(entries.out).size() == 5);

  SECTION("an empty selection is an error on stderr, not empty output") {
    Result none = gl_run("ledger list --runs --status failed" + f.L());
    CHECK(none.status == 3);
    CHECK(none.out.empty());
    CHECK_THAT(none.err, Catch::Contains("no run matches --status failed"));
    CHECK_THAT(none.err, Catch::Contains("the ledger has 8 runs"));
    Result old = gl_run("ledger list --runs --until 2000-01-01" + f.L());
    CHECK(old.status == 3);
    CHECK_THAT(old.err, Catch::Contains("no run matches --until 2000-01-01"));
  }

  SECTION("an unknown --where key names the key and suggests close ones") {
    Result typo = gl_run("ledger list --runs --where architecture.dept=2" + f.L());
    CHECK(typo.status == 2);
    CHECK(typo.out.empty());
    CHECK_THAT(typo.err, Catch::Contains("'architecture.dept'"));
    CHECK_THAT(typo.err, Catch::Contains("did you mean 'architecture.depth'"));
    Result bare = gl_run("ledger query --metric test_accuracy --where depth=2" + f.L());
    CHECK(bare.status == 2);
    CHECK_THAT(bare.err, Catch::Contains("'depth'"));
    CHECK_THAT(bare.err, Catch::Contains("architecture.depth"));
    Result syntax = gl_run("ledger export --where architecture.depth" + f.L());
    CHECK(syntax.status == 2);
    CHECK_THAT(syntax.err, Catch::Contains("expected KEY=VALUE"));
  }
}

TEST_CASE("ledger show: a run's config, seeds, environment, plugins, results and replays", "[ledger-query][show]") {
  const Fixture& f = fixture();
  const Run& r = f.runs[3];  // depth 2, seed 0
  Result show = gl_run("ledger show " + r.id.substr(0, 8) + f.L());
  INFO(show.out << show.err);
  REQUIRE(show.status == 0);
  for (const char* part : {"config:", "seeds:", "environment:", "plugins:", "results:", "replays:"})
    CHECK_THAT(show.out, Catch::Contains(std::string("\n") + part + "\n"));
  CHECK_THAT(show.out, Catch::StartsWith("run " + r.id));
  CHECK_THAT(show.out, Catch::Contains("  architecture.depth = 2\n"));
  CHECK_THAT(show.out, Catch::Contains("  run.seed = 0\n"));
  CHECK_THAT(show.out, Catch::Contains("  host.hash = "));
  CHECK_THAT(show.out, Catch::Contains("groklab_tasks"));
  CHECK_THAT(show.out, Catch::Contains("final test_accuracy = " + json(final_value(r, "test_accuracy")).dump()));
  CHECK_THAT(show.out, Catch::Contains("never replayed"));
  // --json: the entry itself.
  Result raw = gl_run("ledger show --json " + r.id + f.L());
  CHECK(json::parse(raw.out).at("id") == r.id);
}

TEST_CASE("ledger diff: config by key path, environment, final metrics and the first differing step",
          "[ledger-query][diff]") {
  const Fixture& f = fixture();
  const Run& a = f.runs[0];  // depth 1 seed 0
  const Run& b = f.runs[3];  // depth 2 seed 0
  Result d = gl_run("ledger diff " + a.id.substr(0, 10) + " " + b.id.substr(0, 10) + f.L());
  INFO(d.out << d.err);
  REQUIRE(d.status == 0);
  CHECK_THAT(d.out, Catch::Contains("config: 1 difference\n  architecture.depth: 1 → 2\n"));
  CHECK_THAT(d.out, Catch::Contains("environment: identical"));
  for (const char* m : {"test_accuracy", "train_accuracy", "test_loss"}) {
    std::optional<int64_t> first;
    for (const auto& [step, values] : a.series)
      if (values.at(m) != b.series.at(step).at(m)) {
        first = step;
        break;
      }
    std::string want = first ? "series " + std::string(m) + ": first differs at step " + std::to_string(*first)
                             : "series " + std::string(m) + ": identical";
    CHECK_THAT(d.out, Catch::Contains(want));
    double fa = final_value(a, m), fb = final_value(b, m);
    CHECK_THAT(d.out, Catch::Contains("final " + std::string(m) + ": " + json(fa).dump() +
                                      (fa == fb ? " (same)" : " → " + json(fb).dump())));
  }
  // Two seeds of one config: the seed differs, and so do the seed streams.
  Result s = gl_run("ledger diff " + a.id + " " + f.runs[1].id + f.L());
  CHECK_THAT(s.out, Catch::Contains("config: 1 difference\n  run.seed: 0 → 1\n"));
  CHECK_THAT(s.out, Catch::Contains("\nseeds:\n"));
  // A run with itself: nothing differs.
  Result same = gl_run("ledger diff " + a.id + " " + a.id + f.L());
  CHECK_THAT(same.out, Catch::Contains("config: identical"));
  CHECK_THAT(same.out, Catch::Contains("series test_accuracy: identical"));
}

TEST_CASE("ledger query: the inverted-U table (fraction of seeds grokked by depth) and steps to grok",
          "[ledger-query][query]") {
  const Fixture& f = fixture();
  // A threshold the runs straddle: the median final test accuracy of the mlp-pre runs.
  std::vector<double> finals;
  for (const Run& r : f.runs)
    if (r.layer_norm == "mlp-pre") finals.push_back(final_value(r, "test_accuracy"));
  std::sort(finals.begin(), finals.end());
  const double threshold = finals[finals.size() / 2];
  char thr[64];
  std::snprintf(thr, sizeof thr, "%.17g", threshold);

  Result q = gl_run("ledger query --group-by architecture.depth --metric test_accuracy --at final --frac "
                     "'test_accuracy>=" + std::string(thr) + "' --where architecture.layer_norm=mlp-pre "
                     "--task modular_arithmetic --format json" + f.L());
  INFO(q.out << q.err);
  REQUIRE(q.status == 0);
  json j = json::parse(q.out);
  REQUIRE(j.at("rows").size() == 2);
  for (const json& row : j.at("rows")) {
    const int depth = row.at("architecture.depth").get<int>();
    std::vector<double> v;
    for (const Run& r : f.runs)
      if (r.layer_norm == "mlp-pre" && r.depth == depth) v.push_back(final_value(r, "test_accuracy"));
    double mean = 0, met = 0;
    for (double x : v) mean += x, met += x >= threshold ? 1 : 0;
    mean /= static_cast<double>(v.size());
    double ss = 0;
    for (double x : v) ss += (x - mean) * (x - mean);
    CHECK(row.at("count").get<size_t>() == v.size());
    CHECK(row.at("mean").get<double>() == Approx(mean).epsilon(1e-12));
    CHECK(row.at("std").get<double>() == Approx(std::sqrt(ss / static_cast<double>(v.size() - 1))).epsilon(1e-12));
    CHECK(row.at("min").get<double>() == *std::min_element(v.begin(), v.end()));
    CHECK(row.at("max").get<double>() == *std::max_element(v.begin(), v.end()));
    CHECK(row.at("frac").get<double>() == Approx(met / static_cast<double>(v.size())));
  }
  // The same table as text and CSV.
  Result table = gl_run("ledger query --group-by architecture.depth --metric test_accuracy --frac "
                         "'test_accuracy>=" + std::string(thr) + "' --agg count --where architecture.layer_norm=mlp-pre" +
                         f.L());
  auto tl = lines_of(table.out);
  REQUIRE(tl.size() == 3);
  CHECK_THAT(tl[0], Catch::StartsWith("architecture.depth  count  frac(test_accuracy>="));
  Result csv = gl_run("ledger query --group-by architecture.depth --metric test_accuracy --agg runs,mean "
                       "--where architecture.layer_norm=mlp-pre --format csv" + f.L());
  auto cl = lines_of(csv.out);
  REQUIRE(cl.size() == 3);
  CHECK(cl[0] == "architecture.depth,runs,mean");
  CHECK_THAT(cl[1], Catch::StartsWith("1,3,"));
  CHECK_THAT(cl[2], Catch::StartsWith("2,3,"));

  SECTION("mean steps to grok grouped by layer_norm placement") {
    // A level every run reaches: the lowest of the runs' best train accuracies.
    double level = 1.0;
    for (const Run& r : f.runs) {
      double best = 0;
      for (const auto& [s, values] : r.series) best = std::max(best, values.at("train_accuracy"));
      level = std::min(level, best);
    }
    char lv[64];
    std::snprintf(lv, sizeof lv, "%.17g", level);
    Result g = gl_run("ledger query --group-by architecture.layer_norm --metric 'first_step(train_accuracy>=" +
                       std::string(lv) + ")' --where architecture.depth=1 --format json" + f.L());
    INFO(g.out << g.err);
    REQUIRE(g.status == 0);
    json gj = json::parse(g.out);
    REQUIRE(gj.at("rows").size() == 2);
    for (const json& row : gj.at("rows")) {
      const std::string ln = row.at("architecture.layer_norm");
      double sum = 0;
      size_t n = 0;
      for (const Run& r : f.runs) {
        if (r.depth != 1 || r.layer_norm != ln) continue;
        for (const auto& [s, values] : r.series)
          if (values.at("train_accuracy") >= level) {
            sum += static_cast<double>(s);
            break;
          }
        ++n;
      }
      CHECK(row.at("count").get<size_t>() == n);
      CHECK(row.at("mean").get<double>() == Approx(sum / static_cast<double>(n)));
    }
    // Grouped rows come in key order: "mlp-pre" < "pre".
    CHECK(gj.at("rows")[0].at("architecture.layer_norm") == "mlp-pre");
  }

  SECTION("at a step, and best") {
    Result at = gl_run("ledger query --metric test_loss --at 30 --agg count,min --format json --where run.seed=2" + f.L());
    json aj = json::parse(at.out);
    double lo = 1e300;
    size_t n = 0;
    for (const Run& r : f.runs)
      if (r.seed == 2) lo = std::min(lo, r.series.at(30).at("test_loss")), ++n;
    CHECK(aj.at("rows")[0].at("count").get<size_t>() == n);
    CHECK(aj.at("rows")[0].at("min").get<double>() == lo);
    Result best = gl_run("ledger query --metric test_loss --at best --agg max --format json --where run.seed=2" + f.L());
    double hi = 0;  // the worst of the runs' best (lowest) losses
    for (const Run& r : f.runs) {
      if (r.seed != 2) continue;
      double b = 1e300;
      for (const auto& [s, values] : r.series) b = std::min(b, values.at("test_loss"));
      hi = std::max(hi, b);
    }
    CHECK(json::parse(best.out).at("rows")[0].at("max").get<double>() == hi);
    // Test accuracy where test_loss is lowest (the query machinery of early stopping).
    Result early = gl_run("ledger query --metric 'at_best(test_accuracy, test_loss)' --agg runs,max --format json "
                          "--where run.seed=2" + f.L());
    INFO(early.out << early.err);
    REQUIRE(early.status == 0);
    double top = -1;
    for (const Run& r : f.runs) {
      if (r.seed != 2) continue;
      double b = 1e300, v = -1;
      for (const auto& [s, values] : r.series)
        if (values.at("test_loss") < b) b = values.at("test_loss"), v = values.at("test_accuracy");
      top = std::max(top, v);
    }
    CHECK(json::parse(early.out).at("rows")[0].at("max").get<double>() == top);
  }

  SECTION("bad input") {
    Result nokey = gl_run("ledger query --group-by architecture.widht --metric test_accuracy" + f.L());
    CHECK(nokey.status == 2);
    CHECK_THAT(nokey.err, Catch::Contains("architecture.widht"));
    Result nometric = gl_run("ledger query --metric no_such_metric" + f.L());
    CHECK(nometric.status == 3);
    CHECK_THAT(nometric.err, Catch::Contains("has a value of no_such_metric"));
    Result badfrac = gl_run("ledger query --metric test_accuracy --frac 'test_accuracy~1'" + f.L());
    CHECK(badfrac.status == 2);
    CHECK_THAT(badfrac.err, Catch::Contains("expected METRIC OP NUMBER"));
    Result badat = gl_run("ledger query --metric test_accuracy --at last" + f.L());
    CHECK(badat.status == 2);
    CHECK_THAT(badat.err, Catch::Contains("expected final, best or a step number"));
  }
}

TEST_CASE("ledger export: tidy CSV and JSONL rows round-trip to the series", "[ledger-query][export]") {
  const Fixture& f = fixture();
  const std::string csv_path = (f.dir / "rows.csv").string();
  Result e = gl_run("ledger export --format csv -o " + csv_path + f.L());
  INFO(e.err);
  REQUIRE(e.status == 0);
  std::ifstream in(csv_path);
  std::string line;
  REQUIRE(std::getline(in, line));
  const auto header = csv_split(line);
  REQUIRE(header.size() > 4);
  CHECK(header.front() == "entry");
  CHECK(std::vector<std::string>(header.end() - 3, header.end()) == std::vector<std::string>{"step", "metric", "value"});
  const size_t depth_col = std::find(header.begin(), header.end(), "architecture.depth") - header.begin();
  const size_t seed_col = std::find(header.begin(), header.end(), "run.seed") - header.begin();
  REQUIRE(depth_col < header.size());
  REQUIRE(seed_col < header.size());
  CHECK(std::find(header.begin(), header.end(), "metrics.1.split") != header.end());

  std::map<std::string, const Run*> by_id;
  for (const Run& r : f.runs) by_id[r.id] = &r;
  size_t rows = 0, expected = 0;
  for (const Run& r : f.runs)
    for (const auto& [s, values] : r.series) expected += values.size();
  std::set<std::tuple<std::string, int64_t, std::string>> seen;
  while (std::getline(in, line)) {
    auto cells = csv_split(line);
    REQUIRE(cells.size() == header.size());
    const Run* r = by_id.at(cells[0]);
    CHECK(std::stoi(cells[depth_col]) == r->depth);
    CHECK(std::stoi(cells[seed_col]) == r->seed);
    const int64_t step = std::stoll(cells[cells.size() - 3]);
    const std::string& metric = cells[cells.size() - 2];
    // Bit-exact: shortest round-trip text parses back to the same double.
    CHECK(std::strtod(cells.back().c_str(), nullptr) == r->series.at(step).at(metric));
    seen.insert({cells[0], step, metric});
    ++rows;
  }
  CHECK(rows == expected);
  CHECK(seen.size() == expected);

  // JSONL: the same rows, typed.
  Result jl = gl_run("ledger export --format jsonl --where architecture.depth=2" + f.L());
  auto jlines = lines_of(jl.out);
  size_t want = 0;
  for (const Run& r : f.runs)
    if (r.depth == 2)
      for (const auto& [s, values] : r.series) want += values.size();
  CHECK(jlines.size() == want);
  for (const auto& l : jlines) {
    json row = json::parse(l);
    const Run* r = by_id.at(row.at("entry"));
    CHECK(row.at("architecture.depth") == 2);
    CHECK(row.at("value").get<double>() == r->series.at(row.at("step")).at(row.at("metric").get<std::string>()));
  }
  // An empty selection writes nothing and says so.
  Result none = gl_run("ledger export --where run.seed=7" + f.L());
  CHECK(none.status == 3);
  CHECK(none.out.empty());
  CHECK_THAT(none.err, Catch::Contains("no run matches --where run.seed=7"));
}

TEST_CASE("ledger audit: never replayed, replayed identical, diverged, other plugin binary, broken object",
          "[ledger-query][audit]") {
  const Fixture& f = fixture();
  // A copy of the fixture's ledger (a valid chain), then replays and one more run.
  const fs::path dir = f.dir / "audit";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy(f.ledger, dir / "ledger", fs::copy_options::recursive);
  const std::string L = " --ledger " + (dir / "ledger").string();

  const Run& same = f.runs[0];
  const Run& perturbed = f.runs[1];
  Result r1 = gl_run("replay " + same.id + L);
  INFO(r1.out << r1.err);
  REQUIRE(r1.status == 0);
  Result r2 = gl_run("replay " + perturbed.id + " optimizer.lr=0.02" + L);
  INFO(r2.out << r2.err);
  REQUIRE(r2.status == 3);  // diverged

  // An installation whose task plugin is the same code in a different file:
  // a copy of the groklab executable with copies of the plugins next to it
  // (bin/plugins is always searched), one byte appended to the task plugin
  // after its ELF image, which changes its hash but not what it computes.
  const fs::path bin = dir / "bin";
  const fs::path other = bin / "plugins";
  fs::create_directories(other);
  const std::string copy = (bin / "groklab").string();
  fs::copy_file(GROKLAB_BINARY, copy);
  for (const auto& e : fs::directory_iterator(kPlugins))
    if (e.path().extension() == ".so") fs::copy_file(e.path(), other / e.path().filename());
  std::ofstream(other / "libgroklab_tasks.so", std::ios::app | std::ios::binary) << '\n';
  Result r3 = gl_run("run " + (f.dir / "m.toml").string() + " run.seed=5" + L, copy, other.string());
  INFO(r3.out << r3.err);
  REQUIRE(r3.status == 0);
  const std::string rebuilt = r3.out.substr(r3.out.find("run ") + 4, 32);

  Result a = gl_run("ledger audit" + L);
  INFO(a.out << a.err);
  REQUIRE(a.status == 0);
  CHECK_THAT(a.out, Catch::StartsWith("chain and objects: ok: "));
  CHECK_THAT(a.out, Catch::Contains("runs: 9\n"));
  auto section = [&](const std::string& title) {
    auto at = a.out.find("\n" + title + ": ");
    REQUIRE(at != std::string::npos);
    auto end = a.out.find("\n\n", at + 1);
    return a.out.substr(at, end == std::string::npos ? std::string::npos : end - at);
  };
  const std::string never = section("never replayed");
  const std::string diverged = section("replay diverged");
  const std::string binaries = section("binaries differ from the installed ones (a replay would not be bit-exact)");
  CHECK_THAT(never, Catch::Contains("never replayed: 7\n"));  // 6 fixture runs + the rebuilt one
  CHECK_THAT(never, !Catch::Contains(same.id.substr(0, 12)));
  CHECK_THAT(never, !Catch::Contains(perturbed.id.substr(0, 12)));
  CHECK_THAT(never, Catch::Contains(f.runs[2].id.substr(0, 12)));
  CHECK_THAT(never, Catch::Contains(rebuilt.substr(0, 12)));
  CHECK_THAT(diverged, Catch::Contains("replay diverged: 1\n"));
  CHECK_THAT(diverged, Catch::Contains(perturbed.id.substr(0, 12)));
  CHECK_THAT(diverged, Catch::Contains("(overrides: optimizer.lr=0.02)"));
  CHECK_THAT(binaries, Catch::Contains("binaries differ from the installed ones (a replay would not be bit-exact): 1\n"));
  CHECK_THAT(binaries, Catch::Contains(rebuilt.substr(0, 12)));
  CHECK_THAT(binaries, Catch::Contains("plugins.groklab_tasks.hash: "));

  // Run with the rebuilt plugins installed, the other runs differ instead.
  Result b = gl_run("ledger audit" + L, copy, other.string());
  INFO(b.out << b.err);
  CHECK_THAT(b.out, Catch::Contains("binaries differ from the installed ones (a replay would not be bit-exact): 8\n"));

  // A different host binary: every run differs in host.hash.
  std::ofstream(copy, std::ios::app | std::ios::binary) << '\n';
  Result c = gl_run("ledger audit" + L, copy, other.string());
  INFO(c.out << c.err);
  CHECK_THAT(c.out, Catch::Contains("binaries differ from the installed ones (a replay would not be bit-exact): 9\n"));
  CHECK_THAT(c.out, Catch::Contains("host.hash: "));

  SECTION("a damaged object fails the audit before any listing") {
    std::ifstream entries(dir / "ledger" / "entries.jsonl");
    std::string first;
    std::getline(entries, first);
    const std::string h = json::parse(first).at("objects").at("config");
    const fs::path obj = dir / "ledger" / "objects" / h.substr(0, 2) / h.substr(2);
    fs::permissions(obj, fs::perms::owner_write, fs::perm_options::add);
    std::ofstream(obj, std::ios::app) << " ";
    Result bad = gl_run("ledger audit" + L);
    CHECK(bad.status == 1);
    CHECK_THAT(bad.out, !Catch::Contains("never replayed"));
    CHECK_THAT(bad.err, Catch::Contains("failed verification"));
  }
}

TEST_CASE("ledger show: a sweep's children, and a child's sweep and siblings", "[ledger-query][show]") {
  const fs::path dir = fs::temp_directory_path() / ("groklab-query-sweep-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  static groklab::PluginHost* host = [] {
    auto* h = new groklab::PluginHost;  // never destroyed: plugins are never unloaded
    h->load_directory(GROKLAB_BUILTIN_PLUGIN_DIR);
    return h;
  }();
  groklab::Composer composer(host->registry());
  std::string sweep, lone;
  std::vector<std::string> children;
  {
    auto ledger = groklab::ledger::Ledger::create((dir / "ledger").string());
    sweep = ledger.append({{"kind", "sweep"}, {"time", groklab::ledger::utc_timestamp()}, {"manifest", "m.toml"}});
    for (const char* seed : {"run.seed=0", "run.seed=1"}) {
      groklab::Provenance p;
      p.manifest = "m.toml";
      p.sweep = sweep;
      children.push_back(
          groklab::run_recorded(composer.compose_string(kManifest, "m.toml", {seed}), *host, ledger, p).run_id);
    }
    lone = groklab::run_recorded(composer.compose_string(kManifest, "m.toml", {}), *host, ledger, {}).run_id;
  }
  const std::string L = " --ledger " + (dir / "ledger").string();
  Result s = gl_run("ledger show " + sweep.substr(0, 8) + L);
  INFO(s.out << s.err);
  REQUIRE(s.status == 0);
  CHECK_THAT(s.out, Catch::Contains("\"kind\": \"sweep\""));
  CHECK_THAT(s.out, Catch::Contains("\nsweep children:\n"));
  CHECK_THAT(s.out, Catch::Contains(children[0].substr(0, 12)));
  CHECK_THAT(s.out, Catch::Contains(children[1].substr(0, 12)));
  CHECK_THAT(s.out, !Catch::Contains(lone.substr(0, 12)));
  Result c = gl_run("ledger show " + children[1] + L);
  INFO(c.out << c.err);
  CHECK_THAT(c.out, Catch::Contains("  sweep       " + sweep + "\n"));
  CHECK_THAT(c.out, Catch::Contains("    sibling   " + children[0].substr(0, 12)));
  CHECK_THAT(c.out, !Catch::Contains(lone.substr(0, 12)));
  Result l = gl_run("ledger show " + lone + L);
  CHECK_THAT(l.out, !Catch::Contains("  sweep "));
  CHECK_THAT(l.out, !Catch::Contains("sweep children"));
  fs::remove_all(dir);
}

TEST_CASE("audit.h: flattening, canonical matching, metric expressions", "[ledger-query][audit-api]") {
  using namespace groklab::audit;
  Config c = flatten_config("[architecture]\nplugin = \"transformer\"\ndepth = 2\n\n[[metrics]]\nplugin = \"accuracy\"\n"
                            "split = \"test\"\n\n[optimizer]\nlr = 0.001\nbetas = [0.9, 0.98]\n");
  CHECK(c.at("architecture.depth") == 2);
  CHECK(c.at("metrics.0.split") == "test");
  CHECK(value_matches(c.at("optimizer.lr"), "1e-3"));
  CHECK_FALSE(value_matches(c.at("optimizer.lr"), "1e-2"));
  CHECK(value_matches(c.at("architecture.depth"), "2.0"));
  CHECK_FALSE(value_matches(c.at("architecture.depth"), "two"));
  CHECK(value_matches(c.at("optimizer.betas"), "[0.9,0.98]"));
  CHECK(value_matches(c.at("architecture.plugin"), "transformer"));
  CHECK(close_keys("depth", {"architecture.depth", "run.seed", "architecture.d_model"}).front() == "architecture.depth");

  Series s = {{10, {{"test_accuracy", 0.1}}}, {20, {{"test_accuracy", 0.9}}}, {30, {{"test_accuracy", 0.7}}}};
  CHECK(*metric_value(s, parse_metric("test_accuracy"), parse_at("final")) == 0.7);
  CHECK(*metric_value(s, parse_metric("test_accuracy"), parse_at("best")) == 0.9);
  CHECK(*metric_value(s, parse_metric("test_accuracy"), parse_at("10")) == 0.1);
  CHECK_FALSE(metric_value(s, parse_metric("test_accuracy"), parse_at("15")));
  CHECK(*metric_value(s, parse_metric("first_step(test_accuracy>=0.8)"), parse_at("final")) == 20);
  CHECK_FALSE(metric_value(s, parse_metric("first_step(test_accuracy>0.95)"), parse_at("final")));
  CHECK_THROWS_AS(parse_metric("first_step(test_accuracy)"), std::invalid_argument);

  // at_best: test accuracy at the step of best validation accuracy (the first on ties),
  // among the evaluations recording both; a loss key is best at its minimum.
  Series e = {{10, {{"val_accuracy", 0.5}, {"test_accuracy", 0.2}, {"val_loss", 2.0}}},
              {20, {{"val_accuracy", 0.9}, {"test_accuracy", 0.6}, {"val_loss", 0.5}}},
              {25, {{"val_accuracy", 0.95}}},
              {30, {{"val_accuracy", 0.9}, {"test_accuracy", 0.8}, {"val_loss", 0.4}}},
              {40, {{"val_accuracy", 0.7}, {"test_accuracy", 0.95}, {"val_loss", 0.9}}}};
  const MetricSpec early = parse_metric("at_best(test_accuracy, val_accuracy)");
  CHECK(early.text() == "at_best(test_accuracy,val_accuracy)");
  CHECK(*metric_value(e, early, parse_at("final")) == 0.6);
  CHECK(*metric_value(e, early, parse_at("10")) == 0.6);  // ignores AT
  CHECK(*metric_value(e, parse_metric("test_accuracy"), parse_at("final")) == 0.95);
  CHECK(*metric_value(e, parse_metric("at_best(test_accuracy,val_loss)"), parse_at("final")) == 0.8);
  CHECK_FALSE(metric_value(e, parse_metric("at_best(test_accuracy,train_accuracy)"), parse_at("final")));
  for (const char* bad : {"at_best(test_accuracy)", "at_best(test_accuracy,)", "at_best(,val_accuracy)",
                          "at_best(test_accuracy,val_accuracy", "test_accuracy,val_accuracy"})
    CHECK_THROWS_AS(parse_metric(bad), std::invalid_argument);
  CHECK(parse_condition("test_accuracy >= 0.8").text() == "test_accuracy>=0.8");
  Series t = s;
  t[30]["test_accuracy"] = 0.71;
  CHECK(*first_difference(s, t, "test_accuracy") == 30);
  CHECK_FALSE(first_difference(s, s, "test_accuracy"));
}

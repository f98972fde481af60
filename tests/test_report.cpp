// groklab report: the SVG/HTML pieces, then end to end: a ledger of short real
// runs, `groklab report -o`, and the page rendered in headless Chromium.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "groklab/ledger/ledger.h"
#include "groklab/report.h"
#include "support.h"

namespace fs = std::filesystem;
namespace rp = groklab::report;
using groklab::test::TempDir;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

size_t occurrences(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

// The numbers in an SVG path's d attribute.
std::vector<double> path_numbers(const std::string& d) {
  std::vector<double> out;
  std::regex num(R"(-?[0-9]+(\.[0-9]+)?)");
  for (auto it = std::sregex_iterator(d.begin(), d.end(), num); it != std::sregex_iterator(); ++it)
    out.push_back(std::stod(it->str()));
  return out;
}

// The d attributes of every <path class="series"> in a document.
std::vector<std::string> series_paths(const std::string& doc) {
  std::vector<std::string> out;
  std::regex path(R"re(<path class="series"[^>]*\sd="([^"]*)")re");
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), path); it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1].str());
  return out;
}

std::vector<std::string> labels(const std::vector<rp::Tick>& ticks) {
  std::vector<std::string> out;
  for (const auto& t : ticks)
    if (!t.label.empty()) out.push_back(t.label);
  return out;
}

rp::Run fake_run(const std::string& id, int depth, int seed, const std::vector<std::pair<double, double>>& test_acc) {
  rp::Run r;
  r.id = id;
  r.status = "finished";
  r.config = {{"task.plugin", "modular_arithmetic"}, {"architecture.depth", depth}, {"run.seed", seed}};
  r.config_hash = groklab::ledger::hash_bytes(id);
  r.group = rp::group_hash(r.config);
  r.seed = std::to_string(seed);
  for (const auto& [step, acc] : test_acc) {
    r.series["test_accuracy"].push_back({step, acc});
    r.series["train_accuracy"].push_back({step, 1.0});
    r.series["train_loss"].push_back({step, 1.0 / step});
  }
  r.steps = test_acc.empty() ? 0 : static_cast<int64_t>(test_acc.back().first);
  return r;
}

}  // namespace

TEST_CASE("report: escaping leaves no markup from the ledger", "[report]") {
  CHECK(rp::escape("a<b>&\"c'") == "a&lt;b&gt;&amp;&quot;c&#39;");
  CHECK(rp::escape("plain text, ünïcode") == "plain text, ünïcode");

  // A config string, a seed and a metric name that try to inject markup.
  const std::string evil = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'";
  rp::Run r = fake_run(std::string(32, 'a'), 1, 0, {{10, 0.5}, {100, 1.0}});
  r.config["task.operation"] = evil;
  r.config[evil] = evil;
  r.seed = evil;
  r.series[evil] = {{10, 1.0}, {20, 2.0}};
  r.cpu = evil;
  rp::Run r2 = fake_run(std::string(32, 'b'), 2, 1, {{10, 0.5}, {100, 1.0}});
  r2.config["task.operation"] = "add";
  rp::Options o;
  o.title = evil;
  o.selection = {evil};
  const std::string html = rp::render_html({r, r2}, o);
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("<img") == std::string::npos);
  CHECK(html.find("onerror=alert(2)>") == std::string::npos);
  CHECK(html.find("&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
  // Every attribute value is quoted and the quotes inside it are escaped, so
  // no tag gains an attribute from the data.
  CHECK(html.find("\"'") == std::string::npos);
}

TEST_CASE("report: log axis ticks", "[report]") {
  // Several decades: powers of ten labelled (steps as 1k, 10k), 2..9x as minor ticks.
  auto t = rp::log_ticks(1, 1e4, true);
  CHECK(labels(t) == std::vector<std::string>{"1", "10", "100", "1k", "10k"});
  CHECK(t.size() == 4 * 9 + 1);
  CHECK(t.front().value == 1);
  CHECK(t.back().value == Approx(1e4));
  // Two decades or less: 2x and 5x are labelled too.
  CHECK(labels(rp::log_ticks(10, 50, true)) == std::vector<std::string>{"10", "20", "50"});
  CHECK(labels(rp::log_ticks(5, 100, true)) == std::vector<std::string>{"5", "10", "20", "50", "100"});
  // Values: exponents without padding.
  CHECK(labels(rp::log_ticks(1e-5, 1e-3)) == std::vector<std::string>{"1e-5", "1e-4", "0.001"});
  CHECK(labels(rp::log_ticks(1e5, 1e6)) == std::vector<std::string>{"1e5", "2e5", "5e5", "1e6"});
  CHECK(rp::log_ticks(0, 10).empty());
  CHECK(rp::log_ticks(10, 10).empty());

  CHECK(rp::nice_log_range(50, 5000) == std::pair<double, double>{50, 5000});
  auto r = rp::nice_log_range(37, 4200);
  CHECK(r.first == Approx(20));
  CHECK(r.second == Approx(5000));

  rp::Axis x{1, 1000, true, 0, 300};
  CHECK(x.map(1) == Approx(0));
  CHECK(x.map(10) == Approx(100));
  CHECK(x.map(1000) == Approx(300));
  rp::Axis y{0, 1, false, 200, 0};  // y grows upwards
  CHECK(y.map(0.25) == Approx(150));

  CHECK(labels(rp::linear_ticks(0, 1)) == std::vector<std::string>{"0", "0.2", "0.4", "0.6", "0.8", "1"});
  auto lr = rp::nice_linear_range(0.13, 0.87);
  CHECK(lr.first == Approx(0.0));
  CHECK(lr.second == Approx(1.0));
}

TEST_CASE("report: a series becomes a path inside the plot", "[report]") {
  rp::LineChart c;
  c.title = "accuracy";
  c.y_label = "accuracy";
  c.fixed_y = true;
  rp::LineSeries s{"train_accuracy", "#1f77b4", "", {}};
  for (double step : {0.0, 10.0, 100.0, 1000.0}) s.points.push_back({step, step / 1000});
  c.series.push_back(s);
  c.series.push_back({"single", "#ff7f0e", "6 4", {{50, 0.5}}});
  const std::string svg = rp::line_chart_svg(c);
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("stroke-dasharray=\"6 4\"") != std::string::npos);
  auto paths = series_paths(svg);
  REQUIRE(paths.size() == 2);
  // Step 0 cannot be on a log axis: three points, one move and two lines.
  CHECK(paths[0].rfind("M", 0) == 0);
  CHECK(occurrences(paths[0], "L") == 2);
  auto nums = path_numbers(paths[0]);
  REQUIRE(nums.size() == 6);
  for (size_t i = 0; i < nums.size(); i += 2) {
    CHECK(nums[i] >= 62);
    CHECK(nums[i] <= c.width - 16);
    CHECK(nums[i + 1] >= 28);
    CHECK(nums[i + 1] <= c.height - 46);
  }
  CHECK(nums[0] < nums[2]);  // x grows with step
  CHECK(nums[3] < nums[1]);  // y grows upwards with accuracy
  // A lone point is drawn as a circle too.
  CHECK(occurrences(svg, "<circle class=\"point\"") == 1);
  // The legend names both series; the x axis says it is logarithmic.
  CHECK(svg.find(">single</text>") != std::string::npos);
  CHECK(svg.find("step (log)") != std::string::npos);

  rp::LineChart empty;
  empty.title = "nothing";
  empty.series.push_back({"no points", "#000", "", {{0, 1}}});  // x = 0: not drawable on a log axis
  const std::string none = rp::line_chart_svg(empty);
  CHECK(series_paths(none).empty());
  CHECK(none.find("no data to draw") != std::string::npos);
}

TEST_CASE("report: bar charts and group statistics", "[report]") {
  std::vector<rp::Run> runs = {
      fake_run(std::string(32, '1'), 1, 0, {{10, 0.1}, {100, 0.9}, {1000, 1.0}}),   // groks at 1000
      fake_run(std::string(32, '2'), 1, 1, {{10, 0.1}, {100, 0.996}, {200, 1.0}}),  // groks at 100
      fake_run(std::string(32, '3'), 2, 0, {{10, 0.1}, {100, 0.3}}),                // never
      fake_run(std::string(32, '4'), 10, 0, {{10, 0.85}}),                          // >= 0.8, no grok
  };
  CHECK(rp::varying_keys(runs) == std::vector<std::string>{"architecture.depth"});
  auto g = rp::group_stats(runs, "architecture.depth");
  REQUIRE(g.size() == 3);
  CHECK(g[0].value == "1");
  CHECK(g[1].value == "2");
  CHECK(g[2].value == "10");  // by number, not text
  CHECK(g[0].runs == 2);
  CHECK(g[0].grokked80 == 2);
  CHECK(g[0].grokked == 2);
  CHECK(g[0].mean_steps_to_grok == Approx(550));
  CHECK(g[1].grokked80 == 0);
  CHECK(g[1].grokked == 0);
  CHECK(g[2].grokked80 == 1);
  CHECK(g[2].grokked == 0);

  rp::BarChart b;
  b.title = "depth";
  b.fixed_y = true;
  b.bars = {{"1", true, 1.0, "2/2"}, {"2", true, 0.0, "0/1"}, {"10", false, 0, "none grokked"}};
  const std::string svg = rp::bar_chart_svg(b);
  CHECK(occurrences(svg, "<rect class=\"bar\"") == 2);
  CHECK(svg.find("none grokked") != std::string::npos);

  // Seeds of one config share a group; the page has one section per config.
  CHECK(runs[0].group == runs[1].group);
  CHECK(runs[0].group != runs[2].group);
  const std::string html = rp::render_html(runs, {});
  CHECK(occurrences(html, "class=\"config-group\"") == 3);
  CHECK(occurrences(html, "<rect class=\"bar\"") >= 3);
  for (const auto& r : runs) CHECK(html.find("data-run=\"" + r.id + "\"") != std::string::npos);
  CHECK_THROWS_AS(rp::render_html({}, {}), std::invalid_argument);
}

TEST_CASE("report: files are written atomically", "[report]") {
  TempDir dir("atomic");
  const fs::path p = dir.path / "sub" / "page.html";
  rp::write_file_atomically(p.string(), "one");
  rp::write_file_atomically(p.string(), "two");
  CHECK(slurp(p) == "two");
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir.path / "sub")) {
    (void)e;
    ++files;
  }
  CHECK(files == 1);  // no temporary left behind
  CHECK_THROWS_AS(rp::write_file_atomically((dir.path / "sub" / "page.html" / "x").string(), "x"),
                  std::exception);
}

namespace {

const std::string kEnv = std::string("GROKLAB_PLUGIN_PATH=") + GROKLAB_TEST_PLUGIN_DIR + "/good ";

struct Ran {
  int status;
  std::string out;
};

Ran groklab_cli(const std::string& args) {
  Ran r{0, ""};
  int rc = groklab::test::run_command(kEnv + GROKLAB_BINARY + " " + args, r.out);
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return r;
}

// A tiny grokking-shaped experiment: modular addition, a 16-wide transformer.
const char* const kManifest = R"(
[task]
plugin = "modular_arithmetic"
p = 11
operation = "add"
train_fraction = 0.5

[architecture]
plugin = "transformer"
depth = 1
d_model = 16
heads = 2
d_ff = 32

[optimizer]
plugin = "adamw"
lr = 3e-3
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

[[metrics]]
plugin = "weight_norm"

[run]
steps = 60
eval_every = 5
checkpoint_every = 30
)";

// Headless Chromium, from Debian's package, with nothing that reaches the network.
std::string chromium_command(const fs::path& profile) {
  return "timeout 180 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-quic "
         "--no-first-run --disable-background-networking --disable-component-update --disable-sync "
         "--disable-extensions --user-data-dir=" + profile.string() + " --window-size=1200,3000 ";
}

// Decodes the top ROWS rows of a PNG (python3's zlib; 8-bit RGB/RGBA) and
// prints its size, the non-white pixel count and the count of each hex colour.
const char* const kPngProbe = R"(import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
rows = int(sys.argv[2])
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat = 8, []
while pos < len(data):
    n, = struct.unpack(">I", data[pos:pos + 4])
    kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
    pos += 12 + n
    if kind == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
    elif kind == b"IDAT":
        idat.append(body)
assert depth == 8 and ctype in (2, 6), "unexpected PNG format %d/%d" % (depth, ctype)
bpp = 3 if ctype == 2 else 4
rows = min(h, rows)
stride = w * bpp
raw = zlib.decompressobj().decompress(b"".join(idat), (stride + 1) * rows)
prev = bytearray(stride)
colors, nonwhite = {}, 0
for y in range(rows):
    f = raw[y * (stride + 1)]
    cur = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    if f == 1:
        for i in range(bpp, stride): cur[i] = (cur[i] + cur[i - bpp]) & 255
    elif f == 2:
        cur = bytearray((a + b) & 255 for a, b in zip(cur, prev))
    elif f == 3:
        for i in range(stride): cur[i] = (cur[i] + ((cur[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
    elif f == 4:
        for i in range(stride):
            a = cur[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        px = bytes(cur[x:x + 3])
        colors[px] = colors.get(px, 0) + 1
        if px != b"\xff\xff\xff":
            nonwhite += 1
    prev = cur
print("size %d %d" % (w, h))
print("nonwhite %d" % nonwhite)
for name in sys.argv[3:]:
    print("color %s %d" % (name, colors.get(bytes.fromhex(name), 0)))
)";

long probe_value(const std::string& out, const std::string& key) {
  auto at = out.find(key + " ");
  if (at == std::string::npos) return -1;
  return std::stol(out.substr(at + key.size() + 1));
}

}  // namespace

TEST_CASE("report: real runs, groklab report, rendered in headless Chromium", "[report][cli]") {
  std::string which;
  if (groklab::test::run_command("command -v chromium", which) != 0)
    FAIL("chromium is not installed: scripts/setup.sh installs Debian's chromium package, "
         "which this test renders the report in");
  std::string py;
  if (groklab::test::run_command("command -v python3", py) != 0)
    FAIL("python3 is not installed (scripts/setup.sh installs it): the test decodes the screenshot with it");

  TempDir dir("e2e");
  const fs::path manifest = dir.path / "tiny_modadd.toml";
  std::ofstream(manifest) << kManifest;
  const std::string ledger = (dir.path / "ledger").string();

  // Two depths x two seeds; each run writes and names its own report.
  std::vector<std::string> ids;
  for (int depth : {1, 2})
    for (int seed : {0, 1}) {
      Ran r = groklab_cli("-q run " + manifest.string() + " architecture.depth=" + std::to_string(depth) +
                          " run.seed=" + std::to_string(seed) + " --ledger " + ledger);
      INFO(r.out);
      REQUIRE(r.status == 0);
      std::smatch m;
      REQUIRE(std::regex_search(r.out, m, std::regex("run ([0-9a-f]{32}) finished")));
      ids.push_back(m[1].str());
      const fs::path own = fs::path(ledger) / "reports" / (ids.back() + ".html");
      CHECK_THAT(r.out, Catch::Contains("report: " + own.string()));
      REQUIRE(fs::exists(own));
      const std::string page = slurp(own);
      CHECK(page.find("data-run=\"" + ids.back() + "\"") != std::string::npos);
      CHECK_FALSE(series_paths(page).empty());
    }
  // One run replayed: the provenance table says so.
  Ran replay = groklab_cli("-q replay " + ids[0] + " --ledger " + ledger);
  INFO(replay.out);
  REQUIRE(replay.status == 0);

  // Bad input: an unknown key, an empty selection; neither writes a file.
  const fs::path page = dir.path / "report.html";
  Ran unknown = groklab_cli("-q report --where architecture.dpeth=2 --ledger " + ledger + " -o " + page.string());
  INFO(unknown.out);
  CHECK(unknown.status != 0);
  CHECK_THAT(unknown.out, Catch::Contains("architecture.dpeth"));
  CHECK_THAT(unknown.out, Catch::Contains("architecture.depth"));  // the closest known key
  Ran none = groklab_cli("-q report --where architecture.depth=7 --ledger " + ledger + " -o " + page.string());
  INFO(none.out);
  CHECK(none.status != 0);
  CHECK_THAT(none.out, Catch::Contains("no run matches"));
  CHECK_FALSE(fs::exists(page));
  Ran other_task = groklab_cli("-q report --task dyck --ledger " + ledger + " -o " + page.string());
  CHECK(other_task.status != 0);
  CHECK_FALSE(fs::exists(page));
  Ran bad_group = groklab_cli("-q report --group-by architecture.dpth --ledger " + ledger + " -o " + page.string());
  INFO(bad_group.out);
  CHECK(bad_group.status != 0);
  CHECK_THAT(bad_group.out, Catch::Contains("'architecture.dpth'"));
  CHECK_FALSE(fs::exists(page));

  // Named runs, after a filter: only those that also match it.
  Ran named = groklab_cli("-q report --where architecture.depth=1 " + ids[0].substr(0, 10) + " " + ids[2] +
                          " --ledger " + ledger + " -o " + page.string());
  INFO(named.out);
  REQUIRE(named.status == 0);
  CHECK_THAT(named.out, Catch::Contains("(1 run)"));
  CHECK(slurp(page).find("data-run=\"" + ids[0] + "\"") != std::string::npos);
  fs::remove(page);

  // A selection: depth 2 only.
  Ran some = groklab_cli("-q report --where architecture.depth=2 --ledger " + ledger + " -o " + page.string());
  INFO(some.out);
  REQUIRE(some.status == 0);
  CHECK_THAT(some.out, Catch::Contains("(2 runs)"));
  {
    const std::string html = slurp(page);
    CHECK(html.find(ids[2]) != std::string::npos);
    CHECK(html.find(ids[0]) == std::string::npos);
  }

  // The whole ledger.
  Ran all = groklab_cli("-q report --task modular_arithmetic --ledger " + ledger + " -o " + page.string());
  INFO(all.out);
  REQUIRE(all.status == 0);
  CHECK_THAT(all.out, Catch::Contains("report: " + page.string() + " (4 runs)"));
  const std::string html = slurp(page);
  // Self-contained: no scripts, nothing fetched.
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("href=\"http") == std::string::npos);
  CHECK(html.find("src=") == std::string::npos);
  CHECK(html.find("url(") == std::string::npos);

  // Render it.
  const fs::path png = dir.path / "report.png", dom = dir.path / "dom.html";
  const std::string url = "file://" + page.string();
  std::string shot_out;
  const fs::path shot_log = dir.path / "screenshot.log";
  int shot = groklab::test::run_command("{ " + chromium_command(dir.path / "profile-shot") + "--screenshot=" +
                                            png.string() + " " + url + " >" + shot_log.string() + " 2>&1; }",
                                        shot_out);
  INFO(slurp(shot_log));
  REQUIRE(shot == 0);
  REQUIRE(fs::exists(png));
  CHECK(fs::file_size(png) > 20000);
  std::string dom_log;
  int dumped = groklab::test::run_command("{ " + chromium_command(dir.path / "profile-dom") + "--dump-dom " + url +
                                              " >" + dom.string() + " 2>" + (dir.path / "dom.log").string() + "; }",
                                          dom_log);
  INFO(slurp(dir.path / "dom.log"));
  REQUIRE(dumped == 0);
  const std::string rendered = slurp(dom);
  REQUIRE(rendered.find("</html>") != std::string::npos);

  // The rendered DOM: every chart series drawn, bars drawn, every run listed.
  auto paths = series_paths(rendered);
  // Per config (4: two depths x ... seeds overlaid -> 2 configs): accuracy has
  // train+test per seed, loss test per seed, and per seed weight_norm,
  // weight_norm_per_layer and weight_norm_layer_<l> for each of its depth's layers.
  CHECK(paths.size() == (2 * 2 + 2 + 2 * (2 + 1)) + (2 * 2 + 2 + 2 * (2 + 2)));
  for (const auto& d : paths) {
    CHECK(d.rfind("M", 0) == 0);
    CHECK(path_numbers(d).size() >= 4);  // at least a line
  }
  CHECK(occurrences(rendered, "class=\"config-group\"") == 2);
  CHECK(occurrences(rendered, "<rect class=\"bar\"") >= 2);
  CHECK(rendered.find("architecture.depth: fraction grokked") != std::string::npos);
  auto table_at = rendered.find("id=\"provenance-table\"");
  REQUIRE(table_at != std::string::npos);
  const std::string table = rendered.substr(table_at);
  for (const auto& id : ids) CHECK(table.find("<td class=\"mono run-id\">" + id + "</td>") != std::string::npos);
  CHECK(occurrences(table, ">bit-identical<") == 1);
  CHECK(occurrences(table, ">never<") == 3);

  // The screenshot: decoded, it is the page (drawn in the palette), not a blank.
  const fs::path probe = dir.path / "png_probe.py";
  std::ofstream(probe) << kPngProbe;
  std::string probed;
  int pr = groklab::test::run_command("python3 " + probe.string() + " " + png.string() +
                                          " 1400 1f77b4 ff7f0e",
                                      probed);
  INFO(probed);
  REQUIRE(pr == 0);
  CHECK_THAT(probed, Catch::Contains("size 1200 3000"));
  CHECK(probe_value(probed, "nonwhite") > 20000);
  CHECK(probe_value(probed, "color 1f77b4") > 50);  // bars and seed-0 lines
  CHECK(probe_value(probed, "color ff7f0e") > 50);
}

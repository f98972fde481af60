// The HTML report of runs from the ledger (`groklab report`, and the page
// `groklab run` writes for its own run): one self-contained file (inline CSS
// and SVG; no scripts, fonts or network) with
//   - per config (runs grouped by config hash without run.seed, seeds overlaid):
//     train/test accuracy and loss against step on a log axis, and one small
//     chart per other metric series;
//   - for every config key the selected runs vary in (or the keys asked for):
//     bar charts of the fraction of runs whose final test accuracy >= 0.8 and
//     of the mean steps-to-grok (first evaluated step with test accuracy >= 0.995);
//   - a provenance table: entry id, config hash, environment, replay status.
// Every text taken from the ledger is HTML-escaped.
//
//   auto ledger = groklab::ledger::Ledger::open("groklab-ledger");
//   auto runs = groklab::audit::select_runs(groklab::audit::list_runs(ledger), sel);
//   groklab::report::write_report(ledger, runs, {}, "report.html");
//
// The chart pieces (axes, ticks, charts) are public for tests and reuse.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "groklab/audit.h"
#include "groklab/export.h"
#include "groklab/ledger/ledger.h"

namespace groklab::report {

// ---- text ----------------------------------------------------------------

// Escapes & < > " ' for HTML text and attribute values (also inside inline SVG).
GROKLAB_API std::string escape(std::string_view text);

// ---- axes ----------------------------------------------------------------

// One axis: a data range mapped onto [pixel_lo, pixel_hi] (pixel_lo may be the
// larger, for a y axis), linear or log10.
struct GROKLAB_API Axis {
  double lo = 0, hi = 1;  // data range (log: both > 0)
  bool log = false;
  double pixel_lo = 0, pixel_hi = 1;
  // The pixel of a data value (log: of its log10); values outside the range
  // map outside [pixel_lo, pixel_hi].
  double map(double value) const;
};

// A tick: where, and its label ("" for an unlabelled minor tick).
struct Tick {
  double value;
  std::string label;
};

// Ticks of a log axis over [lo, hi] (0 < lo < hi): every power of ten, labelled;
// 2..9 x each power as unlabelled minor ticks, except that when the range holds
// fewer than three powers of ten (about two decades or less), 2x and 5x are
// labelled too. STEP_LABELS
// writes 1000 as "1k" and 10^6 as "1M"; otherwise labels are "1e-05"-free
// (1e-5, 0.01, 1, 100, 1e+04 -> 1e4).
GROKLAB_API std::vector<Tick> log_ticks(double lo, double hi, bool step_labels = false);

// About TARGET ticks of a linear axis at 1, 2 or 5 x 10^k within [lo, hi].
GROKLAB_API std::vector<Tick> linear_ticks(double lo, double hi, int target = 5);

// The range a log axis shows for data in [lo, hi] (0 < lo <= hi): widened to
// 1, 2 or 5 x 10^k on both sides.
GROKLAB_API std::pair<double, double> nice_log_range(double lo, double hi);

// The range a linear axis shows for data in [lo, hi]: widened to multiples of
// a 1/2/5 x 10^k tick step (a zero-width range is widened around its value).
GROKLAB_API std::pair<double, double> nice_linear_range(double lo, double hi);

// ---- charts --------------------------------------------------------------

struct Point {
  double x, y;
};

// One line of a chart. Points with a non-finite coordinate (or <= 0 on a log
// axis) are left out and break the line.
struct LineSeries {
  std::string label;   // for the legend and the path's data-label
  std::string color;   // a CSS colour (chart code only passes its own palette)
  std::string dash;    // an SVG stroke-dasharray ("" = solid)
  std::vector<Point> points;
};

// A legend entry; a chart without any lists one per series.
struct LegendItem {
  std::string label;
  std::string color;
  std::string dash;
};

struct LineChart {
  std::string title;
  std::string x_label = "step";
  std::string y_label;
  bool log_x = true;
  bool log_y = false;
  bool fixed_y = false;      // use [y_lo, y_hi] instead of the data's range
  double y_lo = 0, y_hi = 1;
  bool step_x = true;        // x tick labels as steps (1k, 10k)
  int width = 560, height = 300;
  std::vector<LineSeries> series;
  std::vector<LegendItem> legend;
};

// An inline <svg> element: axes with ticks and labels, grid, one
// <path class="series"> per drawn series (a single point also gets a
// <circle class="point">), the legend. A chart with nothing to draw says so.
GROKLAB_API std::string line_chart_svg(const LineChart& chart);

struct Bar {
  std::string label;       // category, under the bar
  bool has_value = false;  // false: no bar, "none" shown instead
  double value = 0;
  std::string note;        // above the bar, e.g. "2/3"
};

struct BarChart {
  std::string title;
  std::string x_label;
  std::string y_label;
  bool fixed_y = false;    // use [0, y_hi]
  double y_hi = 1;
  int width = 420, height = 280;
  std::vector<Bar> bars;
};

// An inline <svg> element with one <rect class="bar"> per bar that has a value.
GROKLAB_API std::string bar_chart_svg(const BarChart& chart);

// ---- the report ----------------------------------------------------------

// What the report shows of one run (filled from the ledger by runs_from_ledger,
// or by hand in tests).
struct GROKLAB_API Run {
  std::string id;            // the run entry
  std::string time;
  std::string status;        // finished | started | failed | interrupted
  std::string config_hash;   // of the whole resolved config
  std::string group;         // hash of the config without run.seed: seeds of one config share it
  audit::Config config;      // flattened resolved config
  std::string seed;          // run.seed as text
  int64_t steps = 0;
  // metric name -> (step, value) in step order
  std::map<std::string, std::vector<Point>> series;
  // environment summary
  std::string host_hash, torch, blas, cpu;
  int64_t threads = 0;
  // "never", "bit-identical" or "diverged": the latest replay that was not
  // perturbed by overrides, with its mode ("bit-identical (spot-check)").
  std::string replay = "never";
};

// The hash of a flattened config without run.seed (32 hex digits).
GROKLAB_API std::string group_hash(const audit::Config& config);

// Loads what the report shows of each run (its series, environment, replays).
GROKLAB_API std::vector<Run> runs_from_ledger(const ledger::Ledger& ledger,
                                              const std::vector<audit::RunInfo>& runs);

struct Options {
  std::string title = "groklab report";
  std::string ledger;                    // ledger directory, shown in the header
  std::string ledger_head;               // the ledger's head when the report was made
  std::vector<std::string> selection;    // the selection, as given ("architecture.depth=2")
  std::vector<std::string> group_by;     // keys for the grouped charts ({}: every key that varies)
};

// The grouped statistics of one value of a key (what the bar charts show).
struct GROKLAB_API GroupStat {
  std::string value;            // the key's value as text ("(absent)" if a run lacks the key)
  std::size_t runs = 0;
  std::size_t with_accuracy = 0;  // runs with a final test_accuracy
  std::size_t grokked80 = 0;      // final test_accuracy >= 0.8
  std::size_t grokked = 0;        // reached test_accuracy >= 0.995
  double mean_steps_to_grok = 0;  // over the runs that grokked
};

// The config keys (not run.seed) whose values differ among RUNS, sorted.
GROKLAB_API std::vector<std::string> varying_keys(const std::vector<Run>& runs);

// The runs grouped by the value of KEY (numbers by value, then text).
GROKLAB_API std::vector<GroupStat> group_stats(const std::vector<Run>& runs, const std::string& key);

// The whole page. Throws std::invalid_argument if RUNS is empty.
GROKLAB_API std::string render_html(const std::vector<Run>& runs, const Options& options);

// Writes TEXT to PATH atomically: a temporary file in the same directory,
// fsync, rename (creating the directory if needed). Throws std::runtime_error.
GROKLAB_API void write_file_atomically(const std::string& path, const std::string& text);

// Loads RUNS from LEDGER, renders and writes the page to PATH (atomically).
// Throws std::invalid_argument for an empty selection (nothing is written).
GROKLAB_API void write_report(const ledger::Ledger& ledger, const std::vector<audit::RunInfo>& runs,
                              Options options, const std::string& path);

// Writes the report of one run to LEDGER/reports/<run id>.html and returns its path.
GROKLAB_API std::string write_run_report(const ledger::Ledger& ledger, const std::string& run_id);

}  // namespace groklab::report

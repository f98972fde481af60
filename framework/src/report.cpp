#include "groklab/report.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>

namespace groklab::report {

using nlohmann::json;

namespace {

constexpr double kGrokThreshold = 0.995;  // steps-to-grok: first test_accuracy >= this
constexpr double kFracThreshold = 0.8;    // "grokked" for the fraction chart

// Tableau 10: distinguishable, and readable by most colour-blind readers.
const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr std::size_t kPaletteSize = sizeof kPalette / sizeof kPalette[0];
const char* const kInk = "#333";
const char* const kGrid = "#e4e4e4";

std::string num(double v, int precision = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", precision, v);
  return buf;
}

// Pixel coordinates: one decimal is plenty and keeps the file small.
std::string px(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// "1e-05" -> "1e-5", "1e+04" -> "1e4".
std::string tidy_exponent(std::string s) {
  auto e = s.find('e');
  if (e == std::string::npos) return s;
  std::string mant = s.substr(0, e), exp = s.substr(e + 1);
  bool neg = !exp.empty() && exp[0] == '-';
  if (!exp.empty() && (exp[0] == '-' || exp[0] == '+')) exp.erase(0, 1);
  while (exp.size() > 1 && exp[0] == '0') exp.erase(0, 1);
  return mant + "e" + (neg ? "-" : "") + exp;
}

std::string value_label(double v) {
  if (v == 0) return "0";
  double a = std::fabs(v);
  if (a >= 1e-3 && a < 1e5) return num(v, 6);
  // Scientific, without trailing zeros: 1e-4, 2.5e6.
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  std::string s = buf;
  auto e = s.find('e');
  std::string mant = s.substr(0, e);
  while (mant.back() == '0') mant.pop_back();
  if (mant.back() == '.') mant.pop_back();
  return tidy_exponent(mant + s.substr(e));
}

std::string step_label(double v) {
  if (v >= 1e6 && std::fmod(v, 1e6) == 0) return num(v / 1e6, 6) + "M";
  if (v >= 1e3 && std::fmod(v, 1e3) == 0) return num(v / 1e3, 6) + "k";
  return value_label(v);
}

// Snaps tiny floating-point error in tick values (0.30000000000000004 -> 0.3).
double snap(double v, double step) { return std::round(v / step) * step; }

double nice_step(double span, int target) {
  double raw = span / std::max(1, target);
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

std::string attr(std::string_view name, std::string_view value) {
  return " " + std::string(name) + "=\"" + escape(value) + "\"";
}

// The plot area of a chart, in pixels.
struct Frame {
  double left, top, right, bottom;
};

std::string svg_open(int width, int height, const std::string& cls, const std::string& title) {
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"" + cls + "\" width=\"" +
                  std::to_string(width) + "\" height=\"" + std::to_string(height) + "\" viewBox=\"0 0 " +
                  std::to_string(width) + " " + std::to_string(height) + "\" role=\"img\"" +
                  attr("aria-label", title) + ">";
  s += "<title>" + escape(title) + "</title>";
  s += "<text class=\"chart-title\" x=\"" + px(width / 2.0) + "\" y=\"16\" text-anchor=\"middle\">" +
       escape(title) + "</text>";
  return s;
}

std::string line(double x1, double y1, double x2, double y2, const char* stroke, double width = 1) {
  return "<line x1=\"" + px(x1) + "\" y1=\"" + px(y1) + "\" x2=\"" + px(x2) + "\" y2=\"" + px(y2) +
         "\" stroke=\"" + stroke + "\" stroke-width=\"" + num(width) + "\"/>";
}

std::string text(double x, double y, const std::string& content, const char* anchor,
                 const std::string& extra = "") {
  return "<text x=\"" + px(x) + "\" y=\"" + px(y) + "\" text-anchor=\"" + anchor + "\"" + extra + ">" +
         escape(content) + "</text>";
}

// Axes, grid and tick labels of a frame.
std::string axes_svg(const Frame& f, const Axis& x, const std::vector<Tick>& xt, const Axis& y,
                     const std::vector<Tick>& yt, const std::string& x_label, const std::string& y_label) {
  std::string s = "<g class=\"grid\">";
  for (const auto& t : xt)
    if (!t.label.empty()) s += line(x.map(t.value), f.top, x.map(t.value), f.bottom, kGrid);
  for (const auto& t : yt)
    if (!t.label.empty()) s += line(f.left, y.map(t.value), f.right, y.map(t.value), kGrid);
  s += "</g><g class=\"axis x-axis\">";
  s += line(f.left, f.bottom, f.right, f.bottom, kInk);
  for (const auto& t : xt) {
    double p = x.map(t.value);
    s += line(p, f.bottom, p, f.bottom + (t.label.empty() ? 3 : 5), kInk);
    if (!t.label.empty()) s += text(p, f.bottom + 17, t.label, "middle", " class=\"tick\"");
  }
  s += text((f.left + f.right) / 2, f.bottom + 34, x_label, "middle", " class=\"axis-label\"");
  s += "</g><g class=\"axis y-axis\">";
  s += line(f.left, f.top, f.left, f.bottom, kInk);
  for (const auto& t : yt) {
    double p = y.map(t.value);
    s += line(f.left - (t.label.empty() ? 3 : 5), p, f.left, p, kInk);
    if (!t.label.empty()) s += text(f.left - 8, p + 4, t.label, "end", " class=\"tick\"");
  }
  double mid = (f.top + f.bottom) / 2;
  s += "<text class=\"axis-label\" x=\"14\" y=\"" + px(mid) + "\" text-anchor=\"middle\" transform=\"rotate(-90 14 " +
       px(mid) + ")\">" + escape(y_label) + "</text>";
  s += "</g>";
  return s;
}

bool usable(const Point& p, bool log_x, bool log_y) {
  return std::isfinite(p.x) && std::isfinite(p.y) && (!log_x || p.x > 0) && (!log_y || p.y > 0);
}

std::string legend_svg(const std::vector<LegendItem>& items, double x0, double y0, double max_width) {
  std::string s = "<g class=\"legend\">";
  double x = x0, y = y0;
  for (const auto& it : items) {
    double w = 28 + 6.5 * static_cast<double>(it.label.size()) + 14;
    if (x > x0 && x + w > x0 + max_width) {
      x = x0;
      y += 16;
    }
    s += "<line x1=\"" + px(x) + "\" y1=\"" + px(y - 4) + "\" x2=\"" + px(x + 22) + "\" y2=\"" + px(y - 4) +
         "\" stroke-width=\"2\"" + attr("stroke", it.color) +
         (it.dash.empty() ? std::string() : attr("stroke-dasharray", it.dash)) + "/>";
    s += text(x + 27, y, it.label, "start");
    x += w;
  }
  return s + "</g>";
}

std::size_t legend_rows(const std::vector<LegendItem>& items, double max_width) {
  std::size_t rows = items.empty() ? 0 : 1;
  double x = 0;
  for (const auto& it : items) {
    double w = 28 + 6.5 * static_cast<double>(it.label.size()) + 14;
    if (x > 0 && x + w > max_width) {
      x = 0;
      ++rows;
    }
    x += w;
  }
  return rows;
}

}  // namespace

// ---- text ----------------------------------------------------------------

std::string escape(std::string_view in) {
  std::string out;
  out.reserve(in.size() + in.size() / 8);
  for (char c : in) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// ---- axes ----------------------------------------------------------------

double Axis::map(double value) const {
  double a = lo, b = hi, v = value;
  if (log) {
    a = std::log10(lo);
    b = std::log10(hi);
    v = std::log10(value);
  }
  if (b == a) return (pixel_lo + pixel_hi) / 2;
  return pixel_lo + (v - a) / (b - a) * (pixel_hi - pixel_lo);
}

std::vector<Tick> log_ticks(double lo, double hi, bool step_labels) {
  std::vector<Tick> out;
  if (!(lo > 0) || !(hi > lo) || !std::isfinite(hi)) return out;
  auto label = [&](double v) { return step_labels ? step_label(v) : value_label(v); };
  const int k0 = static_cast<int>(std::floor(std::log10(lo))) - 1;
  const int k1 = static_cast<int>(std::ceil(std::log10(hi))) + 1;
  const double eps = 1e-9;
  int decades = 0;
  for (int k = k0; k <= k1; ++k) {
    double v = std::pow(10.0, k);
    if (v >= lo * (1 - eps) && v <= hi * (1 + eps)) ++decades;
  }
  for (int k = k0; k <= k1; ++k) {
    double p = std::pow(10.0, k);
    for (int m = 1; m <= 9; ++m) {
      double v = m * p;
      if (v < lo * (1 - eps) || v > hi * (1 + eps)) continue;
      bool labelled = m == 1 || (decades < 3 && (m == 2 || m == 5));
      out.push_back({v, labelled ? label(v) : std::string()});
    }
  }
  return out;
}

std::vector<Tick> linear_ticks(double lo, double hi, int target) {
  std::vector<Tick> out;
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return out;
  const double step = nice_step(hi - lo, target);
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    double s = snap(v, step);
    if (std::fabs(s) < step * 1e-9) s = 0;
    out.push_back({s, value_label(s)});
  }
  return out;
}

std::pair<double, double> nice_log_range(double lo, double hi) {
  auto down = [](double v) {
    double p = std::pow(10.0, std::floor(std::log10(v) + 1e-12));
    for (double m : {5.0, 2.0, 1.0})
      if (m * p <= v * (1 + 1e-12)) return m * p;
    return p;
  };
  auto up = [](double v) {
    double p = std::pow(10.0, std::floor(std::log10(v) - 1e-12));
    for (double m : {1.0, 2.0, 5.0, 10.0})
      if (m * p >= v * (1 - 1e-12)) return m * p;
    return 10 * p;
  };
  double a = down(lo), b = up(hi);
  if (b <= a) b = up(a * 1.0001);
  return {a, b};
}

std::pair<double, double> nice_linear_range(double lo, double hi) {
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) {
    double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  double step = nice_step(hi - lo, 5);
  return {std::floor(lo / step + 1e-9) * step, std::ceil(hi / step - 1e-9) * step};
}

// ---- charts --------------------------------------------------------------

std::string line_chart_svg(const LineChart& c) {
  // The data's range, over the points that can be drawn.
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : c.series)
    for (const auto& p : s.points) {
      if (!usable(p, c.log_x, c.log_y)) continue;
      x0 = std::min(x0, p.x);
      x1 = std::max(x1, p.x);
      y0 = std::min(y0, p.y);
      y1 = std::max(y1, p.y);
    }
  const bool empty = !(x0 <= x1);
  std::vector<LegendItem> legend = c.legend;
  if (legend.empty())
    for (const auto& s : c.series) legend.push_back({s.label, s.color, s.dash});

  const double w = c.width, legend_width = w - 70;
  const double rows = static_cast<double>(legend_rows(legend, legend_width));
  const int height = c.height + static_cast<int>(rows * 16);
  Frame f{62, 28, w - 16, height - 50 - rows * 16};  // the legend's rows go under the x axis
  std::string s = svg_open(c.width, height, "chart line-chart", c.title);
  if (empty) {
    s += text(w / 2, (f.top + f.bottom) / 2, "no data to draw", "middle", " class=\"empty\"");
    return s + "</svg>";
  }
  if (c.fixed_y) {
    y0 = std::min(y0, c.y_lo);
    y1 = std::max(y1, c.y_hi);
  }
  Axis x{0, 1, c.log_x, f.left, f.right}, y{0, 1, c.log_y, f.bottom, f.top};
  std::tie(x.lo, x.hi) = c.log_x ? nice_log_range(x0, x1) : nice_linear_range(x0, x1);
  if (c.fixed_y && !c.log_y && y0 >= c.y_lo && y1 <= c.y_hi) {
    y.lo = c.y_lo;
    y.hi = c.y_hi;
  } else {
    std::tie(y.lo, y.hi) = c.log_y ? nice_log_range(y0, y1) : nice_linear_range(y0, y1);
  }
  auto xt = c.log_x ? log_ticks(x.lo, x.hi, c.step_x) : linear_ticks(x.lo, x.hi);
  auto yt = c.log_y ? log_ticks(y.lo, y.hi) : linear_ticks(y.lo, y.hi);
  s += axes_svg(f, x, xt, y, yt, c.x_label + (c.log_x ? " (log)" : ""), c.y_label + (c.log_y ? " (log)" : ""));

  s += "<g class=\"plot\">";
  for (const auto& series : c.series) {
    std::string d;
    bool pen_down = false;
    std::size_t drawn = 0;
    Point last{0, 0};
    for (const auto& p : series.points) {
      if (!usable(p, c.log_x, c.log_y)) {
        pen_down = false;
        continue;
      }
      d += (d.empty() ? "" : " ") + std::string(pen_down ? "L" : "M") + px(x.map(p.x)) + " " + px(y.map(p.y));
      pen_down = true;
      last = p;
      ++drawn;
    }
    if (drawn == 0) continue;
    s += "<path class=\"series\" fill=\"none\" stroke-width=\"1.8\" stroke-linejoin=\"round\"" +
         attr("stroke", series.color) + (series.dash.empty() ? std::string() : attr("stroke-dasharray", series.dash)) +
         attr("data-label", series.label) + attr("d", d) + "/>";
    if (drawn == 1)
      s += "<circle class=\"point\" r=\"3\"" + attr("cx", px(x.map(last.x))) + attr("cy", px(y.map(last.y))) +
           attr("fill", series.color) + attr("data-label", series.label) + "/>";
  }
  s += "</g>";
  s += legend_svg(legend, f.left, f.bottom + 50, legend_width);
  return s + "</svg>";
}

std::string bar_chart_svg(const BarChart& c) {
  const double w = c.width, h = c.height;
  Frame f{62, 40, w - 16, h - 46};  // room above the tallest bar for its note
  std::string s = svg_open(c.width, c.height, "chart bar-chart", c.title);
  double top = 0;
  for (const auto& b : c.bars)
    if (b.has_value && std::isfinite(b.value)) top = std::max(top, b.value);
  Axis y{0, 1, false, f.bottom, f.top};
  if (c.fixed_y) y.hi = std::max(c.y_hi, top);
  else y.hi = top > 0 ? nice_linear_range(0, top).second : 1;
  auto yt = linear_ticks(y.lo, y.hi);
  // The x axis is categorical: a slot per bar.
  Axis x{0, 1, false, f.left, f.right};
  std::vector<Tick> none;
  s += axes_svg(f, x, none, y, yt, c.x_label, c.y_label);
  const double n = static_cast<double>(std::max<std::size_t>(1, c.bars.size()));
  const double slot = (f.right - f.left) / n;
  s += "<g class=\"plot\">";
  for (std::size_t i = 0; i < c.bars.size(); ++i) {
    const Bar& b = c.bars[i];
    double cx = f.left + slot * (static_cast<double>(i) + 0.5);
    double bw = std::min(60.0, slot * 0.6);
    s += text(cx, f.bottom + 17, b.label, "middle", " class=\"tick\"");
    if (!b.has_value || !std::isfinite(b.value)) {
      s += text(cx, f.bottom - 6, b.note.empty() ? "none" : b.note, "middle", " class=\"bar-note\"");
      continue;
    }
    double yv = y.map(b.value);
    s += "<rect class=\"bar\"" + attr("x", px(cx - bw / 2)) + attr("y", px(yv)) + attr("width", px(bw)) +
         attr("height", px(std::max(0.0, f.bottom - yv))) + attr("fill", kPalette[i % kPaletteSize]) +
         attr("data-label", b.label) + attr("data-value", num(b.value, 6)) + "/>";
    std::string note = value_label(std::round(b.value * 1000) / 1000);
    if (!b.note.empty()) note += " (" + b.note + ")";
    s += text(cx, yv - 5, note, "middle", " class=\"bar-note\"");
  }
  return s + "</g></svg>";
}

// ---- the report ----------------------------------------------------------

std::string group_hash(const audit::Config& config) {
  json j = json::object();
  for (const auto& [k, v] : config)
    if (k != "run.seed") j[k] = v;
  return ledger::hash_bytes(ledger::canonical(j));
}

namespace {

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const json& at_path(const json& j, std::initializer_list<const char*> path) {
  static const json null;
  const json* p = &j;
  for (const char* k : path) {
    if (!p->is_object()) return null;
    auto it = p->find(k);
    if (it == p->end()) return null;
    p = &*it;
  }
  return *p;
}

std::string text_of(const json& j) { return j.is_null() ? std::string() : audit::value_text(j); }

}  // namespace

std::vector<Run> runs_from_ledger(const ledger::Ledger& ledger, const std::vector<audit::RunInfo>& runs) {
  std::vector<Run> out;
  for (const auto& info : runs) {
    Run r;
    r.id = info.id;
    r.time = info.time;
    r.status = info.status;
    r.config_hash = str(info.record.start.json, "config_hash");
    r.config = info.config;
    r.group = group_hash(info.config);
    if (auto it = info.config.find("run.seed"); it != info.config.end()) r.seed = audit::value_text(it->second);
    r.steps = info.steps;
    for (const auto& [step, values] : audit::load_series(ledger, info.record))
      for (const auto& [name, v] : values) r.series[name].push_back({static_cast<double>(step), v});
    const json& env = at_path(info.record.start.json, {"environment"});
    r.host_hash = text_of(at_path(env, {"host", "hash"}));
    r.torch = text_of(at_path(env, {"torch"}));
    // "OpenBLAS 0.3.21 (Cooperlake)": the vendor, the version's first word
    // (OpenBLAS's config string repeats the vendor and lists build flags) and the core.
    std::string vendor = text_of(at_path(env, {"blas", "vendor"}));
    std::istringstream version(text_of(at_path(env, {"blas", "version"})));
    std::string word, number;
    while (version >> word && number.empty())
      if (word != vendor) number = word;
    std::string core = text_of(at_path(env, {"blas", "core"}));
    r.blas = vendor + (number.empty() ? "" : " " + number) + (core.empty() ? "" : " (" + core + ")");
    r.cpu = text_of(at_path(env, {"cpu", "model"}));
    if (const json& t = at_path(env, {"threads"}); t.is_number_integer()) r.threads = t.get<int64_t>();
    // The verdict of the latest replay that tested the run as recorded (a
    // perturbed replay, with overrides, is expected to diverge).
    for (const auto& e : info.record.replays) {
      const json& ov = at_path(e.json, {"overrides"});
      if (ov.is_array() && !ov.empty()) continue;
      std::string outcome = str(e.json, "outcome"), mode = str(e.json, "mode");
      if (outcome.empty()) continue;
      r.replay = outcome + (mode == "spot-check" ? " (spot-check)" : "");
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<std::string> varying_keys(const std::vector<Run>& runs) {
  std::map<std::string, std::set<std::string>> values;
  std::set<std::string> keys;
  for (const auto& r : runs)
    for (const auto& [k, v] : r.config) keys.insert(k);
  for (const auto& r : runs)
    for (const auto& k : keys) {
      auto it = r.config.find(k);
      values[k].insert(it == r.config.end() ? std::string("(absent)") : it->second.dump());
    }
  std::vector<std::string> out;
  for (const auto& [k, vs] : values)
    if (k != "run.seed" && vs.size() > 1) out.push_back(k);
  return out;
}

namespace {

std::optional<double> final_value(const Run& r, const std::string& metric) {
  auto it = r.series.find(metric);
  if (it == r.series.end() || it->second.empty()) return std::nullopt;
  double v = it->second.back().y;
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

std::optional<double> steps_to_grok(const Run& r) {
  auto it = r.series.find("test_accuracy");
  if (it == r.series.end()) return std::nullopt;
  for (const auto& p : it->second)
    if (p.y >= kGrokThreshold) return p.x;
  return std::nullopt;
}

}  // namespace

std::vector<GroupStat> group_stats(const std::vector<Run>& runs, const std::string& key) {
  struct Acc {
    json value;
    GroupStat stat;
    double sum = 0;
  };
  std::map<std::string, Acc> groups;  // by dump of the value
  for (const auto& r : runs) {
    auto it = r.config.find(key);
    json v = it == r.config.end() ? json() : it->second;
    Acc& a = groups[v.dump()];
    a.value = v;
    a.stat.value = v.is_null() ? "(absent)" : audit::value_text(v);
    ++a.stat.runs;
    if (auto acc = final_value(r, "test_accuracy")) {
      ++a.stat.with_accuracy;
      if (*acc >= kFracThreshold) ++a.stat.grokked80;
    }
    if (auto s = steps_to_grok(r)) {
      ++a.stat.grokked;
      a.sum += *s;
    }
  }
  std::vector<Acc> sorted;
  for (auto& [k, a] : groups) sorted.push_back(std::move(a));
  std::sort(sorted.begin(), sorted.end(), [](const Acc& a, const Acc& b) {
    bool an = a.value.is_number(), bn = b.value.is_number();
    if (an != bn) return an;
    if (an) return a.value.get<double>() < b.value.get<double>();
    return a.stat.value < b.stat.value;
  });
  std::vector<GroupStat> out;
  for (auto& a : sorted) {
    if (a.stat.grokked > 0) a.stat.mean_steps_to_grok = a.sum / static_cast<double>(a.stat.grokked);
    out.push_back(a.stat);
  }
  return out;
}

namespace {

const char* const kStyle = R"(
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 24px; max-width: 1400px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 20px 0 4px; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
.meta { color: #555; margin: 2px 0; }
.charts { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
svg.chart { background: #fff; border: 1px solid #e2e2e2; border-radius: 4px; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #333; }
svg.chart text.chart-title { font-size: 13px; font-weight: 600; }
svg.chart text.axis-label { font-size: 12px; fill: #555; }
svg.chart text.empty { fill: #999; font-size: 13px; }
svg.chart.small { }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; font-size: 11px; }
#provenance-table td.mono { font-size: 11px; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.nowrap { white-space: nowrap; }
div.scroll { overflow-x: auto; max-width: 100%; }
.replay-never { color: #777; } .replay-bit-identical { color: #1a7f37; font-weight: 600; }
.replay-diverged { color: #c62828; font-weight: 600; }
details { margin: 6px 0; } summary { cursor: pointer; color: #444; }
)";

std::string short_id(const std::string& id) { return id.substr(0, 12); }

// "2026-11-25T18:44:25.380865Z" -> "2026-11-25 18:44:25Z".
std::string short_time(std::string t) {
  auto dot = t.find('.');
  if (dot != std::string::npos && !t.empty() && t.back() == 'Z') t = t.substr(0, dot) + "Z";
  if (t.size() > 10 && t[10] == 'T') t[10] = ' ';
  return t;
}

std::string status_class(const std::string& replay) {
  if (replay.rfind("bit-identical", 0) == 0) return "replay-bit-identical";
  if (replay.rfind("diverged", 0) == 0) return "replay-diverged";
  return "replay-never";
}

// The split of a metric named "<split>_<what>" and its line style.
std::string dash_of(const std::string& metric) {
  if (metric.rfind("val_", 0) == 0) return "2 3";
  if (metric.rfind("test_", 0) == 0) return "6 4";
  return "";
}

// One chart of METRICS (names) for the runs of a group: colour = seed, dash = split.
LineChart group_chart(const std::vector<const Run*>& runs, const std::vector<std::string>& metrics,
                      const std::string& title, const std::string& y_label, bool accuracy) {
  LineChart c;
  c.title = title;
  c.y_label = y_label;
  if (accuracy) {
    c.fixed_y = true;
    c.y_lo = 0;
    c.y_hi = 1;
  }
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  bool positive = true;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const std::string color = kPalette[i % kPaletteSize];
    for (const auto& m : metrics) {
      auto it = runs[i]->series.find(m);
      if (it == runs[i]->series.end()) continue;
      LineSeries s{"seed " + runs[i]->seed + " " + m, color, dash_of(m), it->second};
      for (const auto& p : s.points)
        if (std::isfinite(p.y)) {
          positive = positive && p.y > 0;
          lo = std::min(lo, p.y);
          hi = std::max(hi, p.y);
        }
      c.series.push_back(std::move(s));
    }
  }
  // Losses spanning orders of magnitude read better on a log axis.
  if (!accuracy && positive && lo > 0 && hi / lo >= 100) c.log_y = true;
  for (std::size_t i = 0; i < runs.size(); ++i)
    c.legend.push_back({"seed " + runs[i]->seed + " (" + short_id(runs[i]->id).substr(0, 8) + ")",
                        kPalette[i % kPaletteSize], ""});
  // Which line style is which metric, unless the chart has one solid metric (its title says it).
  if (metrics.size() > 1 || !dash_of(metrics.front()).empty())
    for (const auto& m : metrics) {
      bool present = false;
      for (const auto* r : runs) present = present || r->series.count(m) > 0;
      if (present) c.legend.push_back({m, "#555", dash_of(m)});
    }
  return c;
}

std::string config_table(const audit::Config& config) {
  std::string s = "<table class=\"config\"><tr><th>key</th><th>value</th></tr>";
  for (const auto& [k, v] : config)
    s += "<tr><td class=\"mono\">" + escape(k) + "</td><td class=\"mono\">" + escape(audit::value_text(v)) +
         "</td></tr>";
  return s + "</table>";
}

std::string describe_group(const Run& r, const std::vector<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) {
    auto it = r.config.find(k);
    out += (out.empty() ? "" : ", ") + k + " = " + (it == r.config.end() ? "(absent)" : audit::value_text(it->second));
  }
  if (!out.empty()) return out;
  std::string parts;
  for (const char* k : {"task.plugin", "architecture.plugin", "optimizer.plugin"}) {
    auto it = r.config.find(k);
    if (it != r.config.end()) parts += (parts.empty() ? "" : " · ") + audit::value_text(it->second);
  }
  return parts;
}

std::string grouped_section(const std::vector<Run>& runs, const std::vector<std::string>& keys) {
  bool any_accuracy = false;
  for (const auto& r : runs) any_accuracy = any_accuracy || r.series.count("test_accuracy") > 0;
  std::string s = "<section id=\"grouped\"><h2>By config key</h2>";
  if (keys.empty()) {
    s += "<p class=\"meta\">The selected runs differ in no config key but <code>run.seed</code>.</p></section>";
    return s;
  }
  if (!any_accuracy) {
    s += "<p class=\"meta\">No selected run records <code>test_accuracy</code>: nothing to group.</p></section>";
    return s;
  }
  s += "<p class=\"meta\">Grokked: final <code>test_accuracy</code> &ge; " + num(kFracThreshold) +
       ". Steps to grok: the first evaluated step with <code>test_accuracy</code> &ge; " + num(kGrokThreshold) +
       " (mean over the runs that got there).</p>";
  for (const auto& key : keys) {
    auto stats = group_stats(runs, key);
    BarChart frac, steps;
    frac.title = key + ": fraction grokked";
    frac.x_label = key;
    frac.y_label = "fraction with test acc ≥ 0.8";
    frac.fixed_y = true;
    steps.title = key + ": steps to grok";
    steps.x_label = key;
    steps.y_label = "mean steps to test acc ≥ 0.995";
    std::string table = "<table class=\"group-table\"><tr><th>" + escape(key) +
                        "</th><th>runs</th><th>final test acc &ge; 0.8</th><th>fraction</th>"
                        "<th>reached 0.995</th><th>mean steps to grok</th></tr>";
    for (const auto& g : stats) {
      Bar fb{g.value, g.with_accuracy > 0, 0, std::to_string(g.grokked80) + "/" + std::to_string(g.runs)};
      if (g.runs > 0) fb.value = static_cast<double>(g.grokked80) / static_cast<double>(g.runs);
      if (!fb.has_value) fb.note = "no accuracy";
      frac.bars.push_back(fb);
      Bar sb{g.value, g.grokked > 0, g.mean_steps_to_grok, std::to_string(g.grokked) + "/" + std::to_string(g.runs)};
      if (!sb.has_value) sb.note = "none grokked";
      steps.bars.push_back(sb);
      table += "<tr><td class=\"mono\">" + escape(g.value) + "</td><td class=\"num\">" + std::to_string(g.runs) +
               "</td><td class=\"num\">" + std::to_string(g.grokked80) + "</td><td class=\"num\">" +
               (g.runs ? num(static_cast<double>(g.grokked80) / static_cast<double>(g.runs), 3) : "") +
               "</td><td class=\"num\">" + std::to_string(g.grokked) + "</td><td class=\"num\">" +
               (g.grokked ? num(g.mean_steps_to_grok, 6) : "&ndash;") + "</td></tr>";
    }
    s += "<h3>" + escape(key) + "</h3><div class=\"charts\">" + bar_chart_svg(frac) + bar_chart_svg(steps) +
         "</div>" + table + "</table>";
  }
  return s + "</section>";
}

bool is_accuracy(const std::string& m) {
  return m == "train_accuracy" || m == "val_accuracy" || m == "test_accuracy";
}
bool is_loss(const std::string& m) { return m == "train_loss" || m == "val_loss" || m == "test_loss"; }

std::string runs_section(const std::vector<Run>& runs, const std::vector<std::string>& keys) {
  // Configs in order of their first run; seeds in ledger order.
  std::vector<std::string> order;
  std::map<std::string, std::vector<const Run*>> groups;
  for (const auto& r : runs) {
    if (!groups.count(r.group)) order.push_back(r.group);
    groups[r.group].push_back(&r);
  }
  std::string s = "<section id=\"runs\"><h2>Runs by config</h2>";
  std::size_t n = 0;
  for (const auto& g : order) {
    const auto& members = groups[g];
    ++n;
    s += "<div class=\"config-group\"" + attr("id", "config-" + g.substr(0, 12)) + "><h3>Config " +
         std::to_string(n) + ": " + escape(describe_group(*members.front(), keys)) + "</h3>";
    s += "<p class=\"meta\">" + std::to_string(members.size()) + (members.size() == 1 ? " run" : " runs") +
         " (seeds overlaid); config without seed <code>" + escape(g.substr(0, 12)) + "</code>; runs:";
    for (const auto* r : members)
      s += " <a class=\"mono\"" + attr("href", "#run-" + r->id) + ">" + escape(short_id(r->id)) + "</a>" +
           " (seed " + escape(r->seed) + ", " + escape(r->status) + ")";
    s += "</p><div class=\"charts\">";
    std::set<std::string> names;
    for (const auto* r : members)
      for (const auto& [m, pts] : r->series) names.insert(m);
    std::vector<std::string> acc, loss, other;
    for (const auto& m : names) (is_accuracy(m) ? acc : is_loss(m) ? loss : other).push_back(m);
    // train before val before test
    auto order_splits = [](std::vector<std::string>& v) {
      auto rank = [](const std::string& m) { return m.rfind("train_", 0) == 0 ? 0 : m.rfind("val_", 0) == 0 ? 1 : 2; };
      std::stable_sort(v.begin(), v.end(), [&](const std::string& a, const std::string& b) { return rank(a) < rank(b); });
    };
    order_splits(acc);
    order_splits(loss);
    if (!acc.empty()) s += line_chart_svg(group_chart(members, acc, "accuracy", "accuracy", true));
    if (!loss.empty()) s += line_chart_svg(group_chart(members, loss, "loss", "loss", false));
    for (const auto& m : other) {
      LineChart c = group_chart(members, {m}, m, m, false);
      c.width = 400;
      c.height = 240;
      s += line_chart_svg(c);
    }
    s += "</div><details><summary>resolved config</summary>" + config_table(members.front()->config) +
         "</details></div>";
  }
  return s + "</section>";
}

std::string provenance_section(const std::vector<Run>& runs) {
  std::string s =
      "<section id=\"provenance\"><h2>Provenance</h2><div class=\"scroll\"><table id=\"provenance-table\"><tr><th>run entry</th>"
      "<th>time</th><th>status</th><th>seed</th><th>steps</th><th>final test acc</th><th>config hash</th>"
      "<th>host hash</th><th>torch</th><th>BLAS</th><th>CPU</th><th>threads</th><th>replay</th></tr>";
  for (const auto& r : runs) {
    auto acc = final_value(r, "test_accuracy");
    s += "<tr class=\"run\"" + attr("id", "run-" + r.id) + attr("data-run", r.id) + "><td class=\"mono run-id\">" +
         escape(r.id) + "</td><td>" + escape(short_time(r.time)) + "</td><td>" + escape(r.status) + "</td><td class=\"num\">" +
         escape(r.seed) + "</td><td class=\"num\">" + std::to_string(r.steps) + "</td><td class=\"num\">" +
         (acc ? num(*acc, 4) : std::string("&ndash;")) + "</td><td class=\"mono\">" + escape(r.config_hash) +
         "</td><td class=\"mono\"" + attr("title", r.host_hash) + ">" + escape(r.host_hash.substr(0, 12)) +
         "</td><td>" + escape(r.torch) + "</td><td>" + escape(r.blas) + "</td><td>" + escape(r.cpu) +
         "</td><td class=\"num\">" + std::to_string(r.threads) + "</td><td" + attr("class", status_class(r.replay) + " nowrap") +
         ">" + escape(r.replay) + "</td></tr>";
  }
  return s + "</table></div></section>";
}

}  // namespace

std::string render_html(const std::vector<Run>& runs, const Options& o) {
  if (runs.empty()) throw std::invalid_argument("no runs to report");
  std::set<std::string> configs;
  for (const auto& r : runs) configs.insert(r.group);
  std::vector<std::string> keys = o.group_by.empty() ? varying_keys(runs) : o.group_by;

  std::string s = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                  "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
                  "<title>" + escape(o.title) + "</title><style>" + kStyle + "</style></head><body>\n";
  s += "<h1>" + escape(o.title) + "</h1>";
  s += "<p class=\"meta\">" + std::to_string(runs.size()) + (runs.size() == 1 ? " run" : " runs") + " in " +
       std::to_string(configs.size()) + (configs.size() == 1 ? " config" : " configs");
  if (!o.ledger.empty()) s += " from ledger <code>" + escape(o.ledger) + "</code>";
  if (!o.ledger_head.empty()) s += " at head <code>" + escape(o.ledger_head) + "</code>";
  s += ".</p>";
  if (!o.selection.empty()) {
    s += "<p class=\"meta\">Selection:";
    for (const auto& w : o.selection) s += " <code>" + escape(w) + "</code>";
    s += "</p>";
  }
  s += "<p class=\"meta\">Steps on a log axis. Colour: seed; solid: train, dashed: test, dotted: val.</p>\n";
  if (runs.size() > 1) s += grouped_section(runs, keys) + "\n";
  s += runs_section(runs, keys) + "\n";
  s += provenance_section(runs) + "\n</body></html>\n";
  return s;
}

void write_file_atomically(const std::string& path, const std::string& content) {
  namespace fs = std::filesystem;
  fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  auto fail = [&](const std::string& what) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + path + ": " + what + ": " + std::strerror(err));
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("open " + tmp);
  const char* p = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      fail("write");
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    fail("fsync");
  }
  if (::close(fd) != 0) fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
}

void write_report(const ledger::Ledger& ledger, const std::vector<audit::RunInfo>& runs, Options options,
                  const std::string& path) {
  if (runs.empty()) throw std::invalid_argument("no runs selected: nothing to report (no file written)");
  if (options.ledger.empty()) options.ledger = ledger.dir();
  if (options.ledger_head.empty()) options.ledger_head = ledger.head();
  write_file_atomically(path, render_html(runs_from_ledger(ledger, runs), options));
}

std::string write_run_report(const ledger::Ledger& ledger, const std::string& run_id) {
  // Only this run's config is read, not every run's (the ledger may hold thousands).
  std::vector<audit::RunInfo> mine{audit::run_info(ledger, load_run(ledger, run_id))};
  const std::string& full = mine.front().id;
  Options o;
  o.title = "groklab run " + short_id(full);
  const std::string path = (std::filesystem::path(ledger.dir()) / "reports" / (full + ".html")).string();
  write_report(ledger, mine, o, path);
  return path;
}

}  // namespace groklab::report

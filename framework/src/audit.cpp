// Reading runs back out of the ledger: selection, series, queries, audit.
// See groklab/audit.h.
#include "groklab/audit.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string_view>

#include <toml++/toml.h>

namespace groklab::audit {

using nlohmann::json;

namespace {

std::string str_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// A recorded metric value: a number, or the text of a non-finite one ("nan", "inf", "-inf").
std::optional<double> metric_number(const json& v) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (end != s.c_str() && *end == '\0') return d;
  }
  return std::nullopt;
}

// Parses the whole of TEXT as a number.
std::optional<double> parse_number(const std::string& text) {
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0]))) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  double d = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0') return std::nullopt;
  return d;
}

json toml_value(const toml::node& node) {
  if (auto v = node.as_integer()) return json(v->get());
  if (auto v = node.as_floating_point()) return json(v->get());
  if (auto v = node.as_boolean()) return json(v->get());
  if (auto v = node.as_string()) return json(v->get());
  if (auto a = node.as_array()) {
    json out = json::array();
    for (const auto& e : *a) out.push_back(toml_value(e));
    return out;
  }
  throw std::invalid_argument("unsupported TOML value in a config");
}

void flatten_toml(const toml::table& table, const std::string& prefix, Config& out) {
  for (const auto& [k, node] : table) {
    const std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (auto t = node.as_table()) {
      flatten_toml(*t, key, out);
    } else if (auto a = node.as_array(); a && a->is_array_of_tables()) {
      for (std::size_t i = 0; i < a->size(); ++i)
        flatten_toml(*a->get(i)->as_table(), key + "." + std::to_string(i), out);
    } else {
      out[key] = toml_value(node);
    }
  }
}

void flatten_into(const json& j, const std::string& prefix, Config& out) {
  if (j.is_object() && !j.empty()) {
    for (auto it = j.begin(); it != j.end(); ++it)
      flatten_into(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
  } else {
    out[prefix] = j;
  }
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string last_component(const std::string& key) {
  auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

// Numbers normalised to doubles, so 4 equals 4.0 inside lists too.
json normalised(const json& v) {
  if (v.is_number()) return json(v.get<double>());
  if (v.is_array()) {
    json out = json::array();
    for (const auto& e : v) out.push_back(normalised(e));
    return out;
  }
  return v;
}

bool starts_like_time(const std::string& t) {
  if (t.size() < 4) return false;
  for (std::size_t i = 0; i < 4; ++i)
    if (!std::isdigit(static_cast<unsigned char>(t[i]))) return false;
  return true;
}

bool is_loss(const std::string& name) { return name.find("loss") != std::string::npos; }

// s without leading and trailing spaces and tabs.
std::string trim(std::string s) {
  s.erase(0, s.find_first_not_of(" \t"));
  s.erase(s.find_last_not_of(" \t") + 1);
  return s;
}

}  // namespace

Config flatten_config(const std::string& canonical_toml) {
  toml::table root;
  try {
    root = toml::parse(std::string_view(canonical_toml));
  } catch (const toml::parse_error& e) {
    throw std::invalid_argument(std::string("config is not TOML: ") + std::string(e.description()));
  }
  Config out;
  flatten_toml(root, "", out);
  return out;
}

Config flatten_json(const json& value) {
  Config out;
  flatten_into(value, "", out);
  return out;
}

RunInfo run_info(const ledger::Ledger& ledger, RunRecord record) {
  RunInfo info;
  info.record = std::move(record);
  const RunRecord& rec = info.record;
  const json& start = rec.start.json;
  info.id = rec.start.id;
  info.time = str_field(start, "time");
  info.status = rec.status();
  if (auto c = start.find("components"); c != start.end() && c->is_object()) {
    info.task = str_field(*c, "task");
    info.architecture = str_field(*c, "architecture");
    info.optimizer = str_field(*c, "optimizer");
  }
  info.sweep = str_field(start, "sweep");
  if (auto o = start.find("objects"); o != start.end() && o->is_object() && o->contains("config"))
    info.config = flatten_config(ledger.objects().get(o->at("config").get<std::string>()));
  if (rec.result) {
    info.steps = rec.result->json.value("steps", int64_t{0});
    if (auto f = rec.result->json.find("final"); f != rec.result->json.end() && f->is_object())
      for (auto it = f->begin(); it != f->end(); ++it)
        if (auto v = metric_number(it.value())) info.final_metrics[it.key()] = *v;
  } else if (!rec.checkpoints.empty()) {
    info.steps = rec.checkpoints.back().json.value("step", int64_t{0});
  }
  return info;
}

std::vector<RunInfo> list_runs(const ledger::Ledger& ledger) {
  std::vector<RunInfo> runs;
  for (RunRecord& rec : load_runs(ledger)) runs.push_back(run_info(ledger, std::move(rec)));
  return runs;
}

Series load_series(const ledger::Ledger& ledger, const RunRecord& run) {
  std::string object;
  auto series_of = [](const json& entry) {
    auto o = entry.find("objects");
    if (o == entry.end() || !o->is_object() || !o->contains("series")) return std::string();
    return o->at("series").get<std::string>();
  };
  if (run.result) object = series_of(run.result->json);
  if (object.empty() && !run.checkpoints.empty()) object = series_of(run.checkpoints.back().json);
  Series out;
  if (object.empty()) return out;
  const json points = json::parse(ledger.objects().get(object));
  for (const auto& p : points) {
    auto& values = out[p.at("step").get<int64_t>()];
    for (auto it = p.at("values").begin(); it != p.at("values").end(); ++it)
      if (auto v = metric_number(it.value())) values[it.key()] = *v;
  }
  return out;
}

void Selection::add_where(const std::string& key_equals_value) {
  auto eq = key_equals_value.find('=');
  if (eq == std::string::npos || eq == 0)
    throw SelectionError("--where '" + key_equals_value + "': expected KEY=VALUE, e.g. architecture.depth=4");
  where.emplace_back(key_equals_value.substr(0, eq), key_equals_value.substr(eq + 1));
}

bool value_matches(const json& recorded, const std::string& text) {
  if (recorded.is_string()) {
    std::string t = text;
    if (t.size() >= 2 && t.front() == '"' && t.back() == '"') t = t.substr(1, t.size() - 2);
    return recorded.get<std::string>() == t;
  }
  if (recorded.is_boolean()) return text == (recorded.get<bool>() ? "true" : "false");
  if (recorded.is_number()) {
    auto d = parse_number(text);
    return d && *d == recorded.get<double>();
  }
  if (recorded.is_array()) {
    json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
    return !parsed.is_discarded() && normalised(parsed) == normalised(recorded);
  }
  return false;
}

std::vector<std::string> close_keys(const std::string& key, const std::set<std::string>& known, std::size_t max) {
  std::vector<std::pair<std::size_t, std::string>> scored;
  const std::string tail = last_component(key);
  for (const auto& k : known) {
    std::size_t d = edit_distance(key, k);
    std::size_t tail_d = edit_distance(tail, last_component(k));
    // A key whose last component is (nearly) the one asked for is close even
    // under another table ("depth" -> "architecture.depth").
    std::size_t score = std::min(d, tail_d == 0 ? std::size_t{1} : tail_d + 2);
    if (score <= std::max<std::size_t>(2, key.size() / 3)) scored.emplace_back(score, k);
  }
  std::sort(scored.begin(), scored.end());
  std::vector<std::string> out;
  for (std::size_t i = 0; i < scored.size() && i < max; ++i) out.push_back(scored[i].second);
  return out;
}

std::string value_text(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_null()) return "";
  return value.dump();
}

std::vector<RunInfo> select_runs(const std::vector<RunInfo>& runs, const Selection& s) {
  static const std::set<std::string> statuses = {"finished", "started", "failed", "interrupted"};
  if (!s.status.empty() && !statuses.count(s.status))
    throw SelectionError("unknown status '" + s.status + "': expected finished, started, failed or interrupted");
  for (const auto* t : {&s.since, &s.until})
    if (!t->empty() && !starts_like_time(*t))
      throw SelectionError("'" + *t + "' is not an ISO 8601 time (e.g. 2026-05-01 or 2026-05-01T12:00:00Z)");
  std::set<std::string> known;
  for (const auto& r : runs)
    for (const auto& [k, v] : r.config) known.insert(k);
  for (const auto& [key, value] : s.where) {
    if (known.count(key)) continue;
    std::string msg = "--where: no run's config has the key '" + key + "'";
    auto close = close_keys(key, known);
    if (!close.empty()) {
      msg += "; did you mean ";
      for (std::size_t i = 0; i < close.size(); ++i)
        msg += (i == 0 ? "" : i + 1 == close.size() ? " or " : ", ") + ("'" + close[i] + "'");
      msg += "?";
    } else if (known.empty()) {
      msg += " (the ledger has no runs with a config)";
    }
    throw SelectionError(msg);
  }
  std::vector<RunInfo> out;
  for (const auto& r : runs) {
    if (!s.task.empty() && r.task != s.task) continue;
    if (!s.architecture.empty() && r.architecture != s.architecture) continue;
    if (!s.optimizer.empty() && r.optimizer != s.optimizer) continue;
    if (!s.status.empty() && r.status != s.status) continue;
    if (!s.since.empty() && r.time.substr(0, s.since.size()) < s.since) continue;
    if (!s.until.empty() && r.time.substr(0, s.until.size()) > s.until) continue;
    bool ok = true;
    for (const auto& [key, value] : s.where) {
      auto it = r.config.find(key);
      if (it == r.config.end() || !value_matches(it->second, value)) {
        ok = false;
        break;
      }
    }
    if (ok) out.push_back(r);
  }
  return out;
}

bool Condition::holds(double v) const {
  if (op == ">=") return v >= threshold;
  if (op == ">") return v > threshold;
  if (op == "<=") return v <= threshold;
  if (op == "<") return v < threshold;
  if (op == "==") return v == threshold;
  if (op == "!=") return v != threshold;
  return false;
}

std::string Condition::text() const {
  std::ostringstream os;
  os << metric << op << json(threshold).dump();
  return os.str();
}

Condition parse_condition(const std::string& text) {
  static const char* ops[] = {">=", "<=", "==", "!=", ">", "<"};
  for (const char* op : ops) {
    auto at = text.find(op);
    if (at == std::string::npos) continue;
    Condition c;
    c.metric = trim(text.substr(0, at));
    c.op = op;
    auto v = parse_number(trim(text.substr(at + std::strlen(op))));
    if (c.metric.empty() || !v)
      throw std::invalid_argument("'" + text + "': expected METRIC OP NUMBER, e.g. test_accuracy>=0.8");
    c.threshold = *v;
    return c;
  }
  throw std::invalid_argument("'" + text + "': expected METRIC OP NUMBER with OP one of >= > <= < == !=, "
                              "e.g. test_accuracy>=0.8");
}

std::string MetricSpec::text() const {
  if (first_step) return "first_step(" + first_step->text() + ")";
  return best_of.empty() ? name : "at_best(" + name + "," + best_of + ")";
}

MetricSpec parse_metric(const std::string& text) {
  MetricSpec m;
  const std::string fn = "first_step(";
  if (text.rfind(fn, 0) == 0) {
    if (text.back() != ')')
      throw std::invalid_argument("'" + text + "': expected first_step(METRIC OP NUMBER)");
    m.first_step = parse_condition(text.substr(fn.size(), text.size() - fn.size() - 1));
    m.name = m.first_step->metric;
    return m;
  }
  const std::string best = "at_best(";
  if (text.rfind(best, 0) == 0) {
    const size_t comma = text.find(',');
    auto name_ok = [](const std::string& n) {
      return !n.empty() && n.find_first_of("()<>=!, ") == std::string::npos;
    };
    if (text.back() == ')' && comma != std::string::npos) {
      m.name = trim(text.substr(best.size(), comma - best.size()));
      m.best_of = trim(text.substr(comma + 1, text.size() - comma - 2));
    }
    if (!name_ok(m.name) || !name_ok(m.best_of))
      throw std::invalid_argument("'" + text + "': expected at_best(METRIC, KEY_METRIC), e.g. "
                                  "at_best(test_accuracy, val_accuracy)");
    return m;
  }
  if (text.empty() || text.find_first_of("()<>=!, ") != std::string::npos)
    throw std::invalid_argument("'" + text + "': expected a metric name (e.g. test_accuracy), "
                                "first_step(METRIC OP NUMBER) or at_best(METRIC, KEY_METRIC)");
  m.name = text;
  return m;
}

std::string At::text() const {
  return kind == kFinal ? "final" : kind == kBest ? "best" : std::to_string(step);
}

At parse_at(const std::string& text) {
  At at;
  if (text == "final") return at;
  if (text == "best") {
    at.kind = At::kBest;
    return at;
  }
  char* end = nullptr;
  long long s = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || s < 0)
    throw std::invalid_argument("--at '" + text + "': expected final, best or a step number");
  at.kind = At::kStep;
  at.step = s;
  return at;
}

std::optional<double> metric_value(const Series& series, const MetricSpec& spec, const At& at) {
  if (spec.first_step) {
    for (const auto& [step, values] : series) {
      auto it = values.find(spec.first_step->metric);
      if (it != values.end() && spec.first_step->holds(it->second)) return static_cast<double>(step);
    }
    return std::nullopt;
  }
  if (!spec.best_of.empty()) {
    std::optional<double> best, value;
    const bool minimise = is_loss(spec.best_of);
    for (const auto& [step, values] : series) {
      auto key = values.find(spec.best_of);
      auto it = values.find(spec.name);
      if (key == values.end() || it == values.end() || std::isnan(key->second)) continue;
      if (!best || (minimise ? key->second < *best : key->second > *best)) {
        best = key->second;
        value = it->second;
      }
    }
    return value;
  }
  switch (at.kind) {
    case At::kStep: {
      auto s = series.find(at.step);
      if (s == series.end()) return std::nullopt;
      auto it = s->second.find(spec.name);
      if (it == s->second.end()) return std::nullopt;
      return it->second;
    }
    case At::kFinal:
      for (auto s = series.rbegin(); s != series.rend(); ++s)
        if (auto it = s->second.find(spec.name); it != s->second.end()) return it->second;
      return std::nullopt;
    case At::kBest: {
      std::optional<double> best;
      const bool minimise = is_loss(spec.name);
      for (const auto& [step, values] : series) {
        auto it = values.find(spec.name);
        if (it == values.end() || std::isnan(it->second)) continue;
        if (!best || (minimise ? it->second < *best : it->second > *best)) best = it->second;
      }
      return best;
    }
  }
  return std::nullopt;
}

bool condition_holds(const Series& series, const Condition& cond, const At& at) {
  MetricSpec m;
  m.name = cond.metric;
  auto v = metric_value(series, m, at);
  return v && cond.holds(*v);
}

std::vector<GroupRow> query(const ledger::Ledger& ledger, const std::vector<RunInfo>& runs, const QuerySpec& spec) {
  std::set<std::string> known;
  for (const auto& r : runs)
    for (const auto& [k, v] : r.config) known.insert(k);
  for (const auto& key : spec.group_by) {
    if (known.count(key)) continue;
    std::string msg = "--group-by: no selected run's config has the key '" + key + "'";
    auto close = close_keys(key, known);
    if (!close.empty()) msg += "; did you mean '" + close[0] + "'?";
    throw SelectionError(msg);
  }
  struct Acc {
    std::vector<double> values;
    std::size_t runs = 0, met = 0;
    std::vector<std::string> ids;
  };
  std::map<std::vector<json>, Acc> groups;
  for (const auto& r : runs) {
    std::vector<json> key;
    for (const auto& k : spec.group_by) {
      auto it = r.config.find(k);
      key.push_back(it == r.config.end() ? json() : it->second);
    }
    Acc& acc = groups[key];
    acc.runs++;
    acc.ids.push_back(r.id);
    const Series series = load_series(ledger, r.record);
    if (auto v = metric_value(series, spec.metric, spec.at); v && !std::isnan(*v)) acc.values.push_back(*v);
    if (spec.frac && condition_holds(series, *spec.frac, spec.at)) acc.met++;
  }
  std::vector<GroupRow> out;
  const double nan = std::nan("");
  for (auto& [key, acc] : groups) {
    GroupRow row;
    row.key = key;
    row.runs = acc.runs;
    row.count = acc.values.size();
    row.run_ids = acc.ids;
    row.frac_count = acc.met;
    row.frac = acc.runs ? static_cast<double>(acc.met) / static_cast<double>(acc.runs) : 0.0;
    row.mean = row.std = row.min = row.max = nan;
    if (!acc.values.empty()) {
      double sum = 0;
      for (double v : acc.values) sum += v;
      row.mean = sum / static_cast<double>(acc.values.size());
      row.min = *std::min_element(acc.values.begin(), acc.values.end());
      row.max = *std::max_element(acc.values.begin(), acc.values.end());
      if (acc.values.size() >= 2) {
        double ss = 0;
        for (double v : acc.values) ss += (v - row.mean) * (v - row.mean);
        row.std = std::sqrt(ss / static_cast<double>(acc.values.size() - 1));
      }
    }
    out.push_back(std::move(row));
  }
  return out;
}

std::vector<Difference> diff_config(const Config& a, const Config& b) {
  std::set<std::string> keys;
  for (const auto& [k, v] : a) keys.insert(k);
  for (const auto& [k, v] : b) keys.insert(k);
  std::vector<Difference> out;
  for (const auto& k : keys) {
    auto x = a.find(k);
    auto y = b.find(k);
    json va = x == a.end() ? json() : x->second;
    json vb = y == b.end() ? json() : y->second;
    if (va != vb) out.push_back({k, va, vb});
  }
  return out;
}

std::optional<int64_t> first_difference(const Series& a, const Series& b, const std::string& metric) {
  auto value = [&](const Series& s, int64_t step) -> std::optional<double> {
    auto it = s.find(step);
    if (it == s.end()) return std::nullopt;
    auto m = it->second.find(metric);
    if (m == it->second.end()) return std::nullopt;
    return m->second;
  };
  std::set<int64_t> steps;
  for (const auto& [s, v] : a) steps.insert(s);
  for (const auto& [s, v] : b) steps.insert(s);
  for (int64_t s : steps) {
    auto x = value(a, s), y = value(b, s);
    if (x.has_value() != y.has_value()) return s;
    if (x && std::memcmp(&*x, &*y, sizeof(double)) != 0 && !(std::isnan(*x) && std::isnan(*y))) return s;
  }
  return std::nullopt;
}

std::vector<std::string> binary_differences(const json& recorded, const json& now) {
  std::vector<std::string> out;
  auto hash_at = [](const json& env, const std::vector<std::string>& path) -> std::optional<std::string> {
    const json* j = &env;
    for (const auto& p : path) {
      if (!j->is_object() || !j->contains(p)) return std::nullopt;
      j = &j->at(p);
    }
    return j->is_string() ? std::optional<std::string>(j->get<std::string>()) : std::nullopt;
  };
  auto then_host = hash_at(recorded, {"host", "hash"});
  auto now_host = hash_at(now, {"host", "hash"});
  if (then_host && now_host && *then_host != *now_host)
    out.push_back("host.hash: " + *then_host + " → " + *now_host);
  if (auto p = recorded.find("plugins"); p != recorded.end() && p->is_object()) {
    for (auto it = p->begin(); it != p->end(); ++it) {
      auto then_h = hash_at(it.value(), {"hash"});
      auto now_h = hash_at(now, {"plugins", it.key(), "hash"});
      if (!now_h) out.push_back("plugins." + it.key() + ": not installed now");
      else if (then_h && *then_h != *now_h) out.push_back("plugins." + it.key() + ".hash: " + *then_h + " → " + *now_h);
    }
  }
  return out;
}

AuditReport audit_ledger(const ledger::Ledger& ledger, const json& environment_now) {
  AuditReport report;
  report.verify = ledger.verify();
  if (!report.verify.ok) return report;
  for (const RunInfo& r : list_runs(ledger)) {
    report.runs++;
    if (r.status == "finished" && r.record.replays.empty()) report.never_replayed.push_back({r.id, r.status, ""});
    std::string diverged;
    for (const auto& rep : r.record.replays) {
      if (str_field(rep.json, "outcome") != "diverged") continue;
      if (!diverged.empty()) diverged += "\n";
      diverged += "replay " + rep.id.substr(0, 12);
      std::string d = str_field(rep.json, "divergence");
      if (auto o = rep.json.find("overrides"); o != rep.json.end() && o->is_array() && !o->empty()) {
        std::string ov;
        for (const auto& x : *o) ov += (ov.empty() ? "" : " ") + value_text(x);
        diverged += " (overrides: " + ov + ")";
      }
      if (!d.empty()) diverged += ": " + d;
    }
    if (!diverged.empty()) report.replay_diverged.push_back({r.id, r.status, diverged});
    auto env = r.record.start.json.find("environment");
    if (env != r.record.start.json.end()) {
      auto diffs = binary_differences(*env, environment_now);
      if (!diffs.empty()) {
        std::string d;
        for (const auto& x : diffs) d += (d.empty() ? "" : "; ") + x;
        report.binaries_differ.push_back({r.id, r.status, d});
      }
    }
  }
  return report;
}

}  // namespace groklab::audit

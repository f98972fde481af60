#include "ledger_query.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include "groklab/runs.h"

namespace groklab::cli {

using nlohmann::json;

namespace {

std::string str_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string short_id(const std::string& id) { return id.substr(0, 12); }

std::string components(const audit::RunInfo& r) { return r.task + "/" + r.architecture + "/" + r.optimizer; }

bool numeric_text(const std::string& s) {
  if (s.empty()) return false;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return *end == '\0';
}

std::string json_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return json(v).dump();
}

json json_value(double v) { return std::isfinite(v) ? json(v) : json(); }

// TEXT with every line after the first indented by PREFIX.
std::string indented(const std::string& text, const std::string& prefix) {
  std::string out;
  for (char c : text) {
    out += c;
    if (c == '\n') out += prefix;
  }
  return out;
}

// A config value for `show`: an empty string as "".
std::string shown_value(const json& v) {
  return v.is_string() && v.get<std::string>().empty() ? std::string("\"\"") : audit::value_text(v);
}

}  // namespace

bool SelectionArgs::any() const {
  return !where.empty() || !task.empty() || !architecture.empty() || !optimizer.empty() || !status.empty() ||
         !since.empty() || !until.empty();
}

audit::Selection SelectionArgs::selection() const {
  audit::Selection s;
  for (const auto& w : where) s.add_where(w);
  s.task = task;
  s.architecture = architecture;
  s.optimizer = optimizer;
  s.status = status;
  s.since = since;
  s.until = until;
  return s;
}

std::string SelectionArgs::describe() const {
  std::string d;
  auto add = [&](const std::string& flag, const std::string& v) {
    if (!v.empty()) d += (d.empty() ? "" : " ") + flag + " " + v;
  };
  for (const auto& w : where) add("--where", w);
  add("--task", task);
  add("--architecture", architecture);
  add("--optimizer", optimizer);
  add("--status", status);
  add("--since", since);
  add("--until", until);
  return d;
}

void add_selection_options(CLI::App* cmd, SelectionArgs& args) {
  cmd->add_option("--where", args.where,
                  "KEY=VALUE on any resolved-config key path (repeatable), e.g. architecture.depth=4; "
                  "numbers compare by value (1e-3 matches 0.001)")
      ->allow_extra_args(false);
  cmd->add_option("--task", args.task, "Only runs of this task plugin");
  cmd->add_option("--architecture", args.architecture, "Only runs of this architecture plugin");
  cmd->add_option("--optimizer", args.optimizer, "Only runs of this optimizer plugin");
  cmd->add_option("--status", args.status, "Only runs with this status")
      ->check(CLI::IsMember({"finished", "started", "failed", "interrupted"}));
  cmd->add_option("--since", args.since, "Only runs started at or after this ISO 8601 time (e.g. 2026-05-01)");
  cmd->add_option("--until", args.until, "Only runs started at or before this ISO 8601 time (a date: that whole day)");
}

std::vector<audit::RunInfo> selected_runs(const ledger::Ledger& ledger, const SelectionArgs& args) {
  const auto all = audit::list_runs(ledger);
  auto runs = audit::select_runs(all, args.selection());
  if (runs.empty()) {
    if (all.empty()) throw EmptySelection("ledger " + ledger.dir() + " has no runs");
    throw EmptySelection("no run matches " + args.describe() + " (the ledger has " + std::to_string(all.size()) +
                         (all.size() == 1 ? " run)" : " runs)"));
  }
  return runs;
}

const audit::RunInfo* run_of(const std::vector<audit::RunInfo>& runs, const std::string& id) {
  for (const auto& r : runs) {
    const auto& rec = r.record;
    if (rec.start.id == id || (rec.result && rec.result->id == id)) return &r;
    for (const auto* list : {&rec.checkpoints, &rec.resumes, &rec.replays})
      for (const auto& e : *list)
        if (e.id == id) return &r;
  }
  return nullptr;
}

std::string number_text(double v, bool exact) {
  if (exact) return json_number(v);
  if (std::isnan(v)) return "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string run_line(const audit::RunInfo& r) {
  std::string line = short_id(r.id) + "  " + (r.time.empty() ? "-" : r.time) + "  " + r.status + "  " +
                     components(r) + "  steps=" + std::to_string(r.steps);
  // Accuracies and losses first, the rest after.
  std::vector<std::pair<std::string, double>> shown;
  for (const auto& [k, v] : r.final_metrics)
    if (k.find("accuracy") != std::string::npos || k.find("loss") != std::string::npos) shown.emplace_back(k, v);
  for (const auto& [k, v] : r.final_metrics)
    if (k.find("accuracy") == std::string::npos && k.find("loss") == std::string::npos) shown.emplace_back(k, v);
  for (std::size_t i = 0; i < shown.size() && i < 6; ++i)
    line += "  " + shown[i].first + "=" + number_text(shown[i].second, false);
  return line;
}

std::string show_run(const ledger::Ledger& ledger, const audit::RunInfo& r, const std::vector<audit::RunInfo>& all) {
  std::ostringstream os;
  const json& start = r.record.start.json;
  os << "run " << r.id << "\n";
  os << "  time        " << r.time << "\n";
  os << "  status      " << r.status << "\n";
  os << "  components  task " << r.task << ", architecture " << r.architecture << ", optimizer " << r.optimizer
     << "\n";
  os << "  config_hash " << str_field(start, "config_hash") << "\n";
  if (auto o = start.find("objects"); o != start.end() && o->contains("config"))
    os << "  config object " << ledger.dir() << "/objects/" << o->at("config").get<std::string>().substr(0, 2) << "/"
       << o->at("config").get<std::string>().substr(2) << "\n";
  if (!str_field(start, "manifest").empty()) os << "  manifest    " << str_field(start, "manifest") << "\n";
  if (auto ov = start.find("overrides"); ov != start.end() && ov->is_array() && !ov->empty()) {
    os << "  overrides  ";
    for (const auto& x : *ov) os << " " << audit::value_text(x);
    os << "\n";
  }
  if (!r.sweep.empty()) {
    os << "  sweep       " << r.sweep << "\n";
    for (const auto& other : all)
      if (other.sweep == r.sweep && other.id != r.id) os << "    sibling   " << run_line(other) << "\n";
  }

  os << "\nconfig:\n";
  for (const auto& [k, v] : r.config) os << "  " << k << " = " << shown_value(v) << "\n";

  os << "\nseeds:\n";
  if (auto s = start.find("seeds"); s != start.end())
    for (const auto& [k, v] : audit::flatten_json(*s)) os << "  " << k << " = " << audit::value_text(v) << "\n";

  os << "\nenvironment:\n";
  if (auto e = start.find("environment"); e != start.end())
    for (const auto& [k, v] : audit::flatten_json(*e)) os << "  " << k << " = " << audit::value_text(v) << "\n";

  os << "\nplugins:\n";
  if (auto p = start.find("plugins"); p != start.end() && p->is_array())
    for (const auto& pl : *p)
      os << "  " << str_field(pl, "name") << " " << str_field(pl, "version") << "  hash " << str_field(pl, "hash")
         << "  " << str_field(pl, "path") << "\n";

  os << "\nresults:\n";
  if (r.record.result) {
    const json& res = r.record.result->json;
    os << "  result entry " << r.record.result->id << " (" << str_field(res, "time") << ")\n";
    os << "  status " << str_field(res, "status") << ", " << r.steps << " steps";
    if (auto w = res.find("wall_seconds"); w != res.end() && w->is_number())
      os << ", " << number_text(w->get<double>(), false) << " s";
    os << "\n";
    if (!str_field(res, "error").empty()) os << "  error: " << str_field(res, "error") << "\n";
    if (!str_field(res, "params_hash").empty()) os << "  params_hash " << str_field(res, "params_hash") << "\n";
    for (const auto& [k, v] : r.final_metrics) os << "  final " << k << " = " << number_text(v, true) << "\n";
  } else {
    os << "  no result yet (running, or killed: `groklab run --resume " << short_id(r.id) << "`)\n";
  }
  os << "  checkpoints: " << r.record.checkpoints.size();
  if (!r.record.checkpoints.empty())
    os << " (last at step " << r.record.checkpoints.back().json.value("step", int64_t{0}) << ")";
  os << "\n";
  for (const auto& e : r.record.resumes)
    os << "  resumed " << str_field(e.json, "time") << " from step " << e.json.value("from_step", int64_t{0})
       << " (entry " << short_id(e.id) << ")\n";

  os << "\nreplays:\n";
  if (r.record.replays.empty()) os << "  never replayed\n";
  for (const auto& e : r.record.replays) {
    const json& j = e.json;
    os << "  " << short_id(e.id) << "  " << str_field(j, "time") << "  " << str_field(j, "mode") << "  "
       << str_field(j, "outcome");
    if (auto ov = j.find("overrides"); ov != j.end() && ov->is_array() && !ov->empty()) {
      os << "  overrides:";
      for (const auto& x : *ov) os << " " << audit::value_text(x);
    }
    os << "\n";
    if (!str_field(j, "divergence").empty()) os << "    " << indented(str_field(j, "divergence"), "    ") << "\n";
    if (auto d = j.find("environment_diff"); d != j.end() && d->is_array())
      for (const auto& x : *d) os << "    environment: " << audit::value_text(x) << "\n";
  }

  std::vector<const audit::RunInfo*> children;
  for (const auto& other : all)
    if (other.sweep == r.id) children.push_back(&other);
  if (!children.empty()) {
    os << "\nsweep children (" << children.size() << "):\n";
    for (const auto* c : children) os << "  " << run_line(*c) << "\n";
  }
  return os.str();
}

std::string diff_runs(const ledger::Ledger& ledger, const audit::RunInfo& a, const audit::RunInfo& b) {
  std::ostringstream os;
  os << "a: " << run_line(a) << "\n";
  os << "b: " << run_line(b) << "\n";
  auto text = [](const json& v) { return v.is_null() ? std::string("(absent)") : audit::value_text(v); };

  auto cfg = audit::diff_config(a.config, b.config);
  os << "\nconfig: " << (cfg.empty() ? "identical" : std::to_string(cfg.size()) + " difference" +
                                                         (cfg.size() == 1 ? "" : "s")) << "\n";
  for (const auto& d : cfg) os << "  " << d.key << ": " << text(d.a) << " → " << text(d.b) << "\n";

  const json& sa = a.record.start.json;
  const json& sb = b.record.start.json;
  auto env = environment_diff(sa.value("environment", json::object()), sb.value("environment", json::object()));
  os << "\nenvironment: " << (env.empty() ? "identical" : std::to_string(env.size()) + " difference" +
                                                              (env.size() == 1 ? "" : "s")) << "\n";
  for (const auto& d : env) os << "  " << d << "\n";
  auto seeds = audit::diff_config(audit::flatten_json(sa.value("seeds", json::object())),
                                  audit::flatten_json(sb.value("seeds", json::object())));
  if (!seeds.empty()) {
    os << "\nseeds:\n";
    for (const auto& d : seeds) os << "  " << d.key << ": " << text(d.a) << " → " << text(d.b) << "\n";
  }

  os << "\nresults:\n";
  if (a.status != b.status) os << "  status: " << a.status << " → " << b.status << "\n";
  if (a.steps != b.steps) os << "  steps: " << a.steps << " → " << b.steps << "\n";
  std::set<std::string> metrics;
  for (const auto& [k, v] : a.final_metrics) metrics.insert(k);
  for (const auto& [k, v] : b.final_metrics) metrics.insert(k);
  const audit::Series xa = audit::load_series(ledger, a.record);
  const audit::Series xb = audit::load_series(ledger, b.record);
  for (const auto& [s, values] : xa)
    for (const auto& [k, v] : values) metrics.insert(k);
  for (const auto& [s, values] : xb)
    for (const auto& [k, v] : values) metrics.insert(k);
  for (const auto& m : metrics) {
    auto fa = a.final_metrics.find(m);
    auto fb = b.final_metrics.find(m);
    std::string va = fa == a.final_metrics.end() ? "(absent)" : number_text(fa->second, true);
    std::string vb = fb == b.final_metrics.end() ? "(absent)" : number_text(fb->second, true);
    os << "  final " << m << ": " << (va == vb ? va + " (same)" : va + " → " + vb) << "\n";
    auto step = audit::first_difference(xa, xb, m);
    os << "    series " << m << ": "
       << (step ? "first differs at step " + std::to_string(*step) : std::string("identical")) << "\n";
  }
  return os.str();
}

std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(header.size(), 0);
  std::vector<bool> numeric(header.size(), true);
  for (std::size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& row : rows)
    for (std::size_t c = 0; c < row.size() && c < width.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
      if (!numeric_text(row[c]) && row[c] != "nan" && row[c] != "-") numeric[c] = false;
    }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (std::size_t c = 0; c < cells.size() && c < width.size(); ++c) {
      std::string pad(width[c] - cells[c].size(), ' ');
      if (c) out += "  ";
      out += numeric[c] ? pad + cells[c] : cells[c] + (c + 1 == cells.size() ? "" : pad);
    }
    return out + "\n";
  };
  std::string out = line(header);
  for (const auto& row : rows) out += line(row);
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string format_query(const audit::QuerySpec& spec, const std::vector<audit::GroupRow>& rows,
                         const std::vector<std::string>& aggs, const std::string& format) {
  const std::string frac_name = spec.frac ? "frac(" + spec.frac->text() + ")" : "";
  std::vector<std::string> header = spec.group_by;
  for (const auto& a : aggs) header.push_back(a);
  if (spec.frac) header.push_back(frac_name);

  auto agg_value = [](const audit::GroupRow& r, const std::string& a) -> double {
    if (a == "runs") return static_cast<double>(r.runs);
    if (a == "count") return static_cast<double>(r.count);
    if (a == "mean") return r.mean;
    if (a == "std") return r.std;
    if (a == "min") return r.min;
    return r.max;
  };

  if (format == "json") {
    json out = {{"metric", spec.metric.text()}, {"at", spec.at.text()}, {"group_by", spec.group_by}};
    if (spec.frac) out["frac"] = spec.frac->text();
    json arr = json::array();
    for (const auto& r : rows) {
      json row = json::object();
      for (std::size_t i = 0; i < spec.group_by.size(); ++i) row[spec.group_by[i]] = r.key[i];
      for (const auto& a : aggs)
        row[a] = (a == "runs" || a == "count") ? json(a == "runs" ? r.runs : r.count) : json_value(agg_value(r, a));
      if (spec.frac) {
        row["frac"] = r.frac;
        row["frac_count"] = r.frac_count;
      }
      row["run_ids"] = r.run_ids;
      arr.push_back(row);
    }
    out["rows"] = arr;
    return out.dump(2) + "\n";
  }
  const bool csv = format == "csv";
  std::vector<std::vector<std::string>> cells;
  for (const auto& r : rows) {
    std::vector<std::string> row;
    for (const auto& k : r.key) row.push_back(k.is_null() ? (csv ? "" : "-") : audit::value_text(k));
    for (const auto& a : aggs)
      row.push_back((a == "runs" || a == "count") ? std::to_string(a == "runs" ? r.runs : r.count)
                                                   : number_text(agg_value(r, a), csv));
    if (spec.frac) row.push_back(number_text(r.frac, csv));
    cells.push_back(row);
  }
  if (!csv) return format_table(header, cells);
  std::string out;
  auto line = [&](const std::vector<std::string>& v) {
    for (std::size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + csv_field(v[i]);
    out += "\n";
  };
  line(header);
  for (const auto& row : cells) line(row);
  return out;
}

std::size_t write_export(const ledger::Ledger& ledger, const std::vector<audit::RunInfo>& runs,
                         const std::string& format, std::FILE* out) {
  std::set<std::string> keys;
  for (const auto& r : runs)
    for (const auto& [k, v] : r.config) keys.insert(k);
  const bool csv = format == "csv";
  if (csv) {
    std::string header = "entry";
    for (const auto& k : keys) header += "," + csv_field(k);
    header += ",step,metric,value\n";
    std::fputs(header.c_str(), out);
  }
  std::size_t n = 0;
  for (const auto& r : runs) {
    const audit::Series series = audit::load_series(ledger, r.record);
    std::string prefix;
    json base = json::object();
    if (csv) {
      prefix = r.id;
      for (const auto& k : keys) {
        auto it = r.config.find(k);
        prefix += "," + (it == r.config.end() ? std::string() : csv_field(audit::value_text(it->second)));
      }
    } else {
      base["entry"] = r.id;
      for (const auto& k : keys) {
        auto it = r.config.find(k);
        base[k] = it == r.config.end() ? json() : it->second;
      }
    }
    for (const auto& [step, values] : series) {
      for (const auto& [metric, value] : values) {
        if (csv) {
          std::string line = prefix + "," + std::to_string(step) + "," + csv_field(metric) + "," +
                             json_number(value) + "\n";
          std::fputs(line.c_str(), out);
        } else {
          json row = base;
          row["step"] = step;
          row["metric"] = metric;
          row["value"] = std::isfinite(value) ? json(value) : json(json_number(value));
          std::fputs((row.dump() + "\n").c_str(), out);
        }
        ++n;
      }
    }
  }
  return n;
}

std::string format_audit(const audit::AuditReport& report, const std::vector<audit::RunInfo>& runs) {
  std::ostringstream os;
  os << "chain and objects: " << report.verify.summary() << "\n";
  if (!report.verify.ok) return os.str();
  os << "runs: " << report.runs << "\n";
  auto section = [&](const char* title, const std::vector<audit::AuditReport::Run>& list) {
    os << "\n" << title << ": " << (list.empty() ? "none" : std::to_string(list.size())) << "\n";
    for (const auto& x : list) {
      const audit::RunInfo* r = run_of(runs, x.id);
      os << "  " << (r ? run_line(*r) : short_id(x.id) + "  " + x.status) << "\n";
      if (!x.detail.empty()) os << "    " << indented(x.detail, "      ") << "\n";
    }
  };
  section("never replayed", report.never_replayed);
  section("replay diverged", report.replay_diverged);
  section("binaries differ from the installed ones (a replay would not be bit-exact)", report.binaries_differ);
  return os.str();
}

}  // namespace groklab::cli

#include "groklab/sweep.h"

#include <cmath>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "groklab/audit.h"

namespace groklab::sweep {
namespace {

using json = nlohmann::json;

std::string object_name(int64_t index) { return "child." + std::to_string(index); }

// A canonical Value as JSON (integers, floats, booleans and strings keep their type).
json value_json(const Value& v) {
  if (v.is_bool()) return v.as_bool();
  if (v.is_int()) return v.as_int();
  if (v.is_float() && std::isfinite(v.as_float())) return v.as_float();
  if (v.is_string()) return v.as_string();
  return v.canonical();
}

// The runs started for a sweep, by child index, in ledger order.
std::map<int64_t, std::vector<audit::RunInfo>> runs_by_child(const std::vector<audit::RunInfo>& runs,
                                                             const std::string& sweep_id) {
  std::map<int64_t, std::vector<audit::RunInfo>> out;
  for (const auto& r : runs) {
    const json& start = r.record.start.json;
    if (r.sweep != sweep_id) continue;
    auto c = start.find("sweep_child");
    if (c == start.end() || !c->is_number_integer()) continue;
    out[c->get<int64_t>()].push_back(r);
  }
  return out;
}

ChildState state_of(const Child& child, const audit::RunInfo& r, int64_t steps) {
  ChildState s;
  s.index = child.index;
  s.status = r.status;
  s.run_id = r.id;
  s.step = r.steps;
  s.steps = steps;
  s.final_metrics = r.final_metrics;
  return s;
}

int64_t configured_steps(const audit::Config& config) {
  auto it = config.find("run.steps");
  return it != config.end() && it->second.is_number_integer() ? it->second.get<int64_t>() : 0;
}

RunOutcome outcome_of(const audit::RunInfo& r) {
  RunOutcome o;
  o.run_id = r.id;
  o.result_id = r.record.result ? r.record.result->id : "";
  o.status = r.status;
  o.steps = r.steps;
  if (r.record.result) o.params_hash = r.record.result->json.value("params_hash", std::string());
  o.final_metrics = r.final_metrics;
  return o;
}

}  // namespace

std::string Child::varied_text() const {
  std::string s;
  for (auto it = varied.begin(); it != varied.end(); ++it) {
    if (!s.empty()) s += ' ';
    s += it.key() + "=" + (it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
  }
  return s.empty() ? "-" : s;
}

Frozen freeze(ledger::Ledger& ledger, const std::vector<SweepChild>& children,
              const Provenance& provenance, const std::string& launcher) {
  if (children.empty()) throw std::invalid_argument("a sweep needs at least one child");
  json list = json::array();
  json objects = json::object();
  for (std::size_t i = 0; i < children.size(); ++i) {
    const auto& c = children[i];
    json varied = json::object();
    for (const auto& [key, value] : c.varied) varied[key] = value_json(value);
    const std::string object = ledger.objects().put(c.config.canonical());
    objects[object_name(static_cast<int64_t>(i))] = object;
    list.push_back({{"index", i}, {"config_hash", c.config.hash()}, {"varied", varied}});
  }
  json entry = {{"kind", "sweep"},
                {"time", ledger::utc_timestamp()},
                {"manifest", provenance.manifest},
                {"overrides", provenance.overrides},
                {"launcher", launcher},
                {"children", list},
                {"objects", objects}};
  return load(ledger, ledger.append(entry));
}

Frozen load(const ledger::Ledger& ledger, const std::string& id) {
  const ledger::Entry e = ledger.get(id);
  const json& j = e.json;
  if (j.value("kind", std::string()) != "sweep")
    throw std::runtime_error("entry " + e.id.substr(0, 12) + " is a \"" + j.value("kind", std::string()) +
                             "\" entry, not a sweep");
  Frozen f;
  f.id = e.id;
  f.manifest = j.value("manifest", std::string());
  f.launcher = j.value("launcher", std::string());
  const json& objects = j.at("objects");
  for (const json& c : j.at("children")) {
    Child child;
    child.index = c.at("index").get<int64_t>();
    child.config_hash = c.at("config_hash").get<std::string>();
    child.config_object = objects.at(object_name(child.index)).get<std::string>();
    child.varied = c.value("varied", json::object());
    f.children.push_back(std::move(child));
  }
  return f;
}

std::map<std::string, std::string> finished_configs(const ledger::Ledger& ledger) {
  std::map<std::string, std::string> out;
  for (const RunRecord& rec : load_runs(ledger))
    if (rec.status() == "finished")
      out.emplace(rec.start.json.value("config_hash", std::string()), rec.start.id);
  return out;
}

std::vector<ChildState> status(const ledger::Ledger& ledger, const Frozen& sweep) {
  const std::vector<audit::RunInfo> runs = audit::list_runs(ledger);
  const auto mine = runs_by_child(runs, sweep.id);
  std::vector<ChildState> out;
  for (const Child& child : sweep.children) {
    ChildState s;
    s.index = child.index;
    if (auto it = mine.find(child.index); it != mine.end()) {
      const audit::RunInfo& last = it->second.back();
      s = state_of(child, last, configured_steps(last.config));
    } else {
      // Skipped at launch: a finished run of the same config from elsewhere.
      for (const auto& r : runs)
        if (r.status == "finished" && r.record.start.json.value("config_hash", std::string()) == child.config_hash) {
          s = state_of(child, r, configured_steps(r.config));
          s.status = "done before";
          break;
        }
    }
    out.push_back(std::move(s));
  }
  return out;
}

RunOutcome run_child(ledger::Ledger& ledger, const PluginHost& host, const Composer& composer,
                     const std::string& sweep_id, int64_t index, TrainObserver* progress) {
  const Frozen sweep = load(ledger, sweep_id);
  const Child* child = nullptr;
  for (const auto& c : sweep.children)
    if (c.index == index) child = &c;
  if (child == nullptr)
    throw std::runtime_error("sweep " + sweep.id.substr(0, 12) + " has no child " + std::to_string(index) +
                             " (it has " + std::to_string(sweep.children.size()) + ")");

  const auto mine = runs_by_child(audit::list_runs(ledger), sweep.id);
  if (auto it = mine.find(index); it != mine.end()) {
    const audit::RunInfo& last = it->second.back();
    if (last.status == "finished") return outcome_of(last);
    if (last.status == "started" || last.status == "interrupted")
      return resume_recorded(last.id, host, composer, ledger, progress);
    // "failed": a fresh run below.
  }

  const std::string text = ledger.objects().get(child->config_object);
  ResolvedConfig config = composer.compose_string(
      text, "<sweep " + sweep.id.substr(0, 12) + " child " + std::to_string(index) + ">");
  if (config.hash() != child->config_hash)
    throw std::runtime_error("sweep " + sweep.id.substr(0, 12) + " child " + std::to_string(index) +
                             ": its frozen config now resolves to " + config.hash() + ", not the recorded " +
                             child->config_hash + " (a plugin's schema changed since the sweep was frozen)");
  Provenance prov;
  prov.manifest = sweep.manifest;
  prov.sweep = sweep.id;
  prov.sweep_child = index;
  return run_recorded(config, host, ledger, prov, progress);
}

}  // namespace groklab::sweep

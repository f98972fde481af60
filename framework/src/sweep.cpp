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

int64_t configured_steps(const audit::Config& config) {
  auto it = config.find("run.steps");
  return it != config.end() && it->second.is_number_integer() ? it->second.get<int64_t>() : 0;
}

// The last run started for each child of a sweep, by child index. Reads the
// entries only: a run's config object is read just for the runs reported.
std::map<int64_t, RunRecord> last_run_by_child(const std::vector<RunRecord>& runs, const std::string& sweep_id) {
  std::map<int64_t, RunRecord> out;
  for (const auto& r : runs) {
    const json& start = r.start.json;
    if (start.value("sweep", std::string()) != sweep_id) continue;
    auto c = start.find("sweep_child");
    if (c == start.end() || !c->is_number_integer()) continue;
    out[c->get<int64_t>()] = r;  // ledger order: the last one stays
  }
  return out;
}

ChildState state_of(const ledger::Ledger& ledger, const Child& child, const RunRecord& rec) {
  const audit::RunInfo r = audit::run_info(ledger, rec);
  ChildState s;
  s.index = child.index;
  s.status = r.status;
  s.run_id = r.id;
  s.step = r.steps;
  s.steps = configured_steps(r.config);
  s.final_metrics = r.final_metrics;
  return s;
}

RunOutcome outcome_of(const ledger::Ledger& ledger, const RunRecord& rec) {
  const audit::RunInfo r = audit::run_info(ledger, rec);
  RunOutcome o;
  o.run_id = r.id;
  o.status = r.status;
  o.steps = r.steps;
  o.final_metrics = r.final_metrics;
  if (rec.result) {
    o.result_id = rec.result->id;
    o.params_hash = rec.result->json.value("params_hash", std::string());
  }
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
  for (const auto& c : children)
    if (c.config.run.ensemble > 1)
      throw std::invalid_argument("run.ensemble = " + std::to_string(c.config.run.ensemble) +
                                  ": a sweep runs single runs; sweep run.seed instead (its children run in "
                                  "parallel), or train the ensemble with groklab run");
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
  const std::vector<RunRecord> runs = load_runs(ledger);
  const auto mine = last_run_by_child(runs, sweep.id);
  std::map<std::string, const RunRecord*> finished;  // config hash -> its first finished run
  for (const auto& r : runs)
    if (r.status() == "finished") finished.emplace(r.start.json.value("config_hash", std::string()), &r);
  std::vector<ChildState> out;
  for (const Child& child : sweep.children) {
    ChildState s;
    s.index = child.index;
    if (auto it = mine.find(child.index); it != mine.end()) {
      s = state_of(ledger, child, it->second);
    } else if (auto f = finished.find(child.config_hash); f != finished.end()) {
      // Skipped at launch: a finished run of the same config from elsewhere.
      s = state_of(ledger, child, *f->second);
      s.status = "done before";
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

  const auto mine = last_run_by_child(load_runs(ledger), sweep.id);
  if (auto it = mine.find(index); it != mine.end()) {
    const RunRecord& last = it->second;
    const std::string st = last.status();
    if (st == "finished") return outcome_of(ledger, last);
    if (st == "started" || st == "interrupted") return resume_recorded(last.start.id, host, composer, ledger, progress);
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

#include "groklab/runs.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>

#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>

#include "groklab/environment.h"
#include "groklab/plugin.h"

namespace groklab {

using nlohmann::json;

namespace {

std::string self_hash() {
  static const std::string h = [] {
    try {
      return ledger::hash_file("/proc/self/exe");
    } catch (const std::exception&) {
      return std::string("unknown");
    }
  }();
  return h;
}

std::string self_path() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// CPU model name and the ISA flags that change which kernels run.
json cpu_info() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model, flags;
  while (std::getline(in, line) && (model.empty() || flags.empty())) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && model.empty()) model = value;
    if (key == "flags" && flags.empty()) flags = value;
  }
  static const std::set<std::string> relevant = {
      "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd", "avx512bw",
      "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"};
  std::istringstream is(flags);
  std::string f, isa;
  while (is >> f)
    if (relevant.count(f)) isa += (isa.empty() ? "" : " ") + f;
  return {{"model", model}, {"isa", isa}, {"cores", static_cast<int64_t>(::sysconf(_SC_NPROCESSORS_ONLN))}};
}

std::string os_info() {
  struct utsname u;
  if (::uname(&u) != 0) return "unknown";
  return std::string(u.sysname) + " " + u.release + " " + u.machine;
}

void flatten(const json& j, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it)
      flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
  } else {
    out[prefix] = j.is_string() ? j.get<std::string>() : j.dump();
  }
}

json seeds_json(const Seeds& s, const std::string& policy) {
  return {{"root", s.root},       {"init", s.init},     {"split", s.split}, {"order", s.order},
          {"dropout", s.dropout}, {"metric", s.metric}, {"policy", policy}};
}

json metrics_json(const std::map<std::string, double>& m) {
  json j = json::object();
  for (const auto& [k, v] : m) j[k] = std::isfinite(v) ? json(v) : json(std::to_string(v));
  return j;
}

// Records a run's evaluations and checkpoints in the ledger as they happen.
class Recorder final : public TrainObserver {
 public:
  Recorder(ledger::Ledger& ledger, std::string run_id, TrainObserver* progress)
      : ledger_(ledger), run_id_(std::move(run_id)), progress_(progress) {}

  void on_step(int64_t step, double loss) override {
    last_step_ = step;
    if (progress_) progress_->on_step(step, loss);
  }
  void on_eval(int64_t step, const std::map<std::string, double>& values) override {
    series_.push_back({{"step", step}, {"values", metrics_json(values)}});
    last_metrics_ = values;
    if (progress_) progress_->on_eval(step, values);
  }
  void on_checkpoint(const Checkpoint& c) override {
    std::string ckpt = ledger_.objects().put(c.bytes);
    std::string series = ledger_.objects().put(series_.dump());
    ledger_.append({{"kind", "checkpoint"},
                    {"run", run_id_},
                    {"time", ledger::utc_timestamp()},
                    {"step", c.step},
                    {"params_hash", c.params_hash},
                    {"objects", {{"checkpoint", ckpt}, {"series", series}}}});
    checkpoints_.push_back({{"step", c.step}, {"params_hash", c.params_hash}, {"object", ckpt}});
    last_params_hash_ = c.params_hash;
    if (progress_) progress_->on_checkpoint(c);
  }

  json series_ = json::array();
  json checkpoints_ = json::array();
  std::map<std::string, double> last_metrics_;
  std::string last_params_hash_;
  int64_t last_step_ = 0;  // the last step completed (what a stopped run trained)

 private:
  ledger::Ledger& ledger_;
  std::string run_id_;
  TrainObserver* progress_;
};

std::string json_str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

ResolvedConfig recorded_config(const RunRecord& rec, const ledger::Ledger& ledger,
                               const Composer& composer, const std::vector<std::string>& overrides) {
  const json& objs = rec.start.json.at("objects");
  std::string text = ledger.objects().get(objs.at("config").get<std::string>());
  return composer.compose_string(text, "<ledger run " + rec.start.id.substr(0, 12) + ">", overrides);
}

json result_entry(const std::string& run_id, const std::string& status, const Recorder& r,
                  ledger::Ledger& ledger, double seconds, int64_t steps) {
  json e = {{"kind", "result"},
            {"run", run_id},
            {"time", ledger::utc_timestamp()},
            {"status", status},
            {"steps", steps},
            {"wall_seconds", seconds},
            {"final", metrics_json(r.last_metrics_)},
            {"params_hash", r.last_params_hash_},
            {"checkpoints", r.checkpoints_}};
  e["objects"] = {{"series", ledger.objects().put(r.series_.dump())}};
  if (!r.checkpoints_.empty()) e["objects"]["checkpoint"] = r.checkpoints_.back().at("object");
  return e;
}

// Run rec's checkpoint entry at step; throws naming the run when it has none.
const json& checkpoint_at(const RunRecord& rec, int64_t step) {
  for (const auto& c : rec.checkpoints)
    if (c.json.at("step").get<int64_t>() == step) return c.json;
  throw std::runtime_error("run " + rec.start.id.substr(0, 12) + " has no checkpoint at step " + std::to_string(step));
}

// The bytes of run rec's checkpoint at step.
std::string checkpoint_bytes(const ledger::Ledger& ledger, const RunRecord& rec, int64_t step) {
  return ledger.objects().get(checkpoint_at(rec, step).at("objects").at("checkpoint").get<std::string>());
}

// Sets a recorder to what run rec had recorded up to its checkpoint at step
// (its series, checkpoints, last metrics); returns that checkpoint's bytes.
std::string recorder_at(Recorder& r, const ledger::Ledger& ledger, const RunRecord& rec, int64_t step) {
  const json* at = &checkpoint_at(rec, step);
  r.checkpoints_ = json::array();
  for (const auto& c : rec.checkpoints) {
    const int64_t s = c.json.at("step").get<int64_t>();
    if (s > step) break;
    r.checkpoints_.push_back(
        {{"step", s}, {"params_hash", c.json.at("params_hash")}, {"object", c.json.at("objects").at("checkpoint")}});
  }
  r.series_ = json::parse(ledger.objects().get(at->at("objects").at("series").get<std::string>()));
  r.last_params_hash_ = json_str(*at, "params_hash");
  r.last_metrics_.clear();
  if (!r.series_.empty()) {
    for (auto& [k, v] : r.series_.back().at("values").items())
      if (v.is_number()) r.last_metrics_[k] = v.get<double>();
  }
  r.last_step_ = step;
  return ledger.objects().get(at->at("objects").at("checkpoint").get<std::string>());
}

RunOutcome train_and_record(const ResolvedConfig& config, const PluginHost& host, ledger::Ledger& ledger,
                            const std::string& run_id, Recorder& recorder, const TrainPlan& plan) {
  auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  int64_t steps = 0;
  try {
    Trainer trainer(config, host.registry());
    steps = trainer.run(recorder, plan);
  } catch (const Interrupted&) {
    steps = recorder.last_step_;
    ledger.append(result_entry(run_id, "interrupted", recorder, ledger, seconds(), steps));
    throw;
  } catch (const std::exception& e) {
    steps = recorder.last_step_;
    json r = result_entry(run_id, "failed", recorder, ledger, seconds(), steps);
    r["error"] = e.what();
    try {
      ledger.append(r);
    } catch (const std::exception&) {
      // The ledger itself failed (disk full?): the original error matters more.
    }
    throw;
  }
  RunOutcome out;
  out.run_id = run_id;
  out.result_id = ledger.append(result_entry(run_id, "finished", recorder, ledger, seconds(), steps));
  out.status = "finished";
  out.steps = steps;
  out.params_hash = recorder.last_params_hash_;
  out.final_metrics = recorder.last_metrics_;
  return out;
}

}  // namespace

namespace {

// What decides a CUDA run's bits besides the CPU side: the device, driver,
// CUDA runtime, cuDNN, and the determinism settings the trainer applies.
json cuda_info(const std::string& device) {
  const auto& hooks = at::detail::getCUDAHooks();
  json j = {{"device", device}, {"built_with_cuda", hooks.hasCUDART()}};
  if (!hooks.hasCUDART()) return j;
  j["runtime"] = hooks.versionCUDART();
  j["cudnn"] = hooks.hasCuDNN() ? json(hooks.versionCuDNN()) : json(nullptr);
  j["gpus_visible"] = hooks.getNumGPUs();
  const char* ws = std::getenv("CUBLAS_WORKSPACE_CONFIG");
  j["CUBLAS_WORKSPACE_CONFIG"] = ws != nullptr ? ws : "";
  j["deterministic_algorithms"] = at::globalContext().deterministicAlgorithms();
  j["cudnn_deterministic"] = at::globalContext().deterministicCuDNN();
  // GPU model and driver: nvidia-smi is what every CUDA machine has (the
  // CUDA driver API is not in LibTorch's public headers).
  std::string out;
  if (FILE* p = ::popen("nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader 2>/dev/null", "r")) {
    char buf[512];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ::pclose(p);
  }
  json gpus = json::array();
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) gpus.push_back(line);
  j["gpus"] = gpus;
  return j;
}

}  // namespace

json environment(const PluginHost& host, int64_t threads, const std::string& device) {
  json plugins = json::object();
  for (const auto& lib : host.libraries())
    plugins[lib->name] = {{"version", lib->version}, {"hash", lib->hash}};
  BlasInfo blas = detect_blas();
  json env = {{"host", {{"hash", self_hash()}, {"version", GROKLAB_VERSION_STRING}}},
              {"plugins", plugins},
              {"torch", TORCH_VERSION},
              {"blas", {{"vendor", blas.vendor}, {"version", blas.version}, {"core", blas.core}}},
              {"threads", threads},
              {"cpu", cpu_info()},
              {"compiler", GROKLAB_COMPILER_TAG},
              {"os", os_info()}};
  if (device.rfind("cuda", 0) == 0) env["cuda"] = cuda_info(device);  // CPU runs keep their old fingerprint
  return env;
}

std::vector<std::string> environment_diff(const json& recorded, const json& now) {
  std::map<std::string, std::string> a, b;
  flatten(recorded, "", a);
  flatten(now, "", b);
  std::set<std::string> keys;
  for (const auto& [k, v] : a) keys.insert(k);
  for (const auto& [k, v] : b) keys.insert(k);
  std::vector<std::string> out;
  for (const auto& k : keys) {
    auto x = a.count(k) ? a[k] : std::string("(absent)");
    auto y = b.count(k) ? b[k] : std::string("(absent)");
    if (x != y) out.push_back(k + ": " + x + " → " + y);
  }
  return out;
}

std::string RunRecord::status() const {
  if (result) return json_str(result->json, "status");
  return "started";
}

namespace {

// Files an entry of a run (not its "run" entry) into its record; checkpoints
// go into ckpts by step, to be put in step order by finish_record.
void file_entry(RunRecord& rec, std::map<int64_t, ledger::Entry>& ckpts, const ledger::Entry& e) {
  const std::string kind = json_str(e.json, "kind");
  if (kind == "checkpoint") ckpts[e.json.at("step").get<int64_t>()] = e;
  else if (kind == "resume") rec.resumes.push_back(e);
  else if (kind == "result") rec.result = e;
  else if (kind == "replay") rec.replays.push_back(e);
}

void finish_record(RunRecord& rec, std::map<int64_t, ledger::Entry>& ckpts) {
  for (auto& [step, e] : ckpts) rec.checkpoints.push_back(std::move(e));
}

}  // namespace

RunRecord load_run(const ledger::Ledger& ledger, const std::string& id) {
  const std::string full = ledger.resolve(id);
  auto entries = ledger.entries();
  std::string run_id;
  for (const auto& e : entries) {
    if (e.id != full) continue;
    std::string kind = json_str(e.json, "kind");
    if (kind == "run") run_id = e.id;
    else if (e.json.contains("run")) run_id = json_str(e.json, "run");
    if (run_id.empty())
      throw std::runtime_error("entry " + full.substr(0, 12) + " (" + kind + ") does not belong to a run");
  }
  RunRecord rec;
  std::map<int64_t, ledger::Entry> ckpts;
  bool found = false;
  for (auto& e : entries) {
    if (e.id == run_id && json_str(e.json, "kind") == "run") {
      rec.start = e;
      found = true;
    } else if (json_str(e.json, "run") == run_id) {
      file_entry(rec, ckpts, e);
    }
  }
  if (!found) throw std::runtime_error("no run entry " + run_id.substr(0, 12) + " in the ledger");
  finish_record(rec, ckpts);
  return rec;
}

std::vector<RunRecord> load_runs(const ledger::Ledger& ledger) {
  std::vector<RunRecord> runs;
  std::vector<std::map<int64_t, ledger::Entry>> ckpts;
  std::map<std::string, std::size_t> index;  // run id -> position in runs
  ledger.for_each_entry([&](const ledger::Entry& e) {
    if (json_str(e.json, "kind") == "run") {
      index[e.id] = runs.size();
      runs.emplace_back().start = e;
      ckpts.emplace_back();
    } else if (auto it = index.find(json_str(e.json, "run")); it != index.end()) {
      file_entry(runs[it->second], ckpts[it->second], e);
    }
    return true;
  });
  for (std::size_t i = 0; i < runs.size(); ++i) finish_record(runs[i], ckpts[i]);
  return runs;
}

namespace {

// A start entry ("run" or "ensemble") of config: its config object, hash,
// components, environment, plugins and provenance.
json start_entry(const char* kind, const ResolvedConfig& config, const PluginHost& host, ledger::Ledger& ledger,
                 const Provenance& provenance, const json& env) {
  json plugins = json::array();
  for (const auto& lib : host.libraries())
    plugins.push_back({{"name", lib->name}, {"version", lib->version}, {"hash", lib->hash}, {"path", lib->path}});
  json start = {{"kind", kind},
                {"time", ledger::utc_timestamp()},
                {"config_hash", config.hash()},
                {"components",
                 {{"task", config.task.plugin},
                  {"architecture", config.architecture.plugin},
                  {"optimizer", config.optimizer.plugin}}},
                {"environment", env},
                {"plugins", plugins},
                {"host_path", self_path()},
                {"manifest", provenance.manifest},
                {"overrides", provenance.overrides},
                {"status", "started"},
                {"objects", {{"config", ledger.objects().put(config.canonical())}}}};
  if (std::string(kind) == "run")
    start["seeds"] = seeds_json(derive_seeds(config.run.seed, config.run.seed_streams), config.run.seed_streams);
  if (!provenance.sweep.empty()) start["sweep"] = provenance.sweep;
  if (!provenance.sweep.empty() && provenance.sweep_child >= 0) start["sweep_child"] = provenance.sweep_child;
  return start;
}

}  // namespace

RunOutcome run_recorded(const ResolvedConfig& config, const PluginHost& host, ledger::Ledger& ledger,
                        const Provenance& provenance, TrainObserver* progress) {
  if (config.run.ensemble > 1)
    throw std::invalid_argument("run.ensemble = " + std::to_string(config.run.ensemble) +
                                ": an ensemble is recorded by run_ensemble_recorded()");
  const std::string run_id = ledger.append(
      start_entry("run", config, host, ledger, provenance, environment(host, config.run.threads, config.run.device)));
  Recorder recorder(ledger, run_id, progress);
  return train_and_record(config, host, ledger, run_id, recorder, {});
}

RunOutcome resume_recorded(const std::string& run, const PluginHost& host, const Composer& composer,
                           ledger::Ledger& ledger, TrainObserver* progress) {
  RunRecord rec = load_run(ledger, run);
  if (const std::string ens = json_str(rec.start.json, "ensemble"); !ens.empty())
    throw std::runtime_error("run " + rec.start.id.substr(0, 12) + " is member " +
                             std::to_string(rec.start.json.at("member").get<int64_t>()) + " of ensemble " +
                             ens.substr(0, 12) + ", which resumes as a whole (groklab run --resume " +
                             ens.substr(0, 12) + ")");
  const std::string status = rec.status();
  if (status == "finished")
    throw std::runtime_error("run " + rec.start.id.substr(0, 12) + " already finished; nothing to resume");
  ResolvedConfig config = recorded_config(rec, ledger, composer, {});
  if (config.hash() != json_str(rec.start.json, "config_hash"))
    throw std::runtime_error("run " + rec.start.id.substr(0, 12) +
                             ": its recorded config no longer resolves to the recorded hash "
                             "(a plugin's schema changed); cannot resume it bit-exactly");
  Recorder recorder(ledger, rec.start.id, progress);
  TrainPlan plan;
  int64_t from = 0;
  if (!rec.checkpoints.empty()) {
    from = rec.checkpoints.back().json.at("step").get<int64_t>();
    plan.resume_from = recorder_at(recorder, ledger, rec, from);
  }
  ledger.append({{"kind", "resume"},
                 {"run", rec.start.id},
                 {"time", ledger::utc_timestamp()},
                 {"from_step", from},
                 {"previous_status", status},
                 {"environment", environment(host, config.run.threads, config.run.device)}});
  return train_and_record(config, host, ledger, rec.start.id, recorder, plan);
}

namespace {

// Compares a replay against the record as it runs; stops at the first
// divergent checkpoint.
class Comparer final : public TrainObserver {
 public:
  struct Stop {};
  Comparer(const ledger::Ledger& ledger, const json& series, const json& checkpoints, TrainObserver* progress)
      : ledger_(ledger), progress_(progress) {
    for (const auto& e : series) series_[e.at("step").get<int64_t>()] = e.at("values");
    for (const auto& c : checkpoints) checkpoints_[c.at("step").get<int64_t>()] = c;
  }
  void on_step(int64_t step, double loss) override {
    if (progress_) progress_->on_step(step, loss);
  }
  void on_eval(int64_t step, const std::map<std::string, double>& values) override {
    if (progress_) progress_->on_eval(step, values);
    auto it = series_.find(step);
    if (it == series_.end()) {
      note_metric("step " + std::to_string(step) + ": the replay evaluated metrics the record does not have");
      return;
    }
    json now = metrics_json(values);
    for (auto& [k, v] : it->second.items()) {
      ++metrics_compared;
      if (!now.contains(k)) {
        note_metric("step " + std::to_string(step) + ", metric " + k + ": missing in the replay");
      } else if (now[k] != v) {
        note_metric("step " + std::to_string(step) + ", metric " + k + ": recorded " + v.dump() +
                    ", replay " + now[k].dump());
      }
    }
  }
  void on_checkpoint(const Checkpoint& c) override {
    if (progress_) progress_->on_checkpoint(c);
    auto it = checkpoints_.find(c.step);
    if (it == checkpoints_.end()) return;  // e.g. the end of a spot-check interval off the cadence
    ++checkpoints_compared;
    const std::string recorded = it->second.at("params_hash").get<std::string>();
    if (recorded == c.params_hash) return;
    std::string tensor = "(could not read the recorded checkpoint)";
    try {
      auto rec = Trainer::checkpoint_tensor_hashes(ledger_.objects().get(it->second.at("object").get<std::string>()));
      std::map<std::string, std::string> now(c.tensor_hashes.begin(), c.tensor_hashes.end());
      tensor = "(every tensor hash matches; the checkpoint differs elsewhere)";
      for (const auto& [name, h] : rec) {
        auto n = now.find(name);
        if (n == now.end() || n->second != h) {
          tensor = name;
          break;
        }
      }
    } catch (const std::exception& e) {
      tensor += std::string(": ") + e.what();
    }
    divergence = "first divergent checkpoint: step " + std::to_string(c.step) + " (params hash recorded " +
                 recorded.substr(0, 12) + ", replay " + c.params_hash.substr(0, 12) +
                 ")\nfirst differing tensor: " + tensor;
    if (!first_metric.empty()) divergence += "\nfirst differing metric: " + first_metric;
    throw Stop{};
  }

  int64_t checkpoints_compared = 0;
  int64_t metrics_compared = 0;
  std::string first_metric;
  std::string divergence;

 private:
  void note_metric(const std::string& what) {
    if (first_metric.empty()) first_metric = what;
  }
  const ledger::Ledger& ledger_;
  TrainObserver* progress_;
  std::map<int64_t, json> series_;
  std::map<int64_t, json> checkpoints_;
};

}  // namespace

std::string ReplayReport::summary() const {
  std::ostringstream os;
  if (!binary_diff.empty()) {
    os << "note: binaries differ from the recorded run, so bit-exactness is not promised:\n";
    for (const auto& d : binary_diff) os << "  " << d << "\n";
  }
  os << (mode == "full" ? "replay" : "spot-check") << (member_replays.empty() ? " of run " : " of ensemble ")
     << run_id.substr(0, 12) << ": ";
  os << (identical ? "bit-identical" : "DIVERGED") << " (" << checkpoints_compared << " checkpoints, "
     << metrics_compared << " metric values compared";
  if (!intervals.empty()) {
    os << "; intervals ending at steps";
    for (auto s : intervals) os << " " << s;
  }
  os << ")\n";
  if (!divergence.empty()) os << divergence << "\n";
  if (!env_diff.empty()) {
    os << "environment differences from the record:\n";
    for (const auto& d : env_diff) os << "  " << d << "\n";
  } else if (!identical) {
    os << "the environment matches the record\n";
  }
  os << "replay entry: " << replay_id;
  return os.str();
}

namespace {

// Starts a replay's report: the environment now against the record's, and
// which of the differences are binaries (so bit-exactness is not promised).
ReplayReport start_report(const std::string& id, int64_t spot_check, const json& env_then, const json& env_now) {
  ReplayReport report;
  report.run_id = id;
  report.mode = spot_check > 0 ? "spot-check" : "full";
  report.env_diff = environment_diff(env_then, env_now);
  for (const auto& d : report.env_diff)
    if (d.rfind("host.hash", 0) == 0 || (d.rfind("plugins.", 0) == 0 && d.find(".hash:") != std::string::npos) ||
        d.find(".version:") != std::string::npos)
      report.binary_diff.push_back(d);
  return report;
}

// Which k of n checkpoint intervals a spot-check re-trains, ascending: a
// shuffle seeded with seed, else with the first 16 hex digits of id.
std::vector<size_t> spot_check_choice(size_t n, int64_t k, std::optional<uint64_t> seed, const std::string& id) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  std::mt19937_64 rng(seed ? *seed : std::stoull(id.substr(0, 16), nullptr, 16));
  for (size_t i = n; i > 1; --i) std::swap(idx[i - 1], idx[rng() % i]);
  idx.resize(std::min<size_t>(n, static_cast<size_t>(k)));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// The "replay" entry of run run_id in a replay described by report.
json replay_entry(const std::string& run_id, const ReplayReport& report, bool identical, int64_t checkpoints,
                  int64_t metrics, const std::vector<std::string>& overrides, const ResolvedConfig& config,
                  const json& env_now) {
  return {{"kind", "replay"},
          {"run", run_id},
          {"time", ledger::utc_timestamp()},
          {"mode", report.mode},
          {"outcome", identical ? "bit-identical" : "diverged"},
          {"divergence", report.divergence},
          {"checkpoints_compared", checkpoints},
          {"metrics_compared", metrics},
          {"intervals", report.intervals},
          {"overrides", overrides},
          {"config_hash", config.hash()},
          {"environment", env_now},
          {"environment_diff", report.env_diff}};
}

ReplayReport replay_ensemble(const std::string& id, const PluginHost& host, const Composer& composer,
                             ledger::Ledger& ledger, int64_t spot_check, std::optional<uint64_t> seed,
                             const std::vector<std::string>& overrides, TrainObserver* progress);
}  // namespace

ReplayReport replay_recorded(const std::string& run, const PluginHost& host, const Composer& composer,
                             ledger::Ledger& ledger, int64_t spot_check, std::optional<uint64_t> seed,
                             const std::vector<std::string>& overrides, TrainObserver* progress) {
  if (const std::string ens = ensemble_of(ledger, run); !ens.empty())
    return replay_ensemble(ens, host, composer, ledger, spot_check, seed, overrides, progress);
  RunRecord rec = load_run(ledger, run);
  if (rec.status() != "finished")
    throw std::runtime_error("run " + rec.start.id.substr(0, 12) + " has status '" + rec.status() +
                             "': only finished runs can be replayed (resume it first)");
  ResolvedConfig config = recorded_config(rec, ledger, composer, overrides);
  const json& result = rec.result->json;
  json series = json::parse(ledger.objects().get(result.at("objects").at("series").get<std::string>()));
  const json& checkpoints = result.at("checkpoints");

  const json env_now = environment(host, config.run.threads, config.run.device);
  ReplayReport report = start_report(rec.start.id, spot_check, rec.start.json.at("environment"), env_now);

  Comparer cmp(ledger, series, checkpoints, progress);
  if (spot_check <= 0) {
    try {
      Trainer trainer(config, host.registry());
      trainer.run(cmp);
    } catch (const Comparer::Stop&) {
    }
  } else {
    for (size_t i : spot_check_choice(checkpoints.size(), spot_check, seed, rec.start.id)) {
      TrainPlan plan;
      plan.stop_step = checkpoints[i].at("step").get<int64_t>();
      if (i > 0) plan.resume_from = ledger.objects().get(checkpoints[i - 1].at("object").get<std::string>());
      report.intervals.push_back(plan.stop_step);
      try {
        Trainer trainer(config, host.registry());
        trainer.run(cmp, plan);
      } catch (const Comparer::Stop&) {
        break;
      }
    }
  }
  report.checkpoints_compared = cmp.checkpoints_compared;
  report.metrics_compared = cmp.metrics_compared;
  report.divergence = cmp.divergence;
  if (report.divergence.empty() && !cmp.first_metric.empty())
    report.divergence = "first differing metric: " + cmp.first_metric;
  report.identical = report.divergence.empty() && cmp.checkpoints_compared > 0;
  if (cmp.checkpoints_compared == 0 && report.divergence.empty())
    report.divergence = "no recorded checkpoint was compared";

  report.replay_id = ledger.append(replay_entry(rec.start.id, report, report.identical, report.checkpoints_compared,
                                                report.metrics_compared, overrides, config, env_now));
  return report;
}

namespace {

// The steps of the members of an ensemble reach progress once, whichever
// member reports them (members stop at different steps).
class GroupProgress final : public TrainObserver {
 public:
  explicit GroupProgress(TrainObserver* to) : to_(to) {}
  void on_step(int64_t step, double loss) override {
    if (to_ && step > last_step_) to_->on_step(last_step_ = step, loss);
  }
  void on_eval(int64_t step, const std::map<std::string, double>& values) override {
    if (to_ && step > last_eval_) to_->on_eval(last_eval_ = step, values);
  }
  void on_checkpoint(const Checkpoint&) override {}

 private:
  TrainObserver* to_;
  int64_t last_step_ = 0, last_eval_ = 0;
};

// An ensemble as the ledger has it.
struct EnsembleRecord {
  ledger::Entry start;                    // the "ensemble" entry
  std::vector<RunRecord> members;         // by member index
  std::optional<ledger::Entry> result;    // the last "ensemble_result"
};

EnsembleRecord load_ensemble(const ledger::Ledger& ledger, const std::string& id) {
  EnsembleRecord rec;
  bool found = false;
  ledger.for_each_entry([&](const ledger::Entry& e) {
    if (e.id == id) {
      rec.start = e;
      found = true;
    } else if (json_str(e.json, "kind") == "ensemble_result" && json_str(e.json, "ensemble") == id) {
      rec.result = e;
    }
    return true;
  });
  if (!found || json_str(rec.start.json, "kind") != "ensemble")
    throw std::runtime_error("no ensemble entry " + id.substr(0, 12) + " in the ledger");
  const int64_t S = rec.start.json.at("members").get<int64_t>();
  rec.members.resize(static_cast<size_t>(S));
  std::vector<bool> seen(static_cast<size_t>(S), false);
  for (auto& r : load_runs(ledger)) {
    if (json_str(r.start.json, "ensemble") != id) continue;
    const int64_t m = r.start.json.at("member").get<int64_t>();
    if (m < 0 || m >= S) throw std::runtime_error("ensemble " + id.substr(0, 12) + ": a run names member " +
                                                  std::to_string(m) + " of " + std::to_string(S));
    seen[static_cast<size_t>(m)] = true;
    rec.members[static_cast<size_t>(m)] = std::move(r);
  }
  for (int64_t m = 0; m < S; ++m)
    if (!seen[static_cast<size_t>(m)])
      throw std::runtime_error("ensemble " + id.substr(0, 12) + " has no run entry for member " + std::to_string(m) +
                               " (it was killed while recording its members): start it again");
  return rec;
}

ResolvedConfig ensemble_config(const EnsembleRecord& rec, const ledger::Ledger& ledger, const Composer& composer,
                               const std::vector<std::string>& overrides) {
  const std::string text = ledger.objects().get(rec.start.json.at("objects").at("config").get<std::string>());
  return composer.compose_string(text, "<ledger ensemble " + rec.start.id.substr(0, 12) + ">", overrides);
}

// Whether member rec already has a "finished" result (it reached its stop
// metric before the ensemble was interrupted or failed).
bool has_finished(const RunRecord& rec) {
  return rec.result && json_str(rec.result->json, "status") == "finished";
}

// The step at which member rec stopped training, as far as its checkpoints
// tell: its result's steps when it finished, else the step of its last
// checkpoint if the run's stop rule (last step, or the stop metric reached
// there) says it stopped; otherwise it was still training (INT64_MAX).
int64_t stopped_at(const RunRecord& rec, const ledger::Ledger& ledger, const ResolvedConfig& config) {
  if (has_finished(rec)) return rec.result->json.at("steps").get<int64_t>();
  if (rec.checkpoints.empty()) return INT64_MAX;
  const json& last = rec.checkpoints.back().json;
  const int64_t step = last.at("step").get<int64_t>();
  if (step >= config.run.steps) return step;
  if (config.run.stop_metric.empty()) return INT64_MAX;
  json series = json::parse(ledger.objects().get(last.at("objects").at("series").get<std::string>()));
  if (series.empty() || series.back().at("step").get<int64_t>() != step) return INT64_MAX;
  const json& values = series.back().at("values");
  auto it = values.find(config.run.stop_metric);
  return it != values.end() && it->is_number() && it->get<double>() >= config.run.stop_threshold ? step : INT64_MAX;
}

// Where each member starts when the ensemble restarts at step R: from its
// checkpoint at R, or its last one if it had stopped by then (or, with
// keep_finished, if it has a finished result: a resume leaves it as it ended).
void members_at(TrainPlan& plan, std::vector<std::unique_ptr<Recorder>>* recorders, const EnsembleRecord& rec,
                const std::vector<int64_t>& stops, const ledger::Ledger& ledger, int64_t R,
                bool keep_finished = false) {
  plan.member_resume.clear();
  plan.member_stopped.clear();
  if (R == 0) return;  // a fresh start for all
  for (size_t s = 0; s < rec.members.size(); ++s) {
    const RunRecord& m = rec.members[s];
    const bool stopped = stops[s] <= R || (keep_finished && has_finished(m));
    const int64_t at = stopped ? stops[s] : R;
    plan.member_resume.push_back(recorders ? recorder_at(*(*recorders)[s], ledger, m, at)
                                           : checkpoint_bytes(ledger, m, at));
    plan.member_stopped.push_back(stopped);
  }
}

// Trains an ensemble per plan with one recorder per member, and records each
// member's result and the ensemble's.
EnsembleOutcome train_ensemble_and_record(const ResolvedConfig& config, const PluginHost& host,
                                          ledger::Ledger& ledger, const std::string& ensemble_id,
                                          const std::vector<std::string>& run_ids,
                                          std::vector<std::unique_ptr<Recorder>>& recorders, const TrainPlan& plan,
                                          const std::vector<std::string>& finished_results = {}) {
  auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  std::vector<TrainObserver*> obs;
  for (auto& r : recorders) obs.push_back(r.get());
  auto record_end = [&](const std::string& status, const std::vector<int64_t>& steps, const std::string& error) {
    EnsembleOutcome out;
    out.ensemble_id = ensemble_id;
    out.status = status;
    json results = json::array();
    for (size_t s = 0; s < recorders.size(); ++s) {
      // A member that had reached its stop metric before the ensemble failed
      // or was interrupted finished: only those still training share the
      // ensemble's status.
      const auto& last = recorders[s]->last_metrics_;
      const auto stop = config.run.stop_metric.empty() ? last.end() : last.find(config.run.stop_metric);
      const bool done = status == "finished" || (stop != last.end() && stop->second >= config.run.stop_threshold);
      const std::string member_status = done ? "finished" : status;
      RunOutcome o;
      o.run_id = run_ids[s];
      if (s < finished_results.size() && !finished_results[s].empty()) {
        o.result_id = finished_results[s];  // finished before this resume: recorded once
      } else {
        json r = result_entry(run_ids[s], member_status, *recorders[s], ledger, seconds(), steps[s]);
        if (!error.empty() && !done) r["error"] = error;
        o.result_id = ledger.append(r);
      }
      o.status = member_status;
      o.steps = steps[s];
      o.params_hash = recorders[s]->last_params_hash_;
      o.final_metrics = recorders[s]->last_metrics_;
      results.push_back(o.result_id);
      out.members.push_back(std::move(o));
    }
    json e = {{"kind", "ensemble_result"}, {"ensemble", ensemble_id}, {"time", ledger::utc_timestamp()},
              {"status", status},          {"wall_seconds", seconds()}, {"members", run_ids},
              {"results", results}};
    if (!error.empty()) e["error"] = error;
    out.result_id = ledger.append(e);
    return out;
  };
  auto last_steps = [&] {
    std::vector<int64_t> steps;
    for (auto& r : recorders) steps.push_back(r->last_step_);
    return steps;
  };
  std::vector<int64_t> steps;
  try {
    Trainer trainer(config, host.registry());
    steps = trainer.run_ensemble(obs, plan);
  } catch (const Interrupted&) {
    record_end("interrupted", last_steps(), "");
    throw;
  } catch (const std::exception& e) {
    try {
      record_end("failed", last_steps(), e.what());
    } catch (const std::exception&) {
      // The ledger itself failed (disk full?): the original error matters more.
    }
    throw;
  }
  return record_end("finished", steps, "");
}

}  // namespace

std::string ensemble_of(const ledger::Ledger& ledger, const std::string& entry) {
  const ledger::Entry found = ledger.get(entry);
  const std::string kind = json_str(found.json, "kind");
  if (kind == "ensemble") return found.id;
  if (kind == "ensemble_result" || kind == "run") return json_str(found.json, "ensemble");
  const std::string run_id = json_str(found.json, "run");  // a checkpoint, result, resume or replay
  return run_id.empty() ? "" : json_str(ledger.get(run_id).json, "ensemble");
}

EnsembleOutcome run_ensemble_recorded(const ResolvedConfig& config, const PluginHost& host, ledger::Ledger& ledger,
                                      const Provenance& provenance, TrainObserver* progress) {
  const int64_t S = config.run.ensemble;
  if (S < 2) throw std::invalid_argument("run_ensemble_recorded: run.ensemble is " + std::to_string(S) + ", not > 1");
  const json env = environment(host, config.run.threads, config.run.device);
  json start = start_entry("ensemble", config, host, ledger, provenance, env);
  start["members"] = S;
  json seeds = json::array();
  for (int64_t s = 0; s < S; ++s) seeds.push_back(Trainer::member_config(config, s).run.seed);
  start["member_seeds"] = seeds;
  const std::string ensemble_id = ledger.append(start);
  std::vector<std::string> run_ids;
  for (int64_t s = 0; s < S; ++s) {
    json member = start_entry("run", Trainer::member_config(config, s), host, ledger, provenance, env);
    member["ensemble"] = ensemble_id;
    member["member"] = s;
    run_ids.push_back(ledger.append(member));
  }
  GroupProgress group(progress);
  std::vector<std::unique_ptr<Recorder>> recorders;
  for (const auto& id : run_ids) recorders.push_back(std::make_unique<Recorder>(ledger, id, &group));
  return train_ensemble_and_record(config, host, ledger, ensemble_id, run_ids, recorders, {});
}

EnsembleOutcome resume_ensemble_recorded(const std::string& entry, const PluginHost& host, const Composer& composer,
                                         ledger::Ledger& ledger, TrainObserver* progress) {
  const std::string id = ensemble_of(ledger, entry);
  if (id.empty()) throw std::runtime_error("entry " + entry + " belongs to no ensemble");
  EnsembleRecord rec = load_ensemble(ledger, id);
  if (rec.result && json_str(rec.result->json, "status") == "finished")
    throw std::runtime_error("ensemble " + id.substr(0, 12) + " already finished; nothing to resume");
  ResolvedConfig config = ensemble_config(rec, ledger, composer, {});
  if (config.hash() != json_str(rec.start.json, "config_hash"))
    throw std::runtime_error("ensemble " + id.substr(0, 12) +
                             ": its recorded config no longer resolves to the recorded hash "
                             "(a plugin's schema changed); cannot resume it bit-exactly");
  // Restart where every member still training has a checkpoint: the least
  // of their last checkpoint steps (checkpoints share the cadence).
  std::vector<int64_t> stops;
  int64_t R = INT64_MAX;
  for (const auto& m : rec.members) {
    stops.push_back(stopped_at(m, ledger, config));
    if (stops.back() != INT64_MAX) continue;
    R = std::min<int64_t>(R, m.checkpoints.empty() ? 0 : m.checkpoints.back().json.at("step").get<int64_t>());
  }
  if (R == INT64_MAX) R = *std::max_element(stops.begin(), stops.end());  // all had stopped
  GroupProgress group(progress);
  std::vector<std::unique_ptr<Recorder>> recorders;
  std::vector<std::string> run_ids;
  for (const auto& m : rec.members) {
    run_ids.push_back(m.start.id);
    recorders.push_back(std::make_unique<Recorder>(ledger, m.start.id, &group));
  }
  TrainPlan plan;
  members_at(plan, &recorders, rec, stops, ledger, R, /*keep_finished=*/true);
  const json env = environment(host, config.run.threads, config.run.device);
  std::vector<std::string> finished;  // the result of each member that already finished
  for (const auto& m : rec.members) {
    finished.push_back(has_finished(m) ? m.result->id : std::string());
    if (has_finished(m)) continue;  // it stays as it ended: no resume, no second result
    ledger.append({{"kind", "resume"},
                   {"run", m.start.id},
                   {"time", ledger::utc_timestamp()},
                   {"from_step", R},
                   {"previous_status", m.status()},
                   {"ensemble", id},
                   {"environment", env}});
  }
  return train_ensemble_and_record(config, host, ledger, id, run_ids, recorders, plan, finished);
}

namespace {

// replay_recorded() of an ensemble: trains it again, all members at once,
// comparing each against its record.
ReplayReport replay_ensemble(const std::string& id, const PluginHost& host, const Composer& composer,
                             ledger::Ledger& ledger, int64_t spot_check, std::optional<uint64_t> seed,
                             const std::vector<std::string>& overrides, TrainObserver* progress) {
  EnsembleRecord rec = load_ensemble(ledger, id);
  for (const auto& m : rec.members)
    if (m.status() != "finished")
      throw std::runtime_error("ensemble " + id.substr(0, 12) + ": member " + std::to_string(m.start.json.at("member").get<int64_t>()) + " has status '" +
                               m.status() + "': only finished ensembles can be replayed (resume it first)");
  ResolvedConfig config = ensemble_config(rec, ledger, composer, overrides);
  const json env_now = environment(host, config.run.threads, config.run.device);
  ReplayReport report = start_report(id, spot_check, rec.start.json.at("environment"), env_now);

  GroupProgress group(progress);
  std::vector<std::unique_ptr<Comparer>> cmps;
  std::vector<TrainObserver*> obs;
  std::vector<int64_t> stops;
  for (const auto& m : rec.members) {
    const json& result = m.result->json;
    json series = json::parse(ledger.objects().get(result.at("objects").at("series").get<std::string>()));
    cmps.push_back(std::make_unique<Comparer>(ledger, series, result.at("checkpoints"), &group));
    obs.push_back(cmps.back().get());
    stops.push_back(result.at("steps").get<int64_t>());
  }
  // The checkpoint steps of the longest-running member: every member that
  // trains through an interval has a checkpoint at its ends.
  size_t longest = 0;
  for (size_t s = 0; s < stops.size(); ++s)
    if (stops[s] > stops[longest]) longest = s;
  std::vector<int64_t> ends;
  for (const auto& c : rec.members[longest].result->json.at("checkpoints")) ends.push_back(c.at("step").get<int64_t>());
  std::vector<std::pair<int64_t, int64_t>> intervals;  // (from, to)
  if (spot_check <= 0) {
    intervals.emplace_back(0, 0);
  } else {
    for (size_t i : spot_check_choice(ends.size(), spot_check, seed, id)) intervals.emplace_back(i > 0 ? ends[i - 1] : 0, ends[i]);
  }
  bool stopped = false;
  for (const auto& [from, to] : intervals) {
    TrainPlan plan;
    plan.stop_step = to;
    members_at(plan, nullptr, rec, stops, ledger, from);
    if (to > 0) report.intervals.push_back(to);
    try {
      Trainer trainer(config, host.registry());
      trainer.run_ensemble(obs, plan);
    } catch (const Comparer::Stop&) {
      stopped = true;
    }
    if (stopped) break;
  }
  for (size_t s = 0; s < cmps.size(); ++s) {
    report.checkpoints_compared += cmps[s]->checkpoints_compared;
    report.metrics_compared += cmps[s]->metrics_compared;
    std::string div = cmps[s]->divergence;
    if (div.empty() && !cmps[s]->first_metric.empty()) div = "first differing metric: " + cmps[s]->first_metric;
    if (!div.empty() && report.divergence.empty())
      report.divergence = "member " + std::to_string(s) + " (run " + rec.members[s].start.id.substr(0, 12) + "): " + div;
  }
  report.identical = report.divergence.empty() && report.checkpoints_compared > 0;
  if (report.checkpoints_compared == 0 && report.divergence.empty())
    report.divergence = "no recorded checkpoint was compared";
  for (size_t s = 0; s < cmps.size(); ++s) {
    const bool same = cmps[s]->divergence.empty() && cmps[s]->first_metric.empty() && !stopped;
    json entry = replay_entry(rec.members[s].start.id, report, same && report.identical,
                              cmps[s]->checkpoints_compared, cmps[s]->metrics_compared, overrides, config, env_now);
    entry["ensemble"] = id;
    report.member_replays.push_back(ledger.append(entry));
  }
  report.replay_id = report.member_replays.front();
  return report;
}

}  // namespace

}  // namespace groklab

// ResolvedConfig's canonical text, hash and key lookup; manifest errors; the
// [run] schema. See groklab/manifest.h for the canonical form.
#include <cmath>
#include <cstdio>
#include <string>

#include "groklab/ledger/hash.h"
#include "groklab/manifest.h"

namespace groklab {
namespace {

bool bare_key(const std::string& k) {
  if (k.empty()) return false;
  for (char c : k) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string toml_key(const std::string& k) { return bare_key(k) ? k : quote_string(k); }

std::string toml_value(const Value& v) {
  if (v.is_string()) return quote_string(v.as_string());
  if (v.is_float() && v.as_float() == 0.0) return "0.0";  // -0.0 and 0.0 are one value
  if (v.is_list()) {
    std::string out = "[";
    const auto& l = v.as_list();
    for (size_t i = 0; i < l.size(); ++i) {
      if (i) out += ", ";
      out += toml_value(l[i]);
    }
    return out + "]";
  }
  return v.canonical();  // int, float (shortest round-trip), bool
}

std::string component_body(const ComponentConfig& c) {
  std::string out = "plugin = " + quote_string(c.plugin) + "\n";
  for (const auto& [k, v] : c.params.values()) out += toml_key(k) + " = " + toml_value(v) + "\n";
  return out;
}

// The [run] values of a config. `ensemble` appears only when it is not 1, so
// every config written before it existed keeps its canonical text and hash
// (and stays resumable and replayable).
Params run_params(const RunConfig& r) {
  std::map<std::string, Value> v = {{"seed", Value(static_cast<int64_t>(r.seed))},
                 {"steps", Value(r.steps)},
                 {"batch_size", Value(r.batch_size)},
                 {"eval_every", Value(r.eval_every)},
                 {"checkpoint_every", Value(r.checkpoint_every)},
                 {"threads", Value(r.threads)},
                 {"device", Value(r.device)},
                 {"seed_streams", Value(r.seed_streams)},
                 {"stop_metric", Value(r.stop_metric)},
                 {"stop_threshold", Value(r.stop_threshold)},
                 {"loss_dtype", Value(r.loss_dtype)}};
  if (r.ensemble != 1) v.emplace("ensemble", Value(r.ensemble));
  return Params(std::move(v));
}

std::optional<Value> lookup(const ComponentConfig& c, const std::string& key) {
  if (key == "plugin") return Value(c.plugin);
  if (!c.params.has(key)) return std::nullopt;
  return c.params.get(key);
}

}  // namespace

std::string ResolvedConfig::canonical() const {
  std::string out;
  out += "[architecture]\n" + component_body(architecture);
  for (const auto& m : metrics) out += "\n[[metrics]]\n" + component_body(m);
  out += "\n[optimizer]\n" + component_body(optimizer);
  out += "\n[run]\n";
  const Params rp = run_params(run);
  for (const auto& [k, v] : rp.values()) out += toml_key(k) + " = " + toml_value(v) + "\n";
  out += "\n[task]\n" + component_body(task);
  return out;
}

std::string ResolvedConfig::hash() const { return ledger::hash_bytes(canonical()); }

std::optional<Value> ResolvedConfig::get(const std::string& key_path) const {
  auto dot = key_path.find('.');
  if (dot == std::string::npos) return std::nullopt;
  const std::string table = key_path.substr(0, dot);
  const std::string rest = key_path.substr(dot + 1);
  if (table == "task") return lookup(task, rest);
  if (table == "architecture") return lookup(architecture, rest);
  if (table == "optimizer") return lookup(optimizer, rest);
  if (table == "run") {
    if (rest == "ensemble") return Value(run.ensemble);
    Params p = run_params(run);
    if (!p.has(rest)) return std::nullopt;
    return p.get(rest);
  }
  if (table == "metrics") {
    auto dot2 = rest.find('.');
    if (dot2 == std::string::npos || dot2 == 0 || dot2 > 9) return std::nullopt;
    size_t index = 0;
    for (size_t i = 0; i < dot2; ++i) {
      if (rest[i] < '0' || rest[i] > '9') return std::nullopt;
      index = index * 10 + static_cast<size_t>(rest[i] - '0');
    }
    if (index >= metrics.size()) return std::nullopt;
    return lookup(metrics[index], rest.substr(dot2 + 1));
  }
  return std::nullopt;
}

std::string ManifestError::to_string() const {
  std::string out = file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": ";
  if (!key_path.empty()) out += key_path + ": ";
  return out + message;
}

namespace {
std::string join_errors(const std::vector<ManifestError>& errors) {
  std::string out;
  for (size_t i = 0; i < errors.size(); ++i) {
    if (i) out += "\n";
    out += errors[i].to_string();
  }
  return out;
}
}  // namespace

ManifestErrors::ManifestErrors(std::vector<ManifestError> errors)
    : std::runtime_error(join_errors(errors)), errors_(std::move(errors)) {}

const Schema& run_schema() {
  static const Schema schema =
      Schema()
          .integer("seed", 0, "root random seed; per-purpose streams derive from it")
          .min(0)
          .integer("steps", 1000, "optimisation steps")
          .min(1)
          .integer("batch_size", 0, "examples per step; 0 = full batch")
          .min(0)
          .integer("eval_every", 100, "steps between evaluations")
          .min(1)
          .integer("checkpoint_every", 1000, "steps between checkpoints; 0 = only at the end")
          .min(0)
          .integer("threads", 1, "intra-op threads")
          .range(1, 256)
          .string("device", std::string("cpu"), "where to train: \"cpu\", \"cuda\" (CUDA device 0) or "
                  "\"cuda:N\"; CUDA needs groklab built against a CUDA-enabled LibTorch")
          .choice("seed_streams", "derived", {"derived", "shared"},
                  "derived: each random stream (init, split, order, dropout, metric) is "
                  "XXH3-64(seed, purpose); shared: every stream is the seed itself")
          .string("stop_metric", std::string(), "stop after the first evaluation at which this "
                  "metric (e.g. \"test_accuracy\") reaches stop_threshold; \"\" = run all steps")
          .real("stop_threshold", 1.0, "threshold for stop_metric")
          .choice("loss_dtype", "float64", {"float64", "float32"},
                  "training cross-entropy on logits cast to float64 (as the reference peer), "
                  "or on the logits as they are")
          .integer("ensemble", 1, "seeds trained together as one batched model (seed … seed + "
                   "ensemble − 1), each recorded as its own run; 1 = a single run")
          .range(1, 4096);
  return schema;
}

}  // namespace groklab

// Experiment manifests: TOML files that compose a task, an architecture, an
// optimizer, metrics and run settings, validated against the plugins' schemas
// and reduced to one canonical text whose XXH3-128 is the experiment's hash.
// Torch-free (the fuzz target builds it without LibTorch).
//
//   groklab::Composer composer(host.registry());
//   groklab::ResolvedConfig cfg = composer.compose("m.toml", {"optimizer.lr=3e-4"});
//   cfg.hash();  // 32 hex digits
//
// A manifest (see docs/manifests.md):
//
//   include = ["base.toml"]          # optional; relative to this file
//   [task]                           # plugin = a component name + its parameters
//   plugin = "modular_arithmetic"
//   p = 97
//   [architecture]  ...  [optimizer]  ...
//   [[metrics]]                      # zero or more, in order
//   plugin = "accuracy"
//   [run]                            # seed, steps, batch_size, ... (run_schema())
//   seed = 1
//   [sweep]                          # optional: key path -> list of values
//   "architecture.depth" = [2, 4, 6]
//
// Composition: includes are merged first, in order (later ones win), then the
// including file; tables merge key by key, except that a layer naming a
// different `plugin` for a component replaces that component's table, and a
// layer's `metrics` array replaces the whole array. Command-line overrides
// (`architecture.depth=4`, `metrics.0.split=test`, `task.plugin=name`) apply
// last: first every `plugin` override, then the others in order (a later
// one wins). An override of a swept key fixes it and removes it from the
// sweep. On the command line the "file" of an error is `<command line>`, its
// line the override's position (1-based) and its column the character in it.
//
// Sweep order: the swept keys are sorted lexicographically by key path (as
// written, e.g. "architecture.depth" < "metrics.0.split" < "run.seed"), and
// the children are their cross product in row-major order: the last key
// varies fastest, each key's values in the order listed. Command-line sweeps
// (`run.seed=0,1,2`: commas outside brackets and quotes) join the manifest's
// and replace a manifest axis with the same key.
//
// Canonical form (what canonical() returns and hash() hashes): tables in
// alphabetical order ([architecture], [[metrics]] entries in manifest order,
// [optimizer], [run], [task]); in each, `plugin` first, then every parameter
// of the schema (defaults filled in) sorted by name, one `key = value` per
// line; ints in decimal, floats in shortest round-trip form (an int given for
// a float parameter becomes a float, -0.0 becomes 0.0), strings as TOML basic
// strings; no comments, no include, no sweep; one blank line between tables.
// It is itself a manifest that composes to the same hash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "groklab/export.h"
#include "groklab/params.h"
#include "groklab/registry.h"

namespace groklab {

// One resolved component: its plugin name and complete, validated parameters.
struct ComponentConfig {
  std::string plugin;  // component name, unique within its kind
  Params params;       // every schema parameter, defaults filled in
};

// The [run] table, typed (see run_schema() for defaults and bounds).
struct RunConfig {
  uint64_t seed = 0;               // root seed; per-purpose streams derive from it
  int64_t steps = 1000;            // optimisation steps
  int64_t batch_size = 0;          // examples per step; 0 = full batch
  int64_t eval_every = 100;        // steps between evaluations
  int64_t checkpoint_every = 1000; // steps between checkpoints; 0 = only at the end
  int64_t threads = 1;             // intra-op threads
  std::string device = "cpu";      // "cpu" or "cuda"
  std::string seed_streams = "derived";  // "derived" or "shared" (see derive_seeds())
  std::string stop_metric;         // stop once this metric reaches stop_threshold ("" = never)
  double stop_threshold = 1.0;     // threshold for stop_metric
  std::string loss_dtype = "float64";  // training loss on logits cast to "float64", or "float32" as they are
  int64_t ensemble = 1;            // > 1: train seeds seed … seed + ensemble − 1 as one batched model
};

// A complete experiment configuration: what the trainer builds and the ledger hashes.
struct GROKLAB_API ResolvedConfig {
  ComponentConfig task;
  ComponentConfig architecture;
  ComponentConfig optimizer;
  std::vector<ComponentConfig> metrics;  // in manifest order
  RunConfig run;

  // Returns the canonical TOML text (see the header comment); deterministic.
  std::string canonical() const;
  // Returns the XXH3-128 of canonical() as 32 lowercase hex digits.
  std::string hash() const;
  // Returns the value at a key path ("architecture.depth", "run.seed",
  // "task.plugin", "metrics.0.split"), or nullopt if there is none.
  std::optional<Value> get(const std::string& key_path) const;
};

// One problem found in a manifest or an override.
struct GROKLAB_API ManifestError {
  std::string file;      // manifest path as given or resolved, or "<command line>"
  int line = 0;          // 1-based; for overrides, the override's position
  int column = 0;        // 1-based
  std::string key_path;  // e.g. "architecture.depth", "metrics.0.plugin"; "" for syntax errors
  std::string message;   // what is wrong and what was expected

  // Returns "file:line:col: key.path: message" (no key path: "file:line:col: message").
  std::string to_string() const;
};

// Every problem found, thrown at once. what() is all of them, one per line.
class GROKLAB_API ManifestErrors : public std::runtime_error {
 public:
  // Builds what() from the errors, one to_string() per line, in the order given.
  explicit ManifestErrors(std::vector<ManifestError> errors);
  // Returns the errors, sorted by file (in load order; the command line last), line, column.
  const std::vector<ManifestError>& errors() const { return errors_; }

 private:
  std::vector<ManifestError> errors_;
};

// One configuration of a sweep.
struct SweepChild {
  ResolvedConfig config;                              // complete, with its own hash
  std::vector<std::pair<std::string, Value>> varied;  // swept key paths and their values, in sweep order
};

// Reads a manifest file: returns true and sets contents, or false and sets error (one line).
using ManifestReader =
    std::function<bool(const std::string& path, std::string& contents, std::string& error)>;

// Knobs of a Composer; the defaults suit the command line.
struct ComposerOptions {
  ManifestReader reader;                  // empty: read regular files of at most 16 MiB
  std::size_t max_sweep_children = 10000; // a larger sweep is an error (0 counts as 1)
  std::size_t max_files = 256;            // manifest files loaded per composition, includes counted
  std::size_t max_include_depth = 32;     // include nesting
};

// Composes manifests against a registry of components. Thread-safe (const).
class GROKLAB_API Composer {
 public:
  // Keeps a reference to registry: it must outlive the Composer.
  explicit Composer(const Registry& registry, ComposerOptions options = {});

  // Returns the resolved configuration of the manifest at path with overrides
  // applied; throws ManifestErrors with every problem found, including a
  // sweep of more than one child (use expand()).
  ResolvedConfig compose(const std::string& path,
                         const std::vector<std::string>& overrides = {}) const;
  // Returns the same for manifest text; source_name names it in errors, and
  // includes resolve relative to its directory (the current directory if it has none).
  ResolvedConfig compose_string(const std::string& toml_text, const std::string& source_name,
                                const std::vector<std::string>& overrides = {}) const;

  // Returns every child of the manifest's [sweep] and the command-line sweeps,
  // in sweep order (see the header comment); a manifest without a sweep gives
  // one child with nothing varied. Throws ManifestErrors.
  std::vector<SweepChild> expand(const std::string& path,
                                 const std::vector<std::string>& overrides = {}) const;
  // Returns the same for manifest text (see compose_string()).
  std::vector<SweepChild> expand_string(const std::string& toml_text,
                                        const std::string& source_name,
                                        const std::vector<std::string>& overrides = {}) const;

 private:
  std::vector<SweepChild> run(const std::string* text, const std::string& path,
                              const std::vector<std::string>& overrides, bool single) const;
  const Registry& registry_;
  ComposerOptions options_;
};

// Returns the schema of the [run] table: seed, steps, batch_size, eval_every,
// checkpoint_every, threads, device, seed_streams, stop_metric, stop_threshold,
// loss_dtype, ensemble.
GROKLAB_API const Schema& run_schema();

}  // namespace groklab

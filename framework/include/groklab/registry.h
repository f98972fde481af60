// The registry of components: what plugins add and what the host looks up.
// Torch-free: component interfaces are only forward-declared here
// (see groklab/components.h).
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "groklab/export.h"
#include "groklab/params.h"

namespace groklab {

class Task;
class Architecture;
class Optimizer;
class Metric;

// The four kinds of component.
enum class Kind { Task, Architecture, Optimizer, Metric };

// Returns "task", "architecture", "optimizer" or "metric".
GROKLAB_API const char* to_string(Kind k);
// Parses a kind name; returns false if s is not one.
GROKLAB_API bool parse_kind(const std::string& s, Kind& out);
// The GROKLAB_KIND_* bit of a kind.
GROKLAB_API unsigned kind_bit(Kind k);

// Factories build a component from its validated parameters.
using TaskFactory = std::function<std::shared_ptr<Task>(const Params&)>;
using ArchitectureFactory = std::function<std::shared_ptr<Architecture>(const Params&)>;
using OptimizerFactory = std::function<std::shared_ptr<Optimizer>(const Params&)>;
using MetricFactory = std::function<std::shared_ptr<Metric>(const Params&)>;

// The library a component came from.
struct LibraryInfo {
  std::string name;      // descriptor name
  std::string version;   // descriptor version
  std::string path;      // absolute path of the .so ("" for components added in-process)
  std::string hash;      // XXH3-128 of the file, 32 hex digits
  std::string torch_version;  // descriptor torch_version
  std::string compiler;  // descriptor compiler
  std::string cxx_abi;   // descriptor cxx_abi
};

// One registered component.
struct Component {
  Kind kind = Kind::Task;
  std::string name;         // unique within its kind
  std::string description;  // one line
  Schema schema;            // declared parameters
  std::shared_ptr<const LibraryInfo> library;
  TaskFactory make_task;                  // set when kind == Task
  ArchitectureFactory make_architecture;  // set when kind == Architecture
  OptimizerFactory make_optimizer;        // set when kind == Optimizer
  MetricFactory make_metric;              // set when kind == Metric
};

// What a plugin's register function sees. Collects components; the host
// commits them only if the whole registration succeeds.
class GROKLAB_API Registrar {
 public:
  explicit Registrar(unsigned allowed_kinds = 0xFu) : allowed_kinds_(allowed_kinds) {}
  Registrar(const Registrar&) = delete;
  Registrar& operator=(const Registrar&) = delete;
  virtual ~Registrar();

  // Each throws std::invalid_argument on an empty or malformed name, a kind the
  // descriptor did not declare, a null factory, or a name added twice.
  // add_metric appends the parameter `every` (the metric's cadence in steps,
  // 0 = run.eval_every) to the schema; a schema that declares it is refused.
  void add_task(std::string name, std::string description, Schema schema, TaskFactory f);
  void add_architecture(std::string name, std::string description, Schema schema,
                        ArchitectureFactory f);
  void add_optimizer(std::string name, std::string description, Schema schema,
                     OptimizerFactory f);
  void add_metric(std::string name, std::string description, Schema schema, MetricFactory f);

  // The components added so far, in order.
  const std::vector<Component>& components() const { return components_; }
  std::vector<Component> take() { return std::move(components_); }

 private:
  void add(Component c);
  unsigned allowed_kinds_;
  std::vector<Component> components_;
};

// Every component the host knows, by kind and name.
class GROKLAB_API Registry {
 public:
  // Returns the component, or nullptr.
  const Component* find(Kind kind, const std::string& name) const;
  // Every component of that name, of any kind.
  std::vector<const Component*> find_all(const std::string& name) const;
  // Names of the components of a kind, sorted.
  std::vector<std::string> names(Kind kind) const;
  // All components, sorted by kind then name.
  std::vector<const Component*> all() const;

  // Returns "" and adds all of cs, or adds none and returns why (a duplicate).
  std::string add_all(std::vector<Component> cs);

  // A deque keeps pointers from find() valid as libraries are added.
 private:
  std::deque<Component> components_;
};

}  // namespace groklab

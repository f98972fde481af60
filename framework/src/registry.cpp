#include "groklab/registry.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace groklab {

const char* to_string(Kind k) {
  switch (k) {
    case Kind::Task: return "task";
    case Kind::Architecture: return "architecture";
    case Kind::Optimizer: return "optimizer";
    case Kind::Metric: return "metric";
  }
  return "?";
}

bool parse_kind(const std::string& s, Kind& out) {
  for (Kind k : {Kind::Task, Kind::Architecture, Kind::Optimizer, Kind::Metric}) {
    if (s == to_string(k)) {
      out = k;
      return true;
    }
  }
  return false;
}

unsigned kind_bit(Kind k) { return 1u << static_cast<unsigned>(k); }

Registrar::~Registrar() = default;

namespace {
bool valid_name(const std::string& n) {
  if (n.empty() || !(std::islower(static_cast<unsigned char>(n[0])))) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) ||
           c == '_' || c == '-';
  });
}
}  // namespace

void Registrar::add(Component c) {
  const std::string what = std::string(to_string(c.kind)) + " '" + c.name + "'";
  if (!valid_name(c.name))
    throw std::invalid_argument(what + ": a component name is lowercase letters, digits, '_' or '-', starting with a letter");
  if ((allowed_kinds_ & kind_bit(c.kind)) == 0)
    throw std::invalid_argument(what + ": the library's descriptor does not declare kind " +
                                to_string(c.kind));
  bool has_factory = c.make_task || c.make_architecture || c.make_optimizer || c.make_metric;
  if (!has_factory) throw std::invalid_argument(what + ": null factory");
  for (const auto& o : components_)
    if (o.kind == c.kind && o.name == c.name)
      throw std::invalid_argument(what + " added twice");
  components_.push_back(std::move(c));
}

void Registrar::add_task(std::string name, std::string description, Schema schema, TaskFactory f) {
  Component c;
  c.kind = Kind::Task;
  c.name = std::move(name);
  c.description = std::move(description);
  c.schema = std::move(schema);
  c.make_task = std::move(f);
  add(std::move(c));
}
void Registrar::add_architecture(std::string name, std::string description, Schema schema,
                                 ArchitectureFactory f) {
  Component c;
  c.kind = Kind::Architecture;
  c.name = std::move(name);
  c.description = std::move(description);
  c.schema = std::move(schema);
  c.make_architecture = std::move(f);
  add(std::move(c));
}
void Registrar::add_optimizer(std::string name, std::string description, Schema schema,
                              OptimizerFactory f) {
  Component c;
  c.kind = Kind::Optimizer;
  c.name = std::move(name);
  c.description = std::move(description);
  c.schema = std::move(schema);
  c.make_optimizer = std::move(f);
  add(std::move(c));
}
void Registrar::add_metric(std::string name, std::string description, Schema schema,
                           MetricFactory f) {
  Component c;
  c.kind = Kind::Metric;
  c.name = std::move(name);
  c.description = std::move(description);
  if (schema.find("every") != nullptr)
    throw std::invalid_argument("metric '" + c.name + "': `every` is reserved (the evaluation cadence)");
  c.schema = std::move(schema.integer("every", 0, "evaluate every this many steps (and at the last "
                                                 "step); 0: the run's eval_every")
                           .min(0));
  c.make_metric = std::move(f);
  add(std::move(c));
}

const Component* Registry::find(Kind kind, const std::string& name) const {
  for (const auto& c : components_)
    if (c.kind == kind && c.name == name) return &c;
  return nullptr;
}

std::vector<const Component*> Registry::find_all(const std::string& name) const {
  std::vector<const Component*> out;
  for (const auto& c : components_)
    if (c.name == name) out.push_back(&c);
  return out;
}

std::vector<std::string> Registry::names(Kind kind) const {
  std::vector<std::string> out;
  for (const auto& c : components_)
    if (c.kind == kind) out.push_back(c.name);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<const Component*> Registry::all() const {
  std::vector<const Component*> out;
  for (const auto& c : components_) out.push_back(&c);
  std::sort(out.begin(), out.end(), [](const Component* a, const Component* b) {
    return std::make_pair(a->kind, a->name) < std::make_pair(b->kind, b->name);
  });
  return out;
}

std::string Registry::add_all(std::vector<Component> cs) {
  for (const auto& c : cs) {
    if (const Component* o = find(c.kind, c.name)) {
      std::string by = o->library ? o->library->path : std::string("the host");
      if (by.empty() && o->library) by = o->library->name;
      return std::string(to_string(c.kind)) + " '" + c.name + "' is already provided by " + by;
    }
  }
  for (auto& c : cs) components_.push_back(std::move(c));
  return "";
}

}  // namespace groklab

// Parameter values and schemas: what a component declares it accepts, and the
// validated values it is built from. Torch-free; shared by host and plugins.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "groklab/export.h"

namespace groklab {

// The type of a parameter as a manifest spells it.
enum class ParamType { Int, Float, Bool, String, List };

// Returns s as a double-quoted string, valid in both TOML and JSON: escapes
// ", \, control characters and DEL.
GROKLAB_API std::string quote_string(const std::string& s);

// Returns "int", "float", "bool", "string" or "list".
GROKLAB_API const char* to_string(ParamType t);

// A parameter value: int, float, bool, string or a list of values.
class GROKLAB_API Value {
 public:
  using List = std::vector<Value>;

  Value() = default;  // an empty list
  Value(int64_t v) : v_(v) {}
  Value(int v) : v_(static_cast<int64_t>(v)) {}
  Value(double v) : v_(v) {}
  Value(bool v) : v_(v) {}
  Value(std::string v) : v_(std::move(v)) {}
  Value(const char* v) : v_(std::string(v)) {}
  Value(List v) : v_(std::move(v)) {}

  ParamType type() const;
  bool is_int() const { return std::holds_alternative<int64_t>(v_); }
  bool is_float() const { return std::holds_alternative<double>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_list() const { return std::holds_alternative<List>(v_); }

  // Each accessor throws std::invalid_argument naming both types on a mismatch;
  // as_float() also accepts an int.
  int64_t as_int() const;
  double as_float() const;
  bool as_bool() const;
  const std::string& as_string() const;
  const List& as_list() const;

  // Canonical text: ints in decimal, floats in shortest round-trip form that
  // always carries a '.', 'e', "inf" or "nan", strings as quote_string(), lists as [a, b].
  std::string canonical() const;

  friend bool operator==(const Value& a, const Value& b) { return a.v_ == b.v_; }
  friend bool operator!=(const Value& a, const Value& b) { return !(a == b); }

 private:
  std::variant<List, int64_t, double, bool, std::string> v_;
};

// One declared parameter of a component.
struct ParamSpec {
  std::string name;                    // key in the component's table
  ParamType type = ParamType::Int;     // declared type
  std::optional<Value> default_value;  // absent: the manifest must set it
  std::optional<double> min;           // inclusive lower bound (int/float, list length for list)
  std::optional<double> max;           // inclusive upper bound
  std::vector<Value> choices;          // allowed values; empty: any
  std::optional<ParamType> element;    // element type of a list, if constrained
  std::string doc;                     // one line for `groklab plugins show`
};

// A component's parameters in declaration order. Built fluently by plugins:
//   Schema().integer("p", 113, "prime modulus").min(2)
//           .choice("operation", "add", {"add", "sub"}, "the operation");
class GROKLAB_API Schema {
 public:
  Schema& integer(std::string name, std::optional<int64_t> def, std::string doc);
  Schema& real(std::string name, std::optional<double> def, std::string doc);
  Schema& boolean(std::string name, std::optional<bool> def, std::string doc);
  Schema& string(std::string name, std::optional<std::string> def, std::string doc);
  Schema& choice(std::string name, std::string def, std::vector<std::string> choices,
                 std::string doc);
  Schema& list(std::string name, std::optional<Value::List> def, std::string doc,
               std::optional<ParamType> element = std::nullopt);
  // Constrain the parameter declared last.
  Schema& min(double v);
  Schema& max(double v);
  Schema& range(double lo, double hi) { return min(lo).max(hi); }

  const std::vector<ParamSpec>& params() const { return params_; }
  const ParamSpec* find(const std::string& name) const;

  // Returns an empty string if v satisfies spec (type, range, choices), else
  // what was expected, e.g. "an int in [2, inf]" or "one of \"add\", \"sub\"".
  static std::string check(const ParamSpec& spec, const Value& v);

 private:
  Schema& add(ParamSpec s);
  ParamSpec& last();
  std::vector<ParamSpec> params_;
};

// Validated values a component is constructed from: every declared parameter
// is present (defaults filled in) with its declared type.
class GROKLAB_API Params {
 public:
  Params() = default;
  explicit Params(std::map<std::string, Value> values) : values_(std::move(values)) {}

  // Each throws std::out_of_range naming the key when it is absent.
  const Value& get(const std::string& name) const;
  int64_t get_int(const std::string& name) const { return get(name).as_int(); }
  double get_float(const std::string& name) const { return get(name).as_float(); }
  bool get_bool(const std::string& name) const { return get(name).as_bool(); }
  const std::string& get_string(const std::string& name) const { return get(name).as_string(); }
  const Value::List& get_list(const std::string& name) const { return get(name).as_list(); }
  bool has(const std::string& name) const { return values_.count(name) != 0; }

  const std::map<std::string, Value>& values() const { return values_; }

 private:
  std::map<std::string, Value> values_;
};

}  // namespace groklab

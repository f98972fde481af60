#include "groklab/params.h"

#include <charconv>
#include <cstdio>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace groklab {

std::string quote_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\f': out += "\\f"; break;
      case '\r': out += "\\r"; break;
      default:
        if (u < 0x20 || u == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(u));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

const char* to_string(ParamType t) {
  switch (t) {
    case ParamType::Int: return "int";
    case ParamType::Float: return "float";
    case ParamType::Bool: return "bool";
    case ParamType::String: return "string";
    case ParamType::List: return "list";
  }
  return "?";
}

ParamType Value::type() const {
  if (is_int()) return ParamType::Int;
  if (is_float()) return ParamType::Float;
  if (is_bool()) return ParamType::Bool;
  if (is_string()) return ParamType::String;
  return ParamType::List;
}

namespace {
[[noreturn]] void type_error(ParamType want, ParamType got) {
  throw std::invalid_argument(std::string("expected a value of type ") + to_string(want) +
                              ", got " + to_string(got));
}

std::string format_double(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0.0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d);  // shortest round-trip
  std::string s(buf, r.ptr);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}
}  // namespace

int64_t Value::as_int() const {
  if (!is_int()) type_error(ParamType::Int, type());
  return std::get<int64_t>(v_);
}
double Value::as_float() const {
  if (is_int()) return static_cast<double>(std::get<int64_t>(v_));
  if (!is_float()) type_error(ParamType::Float, type());
  return std::get<double>(v_);
}
bool Value::as_bool() const {
  if (!is_bool()) type_error(ParamType::Bool, type());
  return std::get<bool>(v_);
}
const std::string& Value::as_string() const {
  if (!is_string()) type_error(ParamType::String, type());
  return std::get<std::string>(v_);
}
const Value::List& Value::as_list() const {
  if (!is_list()) type_error(ParamType::List, type());
  return std::get<List>(v_);
}

std::string Value::canonical() const {
  if (is_int()) return std::to_string(std::get<int64_t>(v_));
  if (is_float()) return format_double(std::get<double>(v_));
  if (is_bool()) return std::get<bool>(v_) ? "true" : "false";
  if (is_string()) return quote_string(std::get<std::string>(v_));
  std::string out = "[";
  const auto& l = std::get<List>(v_);
  for (size_t i = 0; i < l.size(); ++i) {
    if (i) out += ", ";
    out += l[i].canonical();
  }
  return out + "]";
}

Schema& Schema::add(ParamSpec s) {
  if (s.name.empty()) throw std::invalid_argument("parameter with an empty name");
  if (find(s.name)) throw std::invalid_argument("parameter '" + s.name + "' declared twice");
  if (s.default_value) {
    std::string why = check(s, *s.default_value);
    if (!why.empty())
      throw std::invalid_argument("default of parameter '" + s.name + "' is invalid: expected " +
                                  why);
  }
  params_.push_back(std::move(s));
  return *this;
}

ParamSpec& Schema::last() {
  if (params_.empty()) throw std::logic_error("Schema: min/max before any parameter");
  return params_.back();
}

Schema& Schema::integer(std::string name, std::optional<int64_t> def, std::string doc) {
  ParamSpec s{std::move(name), ParamType::Int, {}, {}, {}, {}, {}, std::move(doc)};
  if (def) s.default_value = Value(*def);
  return add(std::move(s));
}
Schema& Schema::real(std::string name, std::optional<double> def, std::string doc) {
  ParamSpec s{std::move(name), ParamType::Float, {}, {}, {}, {}, {}, std::move(doc)};
  if (def) s.default_value = Value(*def);
  return add(std::move(s));
}
Schema& Schema::boolean(std::string name, std::optional<bool> def, std::string doc) {
  ParamSpec s{std::move(name), ParamType::Bool, {}, {}, {}, {}, {}, std::move(doc)};
  if (def) s.default_value = Value(*def);
  return add(std::move(s));
}
Schema& Schema::string(std::string name, std::optional<std::string> def, std::string doc) {
  ParamSpec s{std::move(name), ParamType::String, {}, {}, {}, {}, {}, std::move(doc)};
  if (def) s.default_value = Value(*def);
  return add(std::move(s));
}
Schema& Schema::choice(std::string name, std::string def, std::vector<std::string> choices,
                       std::string doc) {
  ParamSpec s{std::move(name), ParamType::String, {}, {}, {}, {}, {}, std::move(doc)};
  for (auto& c : choices) s.choices.emplace_back(std::move(c));
  s.default_value = Value(std::move(def));
  return add(std::move(s));
}
Schema& Schema::list(std::string name, std::optional<Value::List> def, std::string doc,
                     std::optional<ParamType> element) {
  ParamSpec s{std::move(name), ParamType::List, {}, {}, {}, {}, element, std::move(doc)};
  if (def) s.default_value = Value(*def);
  return add(std::move(s));
}
Schema& Schema::min(double v) {
  auto& s = last();
  s.min = v;
  if (s.default_value && !check(s, *s.default_value).empty())
    throw std::invalid_argument("default of parameter '" + s.name + "' is below its minimum");
  return *this;
}
Schema& Schema::max(double v) {
  auto& s = last();
  s.max = v;
  if (s.default_value && !check(s, *s.default_value).empty())
    throw std::invalid_argument("default of parameter '" + s.name + "' is above its maximum");
  return *this;
}

const ParamSpec* Schema::find(const std::string& name) const {
  for (const auto& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

namespace {
std::string bound(const std::optional<double>& b, bool lower) {
  if (!b) return lower ? "-inf" : "inf";
  std::ostringstream os;
  os << *b;
  return os.str();
}
}  // namespace

std::string Schema::check(const ParamSpec& spec, const Value& v) {
  const char* tname = to_string(spec.type);
  bool type_ok = v.type() == spec.type || (spec.type == ParamType::Float && v.is_int());
  std::string range;
  if (spec.min || spec.max)
    range = std::string(" in [") + bound(spec.min, true) + ", " + bound(spec.max, false) + "]";
  if (!type_ok) return std::string("a value of type ") + tname + range;
  if (spec.type == ParamType::Int || spec.type == ParamType::Float) {
    double x = v.as_float();
    if ((spec.min && x < *spec.min) || (spec.max && x > *spec.max) || std::isnan(x))
      return std::string("a value of type ") + tname + range;
  }
  if (spec.type == ParamType::List) {
    const auto& l = v.as_list();
    double n = static_cast<double>(l.size());
    if ((spec.min && n < *spec.min) || (spec.max && n > *spec.max))
      return std::string("a list with length") + range;
    if (spec.element) {
      for (const auto& e : l) {
        bool ok = e.type() == *spec.element || (*spec.element == ParamType::Float && e.is_int());
        if (!ok) return std::string("a list of ") + to_string(*spec.element) + " values";
      }
    }
  }
  if (!spec.choices.empty()) {
    for (const auto& c : spec.choices)
      if (c == v) return "";
    std::string s = "one of ";
    for (size_t i = 0; i < spec.choices.size(); ++i) {
      if (i) s += ", ";
      s += spec.choices[i].canonical();
    }
    return s;
  }
  return "";
}

const Value& Params::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw std::out_of_range("no parameter named '" + name + "'");
  return it->second;
}

}  // namespace groklab

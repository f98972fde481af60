// The built-in plugins for component tests: the registry they fill and
// parameters built from a component's schema.
#pragma once

#include <catch2/catch.hpp>
#include <map>
#include <string>

#include "groklab/host.h"
#include "groklab/params.h"
#include "groklab/registry.h"

namespace groklab::test {

// The host with every built-in plugin loaded (once per test process).
inline PluginHost& builtin_host() {
  static PluginHost* host = [] {
    auto* h = new PluginHost;  // never destroyed: plugins are never unloaded
    h->load_directory(GROKLAB_BUILTIN_PLUGIN_DIR);
    return h;
  }();
  return *host;
}

// Its registry.
inline const Registry& builtins() { return builtin_host().registry(); }

// The component's schema defaults, overridden by `set`; every key of `set`
// must name a declared parameter.
//   Params p = params_for(Kind::Task, "dyck", {{"k", Value(int64_t{2})}});
inline Params params_for(Kind kind, const std::string& name, std::map<std::string, Value> set = {}) {
  const Component* c = builtins().find(kind, name);
  REQUIRE(c != nullptr);
  std::map<std::string, Value> values;
  for (const auto& spec : c->schema.params()) {
    if (set.count(spec.name)) {
      values[spec.name] = set.at(spec.name);
      set.erase(spec.name);
    } else {
      REQUIRE(spec.default_value.has_value());
      values[spec.name] = *spec.default_value;
    }
  }
  REQUIRE(set.empty());
  return Params(values);
}

}  // namespace groklab::test

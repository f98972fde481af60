// groklab plugins [show NAME] [--broken]
#include <cstdio>
#include <string>

#include "commands.h"
#include "groklab/host.h"
#include "groklab/params.h"

namespace groklab::cli {
namespace {

void list_components(const PluginHost& host) {
  const auto all = host.registry().all();
  std::printf("%-13s %-24s %-22s %s\n", "KIND", "NAME", "LIBRARY", "VERSION");
  for (const Component* c : all)
    std::printf("%-13s %-24s %-22s %s\n", to_string(c->kind), c->name.c_str(),
                c->library ? c->library->name.c_str() : "-",
                c->library ? c->library->version.c_str() : "-");
  if (all.empty()) std::printf("(no components: no plugins were found)\n");
  if (!host.broken().empty())
    std::fprintf(stderr, "%zu plugin librar%s failed to load: see `groklab plugins --broken`\n",
                 host.broken().size(), host.broken().size() == 1 ? "y" : "ies");
}

void list_broken(const PluginHost& host) {
  if (host.broken().empty()) {
    std::printf("no broken plugin libraries\n");
    return;
  }
  for (const auto& b : host.broken()) std::printf("%s\n    %s\n", b.path.c_str(), b.reason.c_str());
}

std::string describe_spec(const ParamSpec& p) {
  std::string type = to_string(p.type);
  if (p.type == ParamType::List && p.element) type += std::string(" of ") + to_string(*p.element);
  std::string s = type;
  s += p.default_value ? ", default " + p.default_value->canonical() : std::string(", required");
  if (p.min || p.max) {
    auto fmt = [](const std::optional<double>& v, const char* inf) {
      if (!v) return std::string(inf);
      Value x = (*v == static_cast<double>(static_cast<int64_t>(*v))) ? Value(static_cast<int64_t>(*v))
                                                                      : Value(*v);
      return x.canonical();
    };
    s += ", range [" + fmt(p.min, "-inf") + ", " + fmt(p.max, "inf") + "]";
  }
  if (!p.choices.empty()) {
    s += ", one of {";
    for (size_t i = 0; i < p.choices.size(); ++i) s += (i ? ", " : "") + p.choices[i].canonical();
    s += "}";
  }
  return s;
}

void show(const PluginHost& host, const std::string& name) {
  auto found = host.registry().find_all(name);
  if (found.empty()) {
    std::fprintf(stderr, "groklab: no component named '%s' (see `groklab plugins`)\n", name.c_str());
    throw Exit{2};
  }
  for (const Component* c : found) {
    std::printf("%s %s — %s\n", to_string(c->kind), c->name.c_str(), c->description.c_str());
    if (c->library)
      std::printf("  library: %s %s (%s, xxh3-128 %s)\n", c->library->name.c_str(),
                  c->library->version.c_str(), c->library->path.c_str(), c->library->hash.c_str());
    if (c->schema.params().empty()) std::printf("  parameters: none\n");
    else std::printf("  parameters:\n");
    for (const auto& p : c->schema.params())
      std::printf("    %-20s %s\n    %-20s   %s\n", p.name.c_str(), describe_spec(p).c_str(), "",
                  p.doc.c_str());
  }
}

}  // namespace

void add_plugins_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("plugins", "List plugin components (kind, name, library, version)");
  auto* broken = cmd->add_flag("--broken", "List plugin libraries that failed to load, with the reason");
  auto* show_cmd = cmd->add_subcommand("show", "Describe a component and its parameter schema");
  auto name = std::make_shared<std::string>();
  show_cmd->add_option("NAME", *name, "Component name")->required();

  cmd->callback([broken, show_cmd, name] {
    PluginHost host;
    host.load_default_paths();
    if (show_cmd->parsed()) show(host, *name);
    else if (*broken) list_broken(host);
    else list_components(host);
  });
}

}  // namespace groklab::cli

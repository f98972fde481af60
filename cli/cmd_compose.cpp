// groklab compose MANIFEST [KEY=VALUE...] [--sweep | --child N]
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "groklab/host.h"
#include "groklab/manifest.h"

namespace groklab::cli {
namespace {

struct ComposeArgs {
  std::string manifest;
  std::vector<std::string> overrides;
  int child = -1;
};

void print_config(const ResolvedConfig& cfg) {
  std::fputs(cfg.canonical().c_str(), stdout);
  std::printf("\n# hash: %s\n", cfg.hash().c_str());
}

void list_children(const std::vector<SweepChild>& children) {
  std::printf("# %zu configuration%s\n", children.size(), children.size() == 1 ? "" : "s");
  for (size_t i = 0; i < children.size(); ++i) {
    std::string varied;
    for (const auto& [k, v] : children[i].varied) varied += " " + k + "=" + v.canonical();
    std::printf("%zu %s%s\n", i, children[i].config.hash().c_str(), varied.c_str());
  }
}

void compose(const ComposeArgs& args, bool sweep) {
  PluginHost host;
  host.load_default_paths();
  if (!host.broken().empty())
    std::fprintf(stderr, "groklab: %zu plugin librar%s failed to load: see `groklab plugins --broken`\n",
                 host.broken().size(), host.broken().size() == 1 ? "y" : "ies");
  Composer composer(host.registry());
  try {
    if (sweep || args.child >= 0) {
      auto children = composer.expand(args.manifest, args.overrides);
      if (args.child < 0) {
        list_children(children);
      } else if (static_cast<size_t>(args.child) < children.size()) {
        print_config(children[static_cast<size_t>(args.child)].config);
      } else {
        std::fprintf(stderr, "groklab: --child %d: the sweep has %zu configuration%s\n", args.child,
                     children.size(), children.size() == 1 ? "" : "s");
        throw Exit{2};
      }
    } else {
      print_config(composer.compose(args.manifest, args.overrides));
    }
  } catch (const ManifestErrors& e) {
    for (const auto& err : e.errors()) std::fprintf(stderr, "%s\n", err.to_string().c_str());
    std::fprintf(stderr, "groklab: %zu error%s in %s\n", e.errors().size(),
                 e.errors().size() == 1 ? "" : "s", args.manifest.c_str());
    throw Exit{2};
  }
}

}  // namespace

void add_compose_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "compose", "Print a manifest's resolved canonical config and its hash (or list its sweep)");
  auto args = std::make_shared<ComposeArgs>();
  cmd->add_option("MANIFEST", args->manifest, "Manifest file (TOML)")->required();
  cmd->add_option("OVERRIDES", args->overrides,
                  "key=value overrides, e.g. architecture.depth=4 optimizer.lr=3e-4; "
                  "key=a,b,c sweeps over the values");
  auto* sweep = cmd->add_flag("--sweep", "List every sweep child: index, hash and the varied keys");
  cmd->add_option("--child", args->child, "Print the canonical config of sweep child N")
      ->check(CLI::NonNegativeNumber)
      ->excludes(sweep);
  cmd->callback([args, sweep] { compose(*args, sweep->count() > 0); });
}

}  // namespace groklab::cli

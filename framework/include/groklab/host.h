// The plugin host: discovers plugin libraries, checks their descriptors and
// registers their components. A broken library never stops the host: it is
// listed with its reason and registers nothing.
//
//   groklab::PluginHost host;
//   host.load_default_paths();
//   const groklab::Component* c = host.registry().find(groklab::Kind::Task, "copy");
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "groklab/export.h"
#include "groklab/registry.h"

namespace groklab {

// A library or directory that could not be used, and why.
struct BrokenLibrary {
  std::string path;    // the file or directory
  std::string reason;  // one line, e.g. "ABI version 7, host expects 1"
};

class GROKLAB_API PluginHost {
 public:
  PluginHost();
  ~PluginHost();
  PluginHost(const PluginHost&) = delete;
  PluginHost& operator=(const PluginHost&) = delete;

  // Directories searched by default, in order: "plugins" next to the running
  // binary, <binary>/../lib/groklab/plugins, then each entry of
  // GROKLAB_PLUGIN_PATH (colon-separated). Missing defaults are skipped;
  // missing GROKLAB_PLUGIN_PATH entries are reported as broken.
  static std::vector<std::string> default_search_path();

  // Loads every plugin from default_search_path().
  void load_default_paths();

  // Loads every *.so in dir (sorted by file name). A missing or unreadable
  // directory is recorded as broken. Returns the number of libraries loaded.
  int load_directory(const std::string& dir);

  // Loads one library. Returns true if it loaded and registered; otherwise
  // records it in broken() and returns false. A path loaded before is skipped.
  bool load_library(const std::string& path);

  const Registry& registry() const { return registry_; }
  // Libraries loaded successfully, in load order.
  const std::vector<std::shared_ptr<const LibraryInfo>>& libraries() const { return libraries_; }
  const std::vector<BrokenLibrary>& broken() const { return broken_; }

 private:
  void fail(const std::string& path, std::string reason);
  Registry registry_;
  std::vector<std::shared_ptr<const LibraryInfo>> libraries_;
  std::vector<BrokenLibrary> broken_;
  std::vector<std::string> seen_;
};

}  // namespace groklab

#include "groklab/host.h"

#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>

#include "groklab/ledger/hash.h"
#include "groklab/log.h"
#include "groklab/plugin.h"

namespace groklab {
namespace {

// Plugin libraries stay loaded for the life of the process: their vtables,
// deleters, type_info and autograd functions outlive any handle. The handles
// live here and are never destroyed (and RTLD_NODELETE backs that up).
std::vector<boost::dll::shared_library>& keep_alive() {
  static auto* libs = new std::vector<boost::dll::shared_library>();
  return *libs;
}
std::mutex& keep_alive_mutex() {
  static auto* m = new std::mutex();
  return *m;
}

std::string absolute(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) != nullptr) return buf;
  return path;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string str(const char* s) { return s ? std::string(s) : std::string("(null)"); }

}  // namespace

PluginHost::PluginHost() = default;
PluginHost::~PluginHost() = default;

std::vector<std::string> PluginHost::default_search_path() {
  std::vector<std::string> dirs;
  boost::dll::fs::error_code ec;
  auto exe = boost::dll::program_location(ec);
  if (!ec) {
    auto bin = exe.parent_path();
    for (auto d : {bin / "plugins", bin.parent_path() / "lib" / "groklab" / "plugins"}) {
      struct stat st;
      if (::stat(d.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) dirs.push_back(absolute(d.string()));
    }
  }
  if (const char* env = std::getenv("GROKLAB_PLUGIN_PATH")) {
    std::string s = env;
    size_t start = 0;
    while (start <= s.size()) {
      size_t end = s.find(':', start);
      if (end == std::string::npos) end = s.size();
      std::string d = s.substr(start, end - start);
      if (!d.empty() && std::find(dirs.begin(), dirs.end(), absolute(d)) == dirs.end())
        dirs.push_back(d);
      start = end + 1;
    }
  }
  return dirs;
}

void PluginHost::load_default_paths() {
  for (const auto& d : default_search_path()) load_directory(d);
}

void PluginHost::fail(const std::string& path, std::string reason) {
  logger()->warn("plugin {}: {}", path, reason);
  broken_.push_back({path, std::move(reason)});
}

int PluginHost::load_directory(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    int err = errno;
    fail(dir, std::string("plugin directory cannot be read: ") + std::strerror(err));
    return 0;
  }
  std::vector<std::string> files;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (ends_with(name, ".so")) files.push_back(name);
  }
  ::closedir(d);
  std::sort(files.begin(), files.end());
  int loaded = 0;
  for (const auto& f : files) loaded += load_library(dir + "/" + f) ? 1 : 0;
  return loaded;
}

bool PluginHost::load_library(const std::string& given_path) {
  const std::string path = absolute(given_path);
  if (std::find(seen_.begin(), seen_.end(), path) != seen_.end()) return false;
  seen_.push_back(path);

  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    int err = errno;
    fail(path, std::string("cannot stat: ") + std::strerror(err));
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    fail(path, "not a regular file");
    return false;
  }

  // Hash before loading, so the ledger records exactly the bytes we ran.
  std::string hash;
  try {
    hash = ledger::hash_file(path);
  } catch (const std::exception& e) {
    fail(path, e.what());
    return false;
  }

  namespace dll = boost::dll;
  const auto mode = static_cast<dll::load_mode::type>(RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  dll::fs::error_code ec;
  ::dlerror();
  dll::shared_library lib(path, mode, ec);
  if (ec || !lib.is_loaded()) {
    const char* why = ::dlerror();
    fail(path, std::string("not a loadable shared library: ") + (why ? why : ec.message()));
    return false;
  }
  {
    // From here on the library is mapped; keep it mapped whatever happens.
    std::lock_guard<std::mutex> g(keep_alive_mutex());
    keep_alive().push_back(lib);
  }
  if (!lib.has(GROKLAB_PLUGIN_ENTRY_SYMBOL)) {
    fail(path, std::string("no entry symbol '") + GROKLAB_PLUGIN_ENTRY_SYMBOL +
                   "' (not a groklab plugin, or not built with GROKLAB_PLUGIN)");
    return false;
  }
  auto entry = lib.get<const groklab_plugin_descriptor*()>(GROKLAB_PLUGIN_ENTRY_SYMBOL);
  const groklab_plugin_descriptor* d = entry();
  if (d == nullptr) {
    fail(path, "entry point returned no descriptor");
    return false;
  }
  // The first two fields are stable across every ABI version: check them
  // before reading anything else.
  if (d->abi_version != GROKLAB_PLUGIN_ABI_VERSION) {
    fail(path, "plugin ABI version " + std::to_string(d->abi_version) + ", host expects " +
                   std::to_string(GROKLAB_PLUGIN_ABI_VERSION) + " (rebuild the plugin against this groklab)");
    return false;
  }
  if (d->struct_size < sizeof(groklab_plugin_descriptor)) {
    fail(path, "descriptor size " + std::to_string(d->struct_size) + " bytes, host expects at least " +
                   std::to_string(sizeof(groklab_plugin_descriptor)));
    return false;
  }
  if (d->name == nullptr || d->name[0] == '\0' || d->version == nullptr) {
    fail(path, "descriptor has no library name or version");
    return false;
  }
  if (str(d->torch_version) != TORCH_VERSION) {
    fail(path, "built against LibTorch " + str(d->torch_version) + ", host uses " TORCH_VERSION);
    return false;
  }
  if (str(d->cxx_abi) != GROKLAB_CXX_ABI_TAG) {
    fail(path, "C++ ABI " + str(d->cxx_abi) + ", host uses " GROKLAB_CXX_ABI_TAG);
    return false;
  }
  if (d->register_components == nullptr) {
    fail(path, "descriptor has no register function");
    return false;
  }
  if ((d->kinds & ~0xFu) != 0 || d->kinds == 0) {
    fail(path, "descriptor declares unknown component kinds (bits " + std::to_string(d->kinds) + ")");
    return false;
  }
  if (str(d->compiler) != GROKLAB_COMPILER_TAG)
    logger()->debug("plugin {} was built with {}, host with {}", path, str(d->compiler),
                    GROKLAB_COMPILER_TAG);

  auto info = std::make_shared<LibraryInfo>();
  info->name = d->name;
  info->version = d->version;
  info->path = path;
  info->hash = hash;
  info->torch_version = str(d->torch_version);
  info->compiler = str(d->compiler);
  info->cxx_abi = str(d->cxx_abi);

  Registrar registrar(d->kinds);
  char error[1024] = {0};
  if (d->register_components(&registrar, error, sizeof error) != 0) {
    fail(path, std::string("register function failed: ") + (error[0] ? error : "no message"));
    return false;
  }
  auto components = registrar.take();
  if (components.empty()) {
    fail(path, "registered no components");
    return false;
  }
  for (auto& c : components) c.library = info;
  std::string dup = registry_.add_all(std::move(components));
  if (!dup.empty()) {
    fail(path, dup + "; none of its components were registered");
    return false;
  }
  libraries_.push_back(info);
  logger()->debug("loaded plugin {} {} from {}", info->name, info->version, path);
  return true;
}

}  // namespace groklab

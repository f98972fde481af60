#include "groklab/environment.h"

#include <dlfcn.h>
#include <link.h>
#include <stdlib.h>

#include <climits>
#include <string>

namespace groklab {
namespace {

int find_blas(dl_phdr_info* info, size_t, void* out) {
  std::string name = info->dlpi_name ? info->dlpi_name : "";
  auto slash = name.rfind('/');
  std::string base = slash == std::string::npos ? name : name.substr(slash + 1);
  if (base.rfind("libblas.so", 0) == 0 || base.rfind("libopenblas", 0) == 0) {
    *static_cast<std::string*>(out) = name;
    return 1;
  }
  return 0;
}

}  // namespace

BlasInfo detect_blas() {
  BlasInfo b;
  std::string loaded;
  dl_iterate_phdr(find_blas, &loaded);
  if (!loaded.empty()) {
    char buf[PATH_MAX];
    b.path = ::realpath(loaded.c_str(), buf) ? buf : loaded;
  }
  using str_fn = char* (*)();
  auto config = reinterpret_cast<str_fn>(::dlsym(RTLD_DEFAULT, "openblas_get_config"));
  auto core = reinterpret_cast<str_fn>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (config != nullptr) {
    b.vendor = "OpenBLAS";
    b.version = config();
    if (core != nullptr) b.core = core();
  } else if (b.path.find("/blas/") != std::string::npos || b.path.find("refblas") != std::string::npos) {
    b.vendor = "reference";
  } else {
    b.vendor = b.path.empty() ? "none" : "unknown";
  }
  return b;
}

std::string describe(const BlasInfo& b) {
  std::string s = b.vendor;
  if (!b.version.empty()) s += " (" + b.version + ")";
  if (!b.core.empty()) s += " core " + b.core;
  if (!b.path.empty()) s += ", " + b.path;
  return s;
}

}  // namespace groklab

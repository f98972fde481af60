// Facts about the machine and libraries a run depends on for bit-exactness.
#pragma once

#include <string>

#include "groklab/export.h"

namespace groklab {

// The BLAS library LibTorch actually calls in this process.
struct BlasInfo {
  std::string path;     // resolved file of the loaded BLAS library ("" if none found)
  std::string vendor;   // "OpenBLAS", "reference", or "unknown"
  std::string version;  // OpenBLAS config string (version, threading, core), if OpenBLAS
  std::string core;     // OpenBLAS kernel core name (e.g. "Haswell", "SkylakeX")
  bool slow() const { return vendor == "reference"; }
};

// Inspects the loaded libraries and OpenBLAS's own API.
GROKLAB_API BlasInfo detect_blas();

// Returns e.g. "OpenBLAS (OpenBLAS 0.3.21 ... ) core Haswell, /usr/lib/.../libblas.so.3".
GROKLAB_API std::string describe(const BlasInfo& b);

}  // namespace groklab

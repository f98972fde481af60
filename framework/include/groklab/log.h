// The one groklab logger, shared by the host and every plugin (plugins must
// log through it, not through a logger of their own).
#pragma once

#include <memory>

#include <spdlog/logger.h>

#include "groklab/export.h"

namespace groklab {

// Returns the process-wide logger "groklab" (stderr, created on first use).
GROKLAB_API std::shared_ptr<spdlog::logger> logger();

}  // namespace groklab

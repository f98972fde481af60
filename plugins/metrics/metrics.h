// Registration functions of the built-in metric components.
#pragma once

#include "groklab/registry.h"

namespace groklab::metrics {

// Adds `accuracy`, `loss` and `weight_norm`.
void register_evaluation(Registrar& r);

}  // namespace groklab::metrics

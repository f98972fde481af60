// Registration functions of the built-in architecture components.
#pragma once

#include "groklab/registry.h"

namespace groklab::architectures {

// Adds `transformer`.
void register_transformer(Registrar& r);

}  // namespace groklab::architectures

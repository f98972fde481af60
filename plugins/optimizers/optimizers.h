// Registration functions of the built-in optimizer components.
#pragma once

#include "groklab/registry.h"

namespace groklab::optimizers {

// Adds `adamw`, `adam` and `sgd`.
void register_adam_sgd(Registrar& r);

}  // namespace groklab::optimizers

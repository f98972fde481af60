// The built-in optimizer library.
#include "groklab/plugin.h"
#include "optimizers.h"

GROKLAB_PLUGIN(groklab_optimizers, "0.1.0", GROKLAB_KIND_OPTIMIZER, registrar) {
  groklab::optimizers::register_adam_sgd(registrar);
}

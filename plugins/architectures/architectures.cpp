// The built-in architecture library.
#include "architectures.h"
#include "groklab/plugin.h"

GROKLAB_PLUGIN(groklab_architectures, "0.1.0", GROKLAB_KIND_ARCHITECTURE, registrar) {
  groklab::architectures::register_transformer(registrar);
}

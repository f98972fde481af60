// The built-in task library.
#include "groklab/plugin.h"
#include "tasks.h"

GROKLAB_PLUGIN(groklab_tasks, "0.1.0", GROKLAB_KIND_TASK, registrar) {
  groklab::tasks::register_modular_arithmetic(registrar);
  groklab::tasks::register_mccoy(registrar);
  groklab::tasks::register_dyck(registrar);
  groklab::tasks::register_random_tokens(registrar);
}

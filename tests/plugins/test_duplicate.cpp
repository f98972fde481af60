// Registers task "test_copy", which test_components already provides, plus a
// unique one: the host must register neither.
#include "groklab/components.h"
#include "groklab/plugin.h"

GROKLAB_PLUGIN(test_duplicate, "0.0.1", GROKLAB_KIND_TASK, r) {
  r.add_task("test_unique_from_duplicate", "never registered", groklab::Schema(),
             [](const groklab::Params&) -> std::shared_ptr<groklab::Task> { return nullptr; });
  r.add_task("test_copy", "a second copy task", groklab::Schema(),
             [](const groklab::Params&) -> std::shared_ptr<groklab::Task> { return nullptr; });
}

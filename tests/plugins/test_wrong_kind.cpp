// Declares only metrics but registers an optimizer.
#include "groklab/components.h"
#include "groklab/plugin.h"

GROKLAB_PLUGIN(test_wrong_kind, "0.0.1", GROKLAB_KIND_METRIC, r) {
  r.add_optimizer("test_sneaky", "not declared", groklab::Schema(),
                  [](const groklab::Params&) -> std::shared_ptr<groklab::Optimizer> { return nullptr; });
}

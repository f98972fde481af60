// Its register function throws after adding a component: the exception must
// not cross the C boundary and nothing may be registered.
#include <stdexcept>

#include "groklab/components.h"
#include "groklab/plugin.h"

GROKLAB_PLUGIN(test_throws, "0.0.1", GROKLAB_KIND_METRIC, r) {
  r.add_metric("test_never_registered", "never registered", groklab::Schema(),
               [](const groklab::Params&) -> std::shared_ptr<groklab::Metric> { return nullptr; });
  throw std::runtime_error("deliberate failure in test_throws");
}

// An out-of-tree metric plugin: the number of parameter tensors of a model.
#include "groklab/components.h"
#include "groklab/plugin.h"

namespace {

class TensorCount final : public groklab::Metric {
 public:
  std::map<std::string, double> evaluate(const groklab::EvalContext& ctx) override {
    return {{"tensors", static_cast<double>(ctx.model->parameters().size())}};
  }
};

}  // namespace

GROKLAB_PLUGIN(oot_plugin, "0.0.7", GROKLAB_KIND_METRIC, registrar) {
  registrar.add_metric("oot_tensor_count", "number of parameter tensors (built out of tree)",
                       groklab::Schema(),
                       [](const groklab::Params&) { return std::make_shared<TensorCount>(); });
}

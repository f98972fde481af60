// The built-in metric library.
#include "groklab/plugin.h"
#include "metrics.h"

GROKLAB_PLUGIN(groklab_metrics, "0.1.0", GROKLAB_KIND_METRIC, registrar) {
  groklab::metrics::register_evaluation(registrar);
  groklab::metrics::register_attention(registrar);
  groklab::metrics::register_spectral(registrar);
  groklab::metrics::register_tree(registrar);
  groklab::metrics::register_training(registrar);
  groklab::metrics::register_heuristic_core(registrar);
  groklab::metrics::register_ntk(registrar);
}

// A descriptor from a future ABI: written by hand, as no macro would.
#include "groklab/plugin.h"

namespace {
int never_called(void*, char*, size_t) { return 0; }
}  // namespace

extern "C" GROKLAB_API const groklab_plugin_descriptor* groklab_plugin_entry(void) {
  static const groklab_plugin_descriptor d = {
      GROKLAB_PLUGIN_ABI_VERSION + 41, sizeof(groklab_plugin_descriptor), "test_bad_abi", "9.9.9",
      GROKLAB_KIND_TASK, TORCH_VERSION, GROKLAB_COMPILER_TAG, GROKLAB_CXX_ABI_TAG, &never_called,
      {nullptr, nullptr, nullptr, nullptr}};
  return &d;
}

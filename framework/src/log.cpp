#include "groklab/log.h"

#include <mutex>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace groklab {

std::shared_ptr<spdlog::logger> logger() {
  static std::once_flag once;
  static std::shared_ptr<spdlog::logger> log;
  std::call_once(once, [] {
    log = spdlog::get("groklab");
    if (!log) {
      log = spdlog::stderr_color_mt("groklab");
      log->set_pattern("[%H:%M:%S] %^%l%$ %v");
    }
  });
  return log;
}

}  // namespace groklab

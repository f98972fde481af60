// The CMake package: install groklab, build a plugin out of tree with
// find_package(groklab) + groklab_add_plugin, and load it with the installed host.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "support.h"

namespace fs = std::filesystem;
using groklab::test::run_command;

TEST_CASE("an out-of-tree plugin builds against the installed package and loads", "[packaging]") {
  const fs::path work = fs::temp_directory_path() / ("groklab-oot-" + std::to_string(::getpid()));
  fs::remove_all(work);
  const fs::path prefix = work / "prefix";
  const fs::path build = work / "build";
  const std::string cmake = GROKLAB_CMAKE_COMMAND;
  auto step = [](const std::string& cmd) {
    std::string out;
    if (run_command(cmd, out) != 0) FAIL("command failed: " << cmd << "\n" << out);
    return out;
  };

  step(cmake + " --install " GROKLAB_BUILD_DIR " --prefix " + prefix.string());
  REQUIRE(fs::exists(prefix / "bin" / "groklab"));
  step(cmake + " -S " GROKLAB_SOURCE_DIR "/tests/out_of_tree -B " + build.string() +
       " -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=" + prefix.string());
  step(cmake + " --build " + build.string());
  REQUIRE(fs::exists(build / "liboot_plugin.so"));

  const std::string host = (prefix / "bin" / "groklab").string();
  std::string out = step("GROKLAB_PLUGIN_PATH=" + build.string() + " " + host + " -q plugins");
  INFO(out);
  CHECK(out.find("oot_tensor_count") != std::string::npos);
  CHECK(out.find("oot_plugin") != std::string::npos);
  // The installed host also finds the installed built-in plugins.
  CHECK(out.find("modular_arithmetic") != std::string::npos);
  CHECK(out.find("failed to load") == std::string::npos);
  fs::remove_all(work);
}

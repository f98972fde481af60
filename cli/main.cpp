// groklab: the command-line host.
#include <cstdio>
#include <exception>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "groklab/environment.h"
#include "groklab/log.h"

int main(int argc, char** argv) {
  CLI::App app{"groklab: reproducible grokking experiments (plugins, TOML manifests, LibTorch, a hash-chained ledger)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", GROKLAB_VERSION);
  int verbosity = 0;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbosity, "Debug log output");
  app.add_flag("-q,--quiet", quiet, "Only warnings and errors");
  bool started = false;
  app.parse_complete_callback([&] {
    if (started) return;  // subcommands inherit this callback: run it once
    started = true;
    auto log = groklab::logger();
    log->set_level(quiet ? spdlog::level::warn
                         : verbosity >= 1 ? spdlog::level::debug
                                          : spdlog::level::info);
    // Which BLAS LibTorch really calls decides speed (reference BLAS is ~16x
    // slower) and bit-exactness, so the host says it at every start.
    auto blas = groklab::detect_blas();
    if (blas.slow() || blas.vendor == "none")
      log->warn("BLAS: {} — install libopenblas0-openmp (reference BLAS is ~16x slower)",
                groklab::describe(blas));
    else
      log->info("BLAS: {}", groklab::describe(blas));
  });

  groklab::cli::add_plugins_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const groklab::cli::Exit& e) {
    return e.code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "groklab: %s\n", e.what());
    return 1;
  }
  return 0;
}

// groklab: the command-line host.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "groklab/environment.h"
#include "groklab/log.h"
#include "groklab/manifest.h"

int main(int argc, char** argv) {
  CLI::App app{"groklab: reproducible grokking experiments (plugins, TOML manifests, LibTorch, a hash-chained ledger)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", GROKLAB_VERSION);
  // Global flags come before the subcommand; they are read here, ahead of
  // parsing, because the host logs its start-up facts before any command runs.
  int verbosity = 0;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbosity, "Debug log output");
  app.add_flag("-q,--quiet", quiet, "Only warnings and errors");
  bool help = false;
  for (int i = 1; i < argc && argv[i][0] == '-'; ++i) {
    const std::string a = argv[i];
    if (a == "-q" || a == "--quiet") quiet = true;
    if (a == "-v" || a == "--verbose") verbosity = 1;
    if (a == "-h" || a == "--help" || a == "--version") help = true;
  }
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") help = true;
  auto log = groklab::logger();
  log->set_level(quiet ? spdlog::level::warn : verbosity >= 1 ? spdlog::level::debug : spdlog::level::info);
  if (!help) {
    // Which BLAS LibTorch really calls decides speed (reference BLAS is ~16x
    // slower) and bit-exactness, so the host says it at every start.
    auto blas = groklab::detect_blas();
    if (blas.slow() || blas.vendor == "none")
      log->warn("BLAS: {} — install libopenblas0-openmp (reference BLAS is ~16x slower)",
                groklab::describe(blas));
    else
      log->info("BLAS: {}", groklab::describe(blas));
  }

  groklab::cli::add_plugins_command(app);
  groklab::cli::add_compose_command(app);
  groklab::cli::add_run_command(app);
  groklab::cli::add_ledger_command(app);
  groklab::cli::add_data_command(app);
  groklab::cli::add_report_command(app);
  groklab::cli::add_sweep_command(app);
  groklab::cli::add_bench_command(app);
  groklab::cli::add_bench_metrics_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const groklab::cli::Exit& e) {
    return e.code;
  } catch (const groklab::ManifestErrors& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "groklab: %s\n", e.what());
    return 1;
  }
  return 0;
}

// groklab data generate TASK --size N --seed S [-o FILE] [--structure S] [--data-dir DIR]
// groklab data check TASK FILE... [--train] [--data-dir DIR]
//
// Training data of the McCoy et al. (2020) tasks (question_formation,
// tense_inflection): `generate` writes exactly the lines the task's
// train_source = "generated" uses for train_size = N and data-split seed S;
// `check` parses every line with the task's grammar and checks its
// transformation (and, with --train, McCoy's training-set ambiguity).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "mccoy_data.h"

namespace groklab::cli {
namespace {

struct DataArgs {
  std::string task;
  std::string data_dir;
  size_t size = 100000;
  uint64_t seed = 0;
  std::string output;
  std::string structure = "empirical";
  std::vector<std::string> files;
  bool train = false;
};

void generate(const DataArgs& a) {
  const auto kind = mccoy::kind_named(a.task);
  const auto t0 = std::chrono::steady_clock::now();
  mccoy::Data data(kind, mccoy::find_data_dir(a.data_dir, kind));
  const auto lines = data.generate(a.size, a.seed, mccoy::structure_named(a.structure));
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  if (a.output.empty() || a.output == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
  } else {
    std::ofstream out(a.output, std::ios::binary);
    out << text;
    if (!out.flush()) {
      std::fprintf(stderr, "groklab: cannot write %s\n", a.output.c_str());
      throw Exit{1};
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "generated %zu %s lines (seed %llu, %s structure) in %.2f s\n", lines.size(),
               a.task.c_str(), static_cast<unsigned long long>(a.seed), a.structure.c_str(), s);
}

void check(const DataArgs& a) {
  const auto kind = mccoy::kind_named(a.task);
  mccoy::Data data(kind, mccoy::find_data_dir(a.data_dir, kind));
  size_t bad = 0;
  for (const auto& f : a.files) {
    std::ifstream in(f);
    if (!in) {
      std::fprintf(stderr, "groklab: cannot read %s\n", f.c_str());
      throw Exit{1};
    }
    std::string line;
    size_t n = 0, file_bad = 0;
    while (std::getline(in, line)) {
      ++n;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const std::string why = data.check(line, a.train);
      if (why.empty()) continue;
      if (++file_bad <= 20) std::printf("%s:%zu: %s\n", f.c_str(), n, why.c_str());
    }
    if (n == 0) {
      std::printf("%s: empty\n", f.c_str());
      ++file_bad;
    }
    if (file_bad > 20) std::printf("%s: … %zu more\n", f.c_str(), file_bad - 20);
    std::printf("%s: %zu lines, %zu bad\n", f.c_str(), n, file_bad);
    bad += file_bad;
  }
  if (bad > 0) throw Exit{1};
}

}  // namespace

void add_data_command(CLI::App& app) {
  auto* data = app.add_subcommand("data", "Training data of the question_formation / tense_inflection tasks");
  data->require_subcommand(1);
  auto a = std::make_shared<DataArgs>();
  const std::vector<std::string> tasks{"question_formation", "tense_inflection"};

  auto* gen = data->add_subcommand("generate", "Generate training lines from the task's grammar (deterministic)");
  gen->add_option("task", a->task, "question_formation or tense_inflection")->required()->check(CLI::IsMember(tasks));
  gen->add_option("--size", a->size, "number of distinct lines (default 100000)")->check(CLI::Range(1, 10000000));
  gen->add_option("--seed", a->seed, "seed (the task's data-split seed reproduces its train split)");
  gen->add_option("-o,--output", a->output, "output file (default: stdout)");
  gen->add_option("--structure", a->structure, "empirical (McCoy's data frequencies) or pcfg")
      ->check(CLI::IsMember({"empirical", "pcfg"}));
  gen->add_option("--data-dir", a->data_dir, "directory holding question_formation/ and tense_inflection/");
  gen->callback([a] { generate(*a); });

  auto* chk = data->add_subcommand("check", "Parse every line with the grammar and check its transformation");
  chk->add_option("task", a->task, "question_formation or tense_inflection")->required()->check(CLI::IsMember(tasks));
  chk->add_option("files", a->files, "data files (McCoy's TAB format)")->required();
  chk->add_flag("--train", a->train, "also require McCoy's training-set ambiguity");
  chk->add_option("--data-dir", a->data_dir, "directory holding question_formation/ and tense_inflection/");
  chk->callback([a] { check(*a); });
}

}  // namespace groklab::cli

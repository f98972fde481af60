// groklab bench-metrics [MANIFEST [key=value …]] [--steps N] [--warmup W]
//                       [--add NAME[:EVERY] …] [--json FILE]
//
// What each metric of a manifest costs as a fraction of training time at its
// cadence (issue 7, "Cost"): the trainer times N training steps (after W
// untimed ones, without metrics), then every metric's evaluate() is timed
// once on the model those steps produced, and
//   cost fraction = (evaluation seconds / every) / (seconds per step).
// Without a manifest: the default grokking experiment and the Question
// Formation structural-grokking preset at a small width (d 128, 4 heads, FF
// 512, its first sweep child), each with heuristic_core added at ten
// checkpoints of the run (every run.steps / 10) and ntk_distance at the
// manifest's largest metric cadence. A benchmark, not a test.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "common.h"
#include "groklab/components.h"
#include "groklab/manifest.h"
#include "groklab/trainer.h"

namespace groklab::cli {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct BenchMetricsArgs {
  std::vector<std::string> manifest;  // path, then key=value overrides
  int64_t steps = 20, warmup = 2;
  std::vector<std::string> add;  // NAME[:EVERY]
  std::string json_path;
};

// One configuration to measure.
struct Case {
  std::string name;
  ResolvedConfig config;
  std::vector<std::string> add;
};

// The first configuration of a manifest (its first sweep child, if it sweeps).
ResolvedConfig first_config(const PluginHost& host, const std::string& path, const std::vector<std::string>& overrides,
                            std::string& varied) {
  Composer composer(host.registry());
  auto children = composer.expand(path, overrides);
  if (children.empty()) throw std::runtime_error(path + ": no configuration");
  for (const auto& [key, value] : children.front().varied) varied += " " + key + "=" + value.canonical();
  const ResolvedConfig& config = children.front().config;
  if (config.run.ensemble <= 1) return config;
  varied += " (member 0 of run.ensemble = " + std::to_string(config.run.ensemble) + ")";
  return Trainer::member_config(config, 0);  // its cost per member is a single run's
}

// A metric's configuration from its schema defaults, with `every` set.
ComponentConfig metric_config(const PluginHost& host, const std::string& spec, int64_t default_every) {
  const auto colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  const Component* c = host.registry().find(Kind::Metric, name);
  if (c == nullptr) throw std::runtime_error("--add: no metric '" + name + "'");
  std::map<std::string, Value> values;
  for (const auto& p : c->schema.params()) {
    if (!p.default_value) throw std::runtime_error("--add: metric '" + name + "' needs parameter " + p.name);
    values[p.name] = *p.default_value;
  }
  int64_t every = default_every;
  if (colon != std::string::npos) {
    const std::string text = spec.substr(colon + 1);
    size_t used = 0;
    try {
      every = std::stoll(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size() || every < 1)
      throw std::runtime_error("--add " + spec + ": expected NAME:EVERY with EVERY a whole number of steps >= 1, got '" +
                               text + "'");
  }
  values["every"] = Value(every);
  return {name, Params(values)};
}

int64_t every_of(const ComponentConfig& m, const RunConfig& run) {
  const int64_t every = m.params.has("every") ? m.params.get_int("every") : 0;
  return every > 0 ? every : run.eval_every;
}

// The seconds per training step of the config without metrics.
double step_seconds(const ResolvedConfig& config, const PluginHost& host, int64_t steps, int64_t warmup,
                    std::string& checkpoint) {
  ResolvedConfig train = config;
  train.metrics.clear();
  train.run.steps = warmup + steps;
  train.run.eval_every = warmup + steps;
  train.run.checkpoint_every = 0;
  train.run.stop_metric.clear();
  Trainer trainer(train, host.registry());
  StepClock timer(warmup);
  trainer.run(timer);
  checkpoint = timer.checkpoint;
  return timer.seconds() / static_cast<double>(steps);
}

// The model the timed training produced, with what metrics see during a run.
struct Trained {
  std::shared_ptr<Task> task;
  std::shared_ptr<Model> model;
  TensorMap initial, before, gradients;
  Seeds seeds;
};

Trained rebuild(const ResolvedConfig& config, const PluginHost& host, const std::string& checkpoint) {
  Trained t;
  const Registry& reg = host.registry();
  t.seeds = derive_seeds(config.run.seed, config.run.seed_streams);
  t.task = reg.find(Kind::Task, config.task.plugin)->make_task(config.task.params);
  t.task->prepare(t.seeds.split);
  auto arch = reg.find(Kind::Architecture, config.architecture.plugin)->make_architecture(config.architecture.params);
  torch::manual_seed(t.seeds.init);
  t.model = arch->build(t.task->spec());
  t.model->to(torch::Device(config.run.device));
  torch::NoGradGuard no_grad;
  for (const auto& p : t.model->named_parameters(true)) t.initial[p.key()] = p.value().detach().clone();
  std::vector<char> data(checkpoint.begin(), checkpoint.end());
  const auto saved = torch::pickle_load(data).toGenericDict().at("model").toGenericDict();
  for (auto& p : t.model->named_parameters(true)) p.value().copy_(saved.at(p.key()).toTensor());
  for (auto& b : t.model->named_buffers(true)) b.value().copy_(saved.at(b.key()).toTensor());
  // One training-loss gradient (grad_norm, update_norm): a batch of the run's size.
  const std::string train = t.task->splits().front();
  const int64_t bs = config.run.batch_size > 0 ? std::min(config.run.batch_size, t.task->size(train)) : t.task->size(train);
  const Batch b = t.task->batch(train, torch::arange(bs, torch::kLong));
  {
    torch::AutoGradMode grad(true);
    const torch::Tensor logits = t.model->forward(b.inputs);
    const int64_t L = logits.size(1), T = b.targets.size(1);
    torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(2)}).to(torch::kDouble),
                                         b.targets.narrow(1, T - L, L).reshape({-1}),
                                         torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1))
        .backward();
  }
  for (auto& p : t.model->named_parameters(true)) {
    t.before[p.key()] = p.value().detach().clone();
    if (p.value().grad().defined()) {
      t.gradients[p.key()] = p.value().grad().detach().clone();
      p.value().mutable_grad() = torch::Tensor();
    }
  }
  return t;
}

json measure(const Case& c, const PluginHost& host, const BenchMetricsArgs& args) {
  std::string checkpoint;
  const double step_s = step_seconds(c.config, host, args.steps, args.warmup, checkpoint);
  Trained t = rebuild(c.config, host, checkpoint);
  std::vector<ComponentConfig> metrics = c.config.metrics;
  int64_t largest = c.config.run.eval_every;
  for (const auto& m : metrics) largest = std::max(largest, every_of(m, c.config.run));
  for (const auto& spec : c.add) metrics.push_back(metric_config(host, spec, largest));

  json rows = json::array();
  double total = 0;
  for (size_t i = 0; i < metrics.size(); ++i) {
    const ComponentConfig& mc = metrics[i];
    const int64_t every = every_of(mc, c.config.run);
    json row{{"metric", mc.plugin}, {"index", i}, {"every", every}};
    try {
      auto metric = host.registry().find(Kind::Metric, mc.plugin)->make_metric(mc.params);
      EvalContext ctx;
      ctx.model = t.model.get();
      ctx.task = t.task.get();
      ctx.step = every;
      ctx.seed = Trainer::metric_seed(t.seeds.metric, every);
      ctx.params_before = &t.before;
      ctx.gradients = &t.gradients;
      ctx.initial_params = &t.initial;
      torch::NoGradGuard no_grad;  // as the trainer calls metrics
      t.model->eval();
      // The second evaluation is timed: a metric may build what it keeps on
      // its first (ntk_distance's K₀), which a run pays once, not every time.
      metric->evaluate(ctx);
      const auto start = Clock::now();
      const auto values = metric->evaluate(ctx);
      const double eval_s = std::chrono::duration<double>(Clock::now() - start).count();
      const double fraction = eval_s / static_cast<double>(every) / step_s;
      total += fraction;
      row["eval_seconds"] = eval_s;
      row["fraction"] = fraction;
      row["keys"] = values.size();
    } catch (const std::exception& e) {
      row["error"] = e.what();
    }
    rows.push_back(row);
  }
  return {{"name", c.name}, {"config_hash", c.config.hash()}, {"step_seconds", step_s}, {"steps", args.steps},
          {"metrics", rows}, {"total_fraction", total}};
}

void print(const json& r) {
  std::printf("%s: %.4f s/step (%lld timed steps), metrics at their cadence:\n", r["name"].get<std::string>().c_str(),
              r["step_seconds"].get<double>(), static_cast<long long>(r["steps"].get<int64_t>()));
  std::printf("  %-24s %7s %12s %10s\n", "metric", "every", "eval", "of training");
  for (const auto& m : r["metrics"]) {
    const std::string name = std::to_string(m["index"].get<int64_t>()) + " " + m["metric"].get<std::string>();
    if (m.contains("error")) {
      std::printf("  %-24s %7lld  error: %s\n", name.c_str(), static_cast<long long>(m["every"].get<int64_t>()),
                  m["error"].get<std::string>().c_str());
      continue;
    }
    std::printf("  %-24s %7lld %10.4f s %9.3f%%\n", name.c_str(), static_cast<long long>(m["every"].get<int64_t>()),
                m["eval_seconds"].get<double>(), 100.0 * m["fraction"].get<double>());
  }
  std::printf("  %-24s %7s %12s %9.3f%%\n", "all metrics", "", "", 100.0 * r["total_fraction"].get<double>());
}

void bench_metrics(const BenchMetricsArgs& args) {
  PluginHost host;
  load_plugins(host);
  std::vector<Case> cases;
  if (!args.manifest.empty()) {
    std::string varied;
    const std::vector<std::string> overrides(args.manifest.begin() + 1, args.manifest.end());
    cases.push_back({args.manifest.front(), first_config(host, args.manifest.front(), overrides, varied), args.add});
    cases.back().name += varied;
  } else {
    const std::string root = GROKLAB_SOURCE_DIR;
    std::string varied;
    cases.push_back({"default (modadd_mlp_pre)",
                     first_config(host, root + "/manifests/grokking/modadd_mlp_pre.toml", {}, varied), args.add});
    varied.clear();
    ResolvedConfig qf = first_config(host, root + "/manifests/structural_grokking/question_formation_depth_sweep.toml",
                                     {"architecture.d_model=128", "architecture.heads=4", "architecture.d_ff=512"}, varied);
    cases.push_back({"question_formation d128" + varied, qf, args.add});
    // Without --add: heuristic_core at ten checkpoints of the run, ntk_distance
    // at the manifest's largest cadence.
    for (Case& c : cases)
      if (c.add.empty())
        c.add = {"heuristic_core:" + std::to_string(std::max<int64_t>(c.config.run.steps / 10, 1)), "ntk_distance"};
  }
  json out = json::array();
  for (const Case& c : cases) {
    set_threads(c.config.run.threads);
    out.push_back(measure(c, host, args));
    print(out.back());
  }
  if (!args.json_path.empty()) {
    std::ofstream f(args.json_path);
    f << json{{"configs", out}}.dump(2) << "\n";
    if (!f) throw std::runtime_error("cannot write " + args.json_path);
  }
}

}  // namespace

void add_bench_metrics_command(CLI::App& app) {
  auto args = std::make_shared<BenchMetricsArgs>();
  auto* cmd = app.add_subcommand("bench-metrics",
                                 "Each metric's cost as a fraction of training time at its cadence (a benchmark)");
  cmd->add_option("manifest", args->manifest,
                  "MANIFEST [key=value …] (default: the default experiment and Question Formation at d 128)");
  cmd->add_option("--steps", args->steps, "Timed training steps")->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", args->warmup, "Untimed training steps before them")->check(CLI::PositiveNumber);
  cmd->add_option("--add", args->add, "Also measure metric NAME (schema defaults) every EVERY steps: NAME[:EVERY]");
  cmd->add_option("--json", args->json_path, "Also write the results as JSON to this file");
  cmd->callback([args] { bench_metrics(*args); });
}

}  // namespace groklab::cli

#include "groklab/trainer.h"

#include <stdexcept>

#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>
#include <xxhash.h>

#include "groklab/components.h"
#include "groklab/ledger/hash.h"

namespace groklab {

TrainObserver::~TrainObserver() = default;

namespace {

constexpr const char* kCheckpointFormat = "groklab-checkpoint-1";

uint64_t stream_seed(uint64_t root, const char* name) {
  std::string key = std::to_string(root) + "/" + name;
  return XXH3_64bits(key.data(), key.size());
}

// Hash of one tensor: its name, dtype, shape and bytes (contiguous, CPU).
std::string tensor_hash(const std::string& name, const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU).contiguous();
  ledger::Hasher h;
  h.update(name);
  h.update("\0", 1);
  h.update(std::string(c10::toString(c.scalar_type())));
  for (int64_t d : c.sizes()) h.update(&d, sizeof d);
  h.update(c.data_ptr(), c.nbytes());
  return h.hex();
}

c10::impl::GenericDict to_dict(const TensorMap& m) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::TensorType::get());
  for (const auto& [k, v] : m) d.insert(k, v.detach().to(torch::kCPU).contiguous());
  return d;
}

TensorMap from_dict(const c10::IValue& v) {
  TensorMap m;
  for (const auto& e : v.toGenericDict()) m[e.key().toStringRef()] = e.value().toTensor();
  return m;
}

c10::impl::GenericDict load_checkpoint(const std::string& bytes) {
  std::vector<char> data(bytes.begin(), bytes.end());
  c10::IValue v = torch::pickle_load(data);
  if (!v.isGenericDict()) throw std::runtime_error("checkpoint: not a dict");
  auto d = v.toGenericDict();
  if (!d.contains("format") || d.at("format").toStringRef() != kCheckpointFormat)
    throw std::runtime_error(std::string("checkpoint: not a ") + kCheckpointFormat + " checkpoint");
  return d;
}

torch::Generator& default_generator() {
  static torch::Generator g = at::detail::getDefaultCPUGenerator();
  return g;
}

// A generator's state, read or written under its lock.
torch::Tensor generator_state(at::Generator g) {
  std::lock_guard<std::mutex> lock(g.mutex());
  return g.get_state();
}
void set_generator_state(at::Generator g, const torch::Tensor& state) {
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_state(state);
}

// The default generator of a CUDA device (dropout draws from it there).
at::Generator cuda_generator(const torch::Device& d) {
  return at::globalContext().defaultGenerator(d);
}

TensorMap to_device(TensorMap m, const torch::Device& d) {
  for (auto& [k, v] : m) v = v.to(d);
  return m;
}

// The device a run trains on; a clear error when this build or machine has none.
torch::Device training_device(const std::string& name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  const auto& cuda = at::detail::getCUDAHooks();
  const std::string what = "run.device = \"" + name + "\": ";
  if (!cuda.hasCUDART())
    throw std::runtime_error(what + "this groklab is built against a LibTorch without CUDA; rebuild it against "
                             "a CUDA-enabled LibTorch (docs/cuda.md) or train with run.device = \"cpu\"");
  torch::Device d(name);
  const int n = cuda.getNumGPUs();
  if (n == 0)
    throw std::runtime_error(what + "no CUDA GPU is visible to this process (check the driver, nvidia-smi and "
                             "CUDA_VISIBLE_DEVICES)");
  if (d.has_index() && d.index() >= n)
    throw std::runtime_error(what + "this machine has " + std::to_string(n) + " visible CUDA GPU" +
                             (n == 1 ? "" : "s") + " (cuda:0 … cuda:" + std::to_string(n - 1) + ")");
  return d.has_index() ? d : torch::Device(torch::kCUDA, 0);
}

void make_cuda_deterministic() {
  // cuBLAS is deterministic only with a fixed workspace (NVIDIA's cuBLAS docs);
  // the variable must be set before the first cuBLAS handle is made.
  ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
  at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  at::globalContext().setDeterministicCuDNN(true);
  at::globalContext().setBenchmarkCuDNN(false);
}

}  // namespace

Seeds derive_seeds(uint64_t root, const std::string& policy) {
  Seeds s;
  s.root = root;
  if (policy == "shared") {
    s.init = s.split = s.order = s.dropout = s.metric = root;
  } else if (policy == "derived") {
    s.init = stream_seed(root, "init");
    s.split = stream_seed(root, "split");
    s.order = stream_seed(root, "order");
    s.dropout = stream_seed(root, "dropout");
    s.metric = stream_seed(root, "metric");
  } else {
    throw std::invalid_argument("unknown seed policy '" + policy + "' (expected derived or shared)");
  }
  return s;
}

void set_threads(int64_t threads) {
  static bool interop_set = false;
  if (!interop_set) {
    interop_set = true;
    try {
      at::set_num_interop_threads(1);
    } catch (const std::exception&) {
      // Already fixed by earlier work in this process; intra-op is what matters.
    }
  }
  at::set_num_threads(static_cast<int>(threads));
}

struct Trainer::Impl {
  ResolvedConfig cfg;
  Seeds seeds;
  std::shared_ptr<Task> task;
  std::shared_ptr<Model> model;
  std::shared_ptr<Optimizer> optimizer;
  std::vector<std::shared_ptr<Metric>> metrics;
  std::string train_split;
  torch::Device device = torch::Device(torch::kCPU);  // where the model and batches live
  torch::Generator order_gen;
  torch::Tensor perm;  // current epoch's order (minibatches only)
  int64_t cursor = 0;  // next position in perm
  Batch full_batch;    // cached when training full-batch
  int64_t step = 0;
  bool loss_float64 = true;  // the training loss on logits cast to double (see trainer.h)
  std::vector<int64_t> metric_every;  // per metric, its `every` (0: run.eval_every)
  TensorMap params_before, gradients;  // at evaluated steps, before the update (EvalContext)

  TensorMap model_state() const {
    TensorMap m;
    for (const auto& p : model->named_parameters(true)) m[p.key()] = p.value();
    for (const auto& b : model->named_buffers(true)) m[b.key()] = b.value();
    return m;
  }

  Batch next_batch() {
    const int64_t n = task->size(train_split);
    const int64_t bs = cfg.run.batch_size;
    if (bs == 0 || bs >= n) {
      if (!full_batch.inputs.defined()) full_batch = on_device(task->batch(train_split, torch::arange(n)));
      return full_batch;
    }
    if (!perm.defined() || cursor + bs > n) {
      perm = torch::randperm(n, order_gen, torch::kLong);
      cursor = 0;
    }
    auto idx = perm.narrow(0, cursor, bs);
    cursor += bs;
    return on_device(task->batch(train_split, idx));
  }

  // Tasks make batches on the CPU (their order stream is a CPU generator).
  Batch on_device(Batch b) const {
    if (device.is_cpu()) return b;
    return {b.inputs.to(device), b.targets.to(device)};
  }

  // The generator states a run's bits depend on: torch's default (CPU) one
  // and, when training on CUDA, the device's (dropout draws from it there).
  std::vector<std::pair<std::string, torch::Tensor>> rng_states() const {
    std::vector<std::pair<std::string, torch::Tensor>> out = {{"torch_default", generator_state(default_generator())}};
    if (device.is_cuda()) out.emplace_back("cuda_default", generator_state(cuda_generator(device)));
    return out;
  }
  void set_rng_states(const std::vector<std::pair<std::string, torch::Tensor>>& states) {
    for (const auto& [name, state] : states)
      set_generator_state(name == "cuda_default" ? cuda_generator(device) : default_generator(), state);
  }

  // Whether metric i evaluates at this step (its cadence, or the last step).
  bool metric_due(size_t i, bool last_step) const {
    const int64_t every = metric_every[i] > 0 ? metric_every[i] : cfg.run.eval_every;
    return last_step || step % every == 0;
  }

  // Whether any evaluation happens at this step (eval_every when there are no metrics).
  bool eval_due(bool last_step) const {
    if (metrics.empty()) return last_step || step % cfg.run.eval_every == 0;
    for (size_t i = 0; i < metrics.size(); ++i)
      if (metric_due(i, last_step)) return true;
    return false;
  }

  // Runs the metrics due at this step; all_ran tells whether every metric ran.
  // Torch's default generator (the dropout stream) is restored afterwards, so
  // metrics cannot shift training.
  std::map<std::string, double> evaluate(bool last_step, bool& all_ran) {
    std::map<std::string, double> out;
    torch::NoGradGuard no_grad;
    model->eval();
    const auto rng = rng_states();
    all_ran = true;
    for (size_t i = 0; i < metrics.size(); ++i) {
      if (!metric_due(i, last_step)) {
        all_ran = false;
        continue;
      }
      EvalContext ctx;
      ctx.model = model.get();
      ctx.task = task.get();
      ctx.step = step;
      ctx.seed = seeds.metric ^ (static_cast<uint64_t>(step) * 0x9E3779B97F4A7C15ull);
      if (!params_before.empty()) {
        ctx.params_before = &params_before;
        ctx.gradients = &gradients;
      }
      for (const auto& [k, v] : metrics[i]->evaluate(ctx)) {
        if (!out.emplace(k, v).second)
          throw std::runtime_error("metrics." + std::to_string(i) + " (" + cfg.metrics[i].plugin +
                                   ") reports '" + k + "', which an earlier metric already reported");
      }
    }
    set_rng_states(rng);
    model->train();
    return out;
  }

  // Keeps this step's parameters and gradients (before the update) for the metrics.
  void snapshot_before_update() {
    params_before.clear();
    gradients.clear();
    torch::NoGradGuard no_grad;
    for (const auto& p : model->named_parameters(true)) {
      params_before[p.key()] = p.value().detach().clone();
      if (p.value().grad().defined()) gradients[p.key()] = p.value().grad().detach().clone();
    }
  }

  Checkpoint checkpoint() const {
    Checkpoint c;
    c.step = step;
    TensorMap state = model_state();
    ledger::Hasher all;
    for (const auto& [name, t] : state) {
      std::string h = tensor_hash(name, t);
      c.tensor_hashes.emplace_back(name, h);
      all.update(h);
    }
    c.params_hash = all.hex();

    c10::impl::GenericDict rng(c10::StringType::get(), c10::TensorType::get());
    for (const auto& [name, gen_state] : rng_states()) rng.insert(name, gen_state);
    rng.insert("order", order_gen.get_state());
    c10::impl::GenericDict data(c10::StringType::get(), c10::AnyType::get());
    data.insert("perm", perm.defined() ? perm : torch::empty({0}, torch::kLong));
    data.insert("cursor", cursor);
    c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
    d.insert("format", std::string(kCheckpointFormat));
    d.insert("step", step);
    d.insert("model", to_dict(state));
    d.insert("optimizer", to_dict(optimizer->state()));
    d.insert("rng", rng);
    d.insert("data", data);
    auto bytes = torch::pickle_save(d);
    c.bytes.assign(bytes.begin(), bytes.end());
    return c;
  }

  void restore(const std::string& bytes) {
    auto d = load_checkpoint(bytes);
    step = d.at("step").toInt();
    TensorMap saved = from_dict(d.at("model"));
    {
      torch::NoGradGuard no_grad;
      for (auto& [name, t] : model_state()) {
        auto it = saved.find(name);
        if (it == saved.end()) throw std::runtime_error("checkpoint has no tensor '" + name + "'");
        if (it->second.sizes() != t.sizes())
          throw std::runtime_error("checkpoint tensor '" + name + "' has a different shape");
        t.copy_(it->second);
      }
    }
    optimizer->load_state(to_device(from_dict(d.at("optimizer")), device));
    auto rng = d.at("rng").toGenericDict();
    std::vector<std::pair<std::string, torch::Tensor>> states = {{"torch_default", rng.at("torch_default").toTensor()}};
    if (device.is_cuda()) {
      if (!rng.contains("cuda_default"))
        throw std::runtime_error("checkpoint has no CUDA generator state: it was not written by a CUDA run");
      states.emplace_back("cuda_default", rng.at("cuda_default").toTensor());
    }
    set_rng_states(states);
    order_gen.set_state(rng.at("order").toTensor());
    auto data = d.at("data").toGenericDict();
    auto p = data.at("perm").toTensor();
    perm = p.numel() > 0 ? p : torch::Tensor();
    cursor = data.at("cursor").toInt();
  }
};

Trainer::Trainer(const ResolvedConfig& config, const Registry& registry) : impl_(new Impl) {
  auto& m = *impl_;
  m.cfg = config;
  m.seeds = derive_seeds(config.run.seed, config.run.seed_streams);
  set_threads(config.run.threads);
  m.device = training_device(config.run.device);
  if (m.device.is_cuda()) make_cuda_deterministic();

  auto find = [&](Kind kind, const std::string& name) {
    const Component* c = registry.find(kind, name);
    if (c == nullptr)
      throw std::runtime_error(std::string("no ") + to_string(kind) + " component '" + name + "' is loaded");
    return c;
  };
  auto guarded = [](const std::string& what, auto&& f) {
    try {
      auto r = f();
      if (!r) throw std::runtime_error("its factory returned nothing");
      return r;
    } catch (const std::exception& e) {
      throw std::runtime_error(what + ": " + e.what());
    }
  };
  m.task = guarded("task " + config.task.plugin,
                   [&] { return find(Kind::Task, config.task.plugin)->make_task(config.task.params); });
  auto arch = guarded("architecture " + config.architecture.plugin, [&] {
    return find(Kind::Architecture, config.architecture.plugin)->make_architecture(config.architecture.params);
  });
  m.optimizer = guarded("optimizer " + config.optimizer.plugin, [&] {
    return find(Kind::Optimizer, config.optimizer.plugin)->make_optimizer(config.optimizer.params);
  });
  m.loss_float64 = config.run.loss_dtype == "float64";
  for (size_t i = 0; i < config.metrics.size(); ++i) {
    const auto& mc = config.metrics[i];
    m.metrics.push_back(guarded("metrics." + std::to_string(i) + " " + mc.plugin,
                                [&] { return find(Kind::Metric, mc.plugin)->make_metric(mc.params); }));
    m.metric_every.push_back(mc.params.has("every") ? mc.params.get_int("every") : 0);
  }

  // Each purpose draws from its own stream, in a fixed order.
  guarded("task " + config.task.plugin, [&] {
    m.task->prepare(m.seeds.split);
    return true;
  });
  auto splits = m.task->splits();
  if (splits.empty()) throw std::runtime_error("task " + config.task.plugin + " has no splits");
  m.train_split = splits.front();
  torch::manual_seed(m.seeds.init);
  m.model = guarded("architecture " + config.architecture.plugin,
                    [&] { return arch->build(m.task->spec()); });
  // Initialised on the CPU from the init stream, so the initial bits do not
  // depend on the device; then moved.
  if (!m.device.is_cpu()) m.model->to(m.device);
  std::vector<std::pair<std::string, torch::Tensor>> params;
  for (const auto& p : m.model->named_parameters(true)) params.emplace_back(p.key(), p.value());
  m.optimizer->attach(params);
  torch::manual_seed(m.seeds.dropout);
  m.order_gen = torch::make_generator<at::CPUGeneratorImpl>(m.seeds.order);
  m.model->train();
}

Trainer::~Trainer() = default;

const Seeds& Trainer::seeds() const { return impl_->seeds; }

int64_t Trainer::run(TrainObserver& obs, const TrainPlan& plan) {
  auto& m = *impl_;
  if (!plan.resume_from.empty()) m.restore(plan.resume_from);
  const int64_t last = m.cfg.run.steps;
  const int64_t stop = plan.stop_step > 0 ? std::min(plan.stop_step, last) : last;
  const int64_t ckpt_every = m.cfg.run.checkpoint_every;
  while (m.step < stop) {
    ++m.step;
    Batch b = m.next_batch();
    auto logits = m.model->forward(b.inputs);
    const int64_t L = logits.size(1);
    auto targets = b.targets.narrow(1, b.targets.size(1) - L, L).reshape({-1});
    auto flat = logits.reshape({-1, logits.size(2)});
    auto loss = torch::nn::functional::cross_entropy(
        m.loss_float64 ? flat.to(torch::kDouble) : flat, targets,
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1));
    m.optimizer->zero_grad();
    loss.backward();
    bool done = m.step == last;
    const bool eval_now = m.eval_due(done);
    if (eval_now) m.snapshot_before_update();
    m.optimizer->step(m.step);
    obs.on_step(m.step, loss.item<double>());
    if (eval_now) {
      bool all_ran = true;
      auto values = m.evaluate(done, all_ran);
      m.params_before.clear();
      m.gradients.clear();
      obs.on_eval(m.step, values);
      // Early stop is part of the config, so a replay stops at the same step.
      if (!m.cfg.run.stop_metric.empty()) {
        auto it = values.find(m.cfg.run.stop_metric);
        if (it == values.end() && all_ran)
          throw std::runtime_error("run.stop_metric = \"" + m.cfg.run.stop_metric +
                                   "\" is not reported by any metric (check [[metrics]])");
        // Absent while its metric is on another cadence.
        if (it != values.end() && it->second >= m.cfg.run.stop_threshold) done = true;
      }
    }
    if ((ckpt_every > 0 && m.step % ckpt_every == 0) || done || m.step == stop)
      obs.on_checkpoint(m.checkpoint());
    if (done) break;
  }
  return m.step;
}

int64_t Trainer::checkpoint_step(const std::string& bytes) { return load_checkpoint(bytes).at("step").toInt(); }

std::vector<std::pair<std::string, std::string>> Trainer::checkpoint_tensor_hashes(const std::string& bytes) {
  auto d = load_checkpoint(bytes);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, t] : from_dict(d.at("model"))) out.emplace_back(name, tensor_hash(name, t));
  return out;
}

}  // namespace groklab

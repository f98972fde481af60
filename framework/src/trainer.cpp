#include "groklab/trainer.h"

#include <functional>
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
  for (const auto& [k, v] : m) {
    torch::Tensor t = v.detach().to(torch::kCPU).contiguous();
    // A slice of a larger tensor (an ensemble member's) pickles its whole
    // storage: write only its own bytes.
    if (t.storage().nbytes() != t.nbytes()) t = t.clone();
    d.insert(k, t);
  }
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

namespace {

// f(), with what the error is about in front of its message; a factory that
// returns nothing is an error.
template <typename F>
auto guarded(const std::string& what, F&& f) {
  try {
    auto r = f();
    if (!r) throw std::runtime_error("its factory returned nothing");
    return r;
  } catch (const std::exception& e) {
    throw std::runtime_error(what + ": " + e.what());
  }
}

// One run's state: the whole run when training singly, one member of an
// ensemble otherwise (its model then lives on its slice of the ensemble's
// tensors, see bind_members()).
struct Member {
  Seeds seeds;
  std::shared_ptr<Task> task;
  std::shared_ptr<Model> model;
  std::shared_ptr<Optimizer> optimizer;
  std::vector<std::shared_ptr<Metric>> metrics;
  std::string train_split;
  torch::Generator order_gen;
  torch::Tensor perm;  // current epoch's order (minibatches only)
  int64_t cursor = 0;  // next position in perm
  Batch full_batch;    // cached when training full-batch
  Batch last_batch;    // the batch of the last step (an ensemble feeds it to a stopped member)
  int64_t step = 0;    // steps trained
  bool stopped = false;  // reached its stop metric (an ensemble member trains no further)
  // An ensemble member's dropout stream: torch's default generator state that
  // a single run of it would have (ensembles draw no dropout), for checkpoints.
  torch::Tensor dropout_state;
  TensorMap params_before, gradients;  // at evaluated steps, before the update (EvalContext)
  TensorMap initial_params;            // at step 0 (EvalContext)
  // Each of its parameters with the ensemble's stacked parameter it is a slice of.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> slices;
};

}  // namespace

struct Trainer::Impl {
  ResolvedConfig cfg;
  std::vector<Member> members;  // one unless run.ensemble > 1
  std::shared_ptr<Model> ensemble;  // the batched model of an ensemble
  torch::Device device = torch::Device(torch::kCPU);  // where the model and batches live
  int64_t step = 0;
  bool loss_float64 = true;  // the training loss on logits cast to double (see trainer.h)
  std::vector<int64_t> metric_every;  // per metric, its `every` (0: run.eval_every)

  static TensorMap model_state(const Model& model) {
    TensorMap m;
    for (const auto& p : model.named_parameters(true)) m[p.key()] = p.value();
    for (const auto& b : model.named_buffers(true)) m[b.key()] = b.value();
    return m;
  }

  // The rows of member m's training batch: its whole split (run.batch_size
  // 0, or at least the split), else run.batch_size.
  int64_t batch_rows(const Member& m) const {
    const int64_t n = m.task->size(m.train_split), bs = cfg.run.batch_size;
    return bs == 0 || bs >= n ? n : bs;
  }

  Batch next_batch(Member& m) {
    const int64_t n = m.task->size(m.train_split);
    const int64_t bs = cfg.run.batch_size;
    if (batch_rows(m) == n) {
      if (!m.full_batch.inputs.defined()) m.full_batch = on_device(m.task->batch(m.train_split, torch::arange(n)));
      return m.full_batch;
    }
    if (!m.perm.defined() || m.cursor + bs > n) {
      m.perm = torch::randperm(n, m.order_gen, torch::kLong);
      m.cursor = 0;
    }
    auto idx = m.perm.narrow(0, m.cursor, bs);
    m.cursor += bs;
    return on_device(m.task->batch(m.train_split, idx));
  }

  // Tasks make batches on the CPU (their order stream is a CPU generator).
  Batch on_device(Batch b) const {
    if (device.is_cpu()) return b;
    return {b.inputs.to(device), b.targets.to(device)};
  }

  // The mean cross-entropy of logits [B, L, C] against the batch's last L
  // target positions (-1 ignored).
  torch::Tensor loss_of(const torch::Tensor& logits, const Batch& b) const {
    const int64_t L = logits.size(1);
    auto targets = b.targets.narrow(1, b.targets.size(1) - L, L).reshape({-1});
    auto flat = logits.reshape({-1, logits.size(2)});
    return torch::nn::functional::cross_entropy(loss_float64 ? flat.to(torch::kDouble) : flat, targets,
                                                torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1));
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
    if (metric_every.empty()) return last_step || step % cfg.run.eval_every == 0;
    for (size_t i = 0; i < metric_every.size(); ++i)
      if (metric_due(i, last_step)) return true;
    return false;
  }

  // Runs member m's metrics due at this step; all_ran tells whether every
  // metric ran. Torch's default generator (the dropout stream) is restored
  // afterwards, so metrics cannot shift training.
  std::map<std::string, double> evaluate(Member& m, bool last_step, bool& all_ran) {
    std::map<std::string, double> out;
    torch::NoGradGuard no_grad;
    m.model->eval();
    const auto rng = rng_states();
    all_ran = true;
    for (size_t i = 0; i < m.metrics.size(); ++i) {
      if (!metric_due(i, last_step)) {
        all_ran = false;
        continue;
      }
      EvalContext ctx;
      ctx.model = m.model.get();
      ctx.task = m.task.get();
      ctx.step = step;
      ctx.seed = Trainer::metric_seed(m.seeds.metric, step);
      if (!m.params_before.empty()) {
        ctx.params_before = &m.params_before;
        ctx.gradients = &m.gradients;
      }
      ctx.initial_params = &m.initial_params;
      for (const auto& [k, v] : m.metrics[i]->evaluate(ctx)) {
        if (!out.emplace(k, v).second)
          throw std::runtime_error("metrics." + std::to_string(i) + " (" + cfg.metrics[i].plugin +
                                   ") reports '" + k + "', which an earlier metric already reported");
      }
    }
    set_rng_states(rng);
    m.model->train();
    return out;
  }

  // Keeps this step's parameters and gradients (before the update) for the metrics.
  static void snapshot_before_update(Member& m) {
    m.params_before.clear();
    m.gradients.clear();
    torch::NoGradGuard no_grad;
    for (const auto& p : m.model->named_parameters(true)) {
      m.params_before[p.key()] = p.value().detach().clone();
      if (p.value().grad().defined()) m.gradients[p.key()] = p.value().grad().detach().clone();
    }
  }

  // A single run's checkpoint of member m (an ensemble member's restores as
  // a single run of its member config).
  Checkpoint checkpoint(const Member& m) const {
    Checkpoint c;
    c.step = m.step;
    TensorMap state = model_state(*m.model);
    ledger::Hasher all;
    for (const auto& [name, t] : state) {
      std::string h = tensor_hash(name, t);
      c.tensor_hashes.emplace_back(name, h);
      all.update(h);
    }
    c.params_hash = all.hex();

    c10::impl::GenericDict rng(c10::StringType::get(), c10::TensorType::get());
    for (const auto& [name, gen_state] : rng_states())
      rng.insert(name, name == "torch_default" && m.dropout_state.defined() ? m.dropout_state : gen_state);
    rng.insert("order", m.order_gen.get_state());
    c10::impl::GenericDict data(c10::StringType::get(), c10::AnyType::get());
    data.insert("perm", m.perm.defined() ? m.perm : torch::empty({0}, torch::kLong));
    data.insert("cursor", m.cursor);
    c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
    d.insert("format", std::string(kCheckpointFormat));
    d.insert("step", m.step);
    d.insert("model", to_dict(state));
    d.insert("optimizer", to_dict(m.optimizer->state()));
    d.insert("rng", rng);
    d.insert("data", data);
    auto bytes = torch::pickle_save(d);
    c.bytes.assign(bytes.begin(), bytes.end());
    return c;
  }

  void restore(Member& m, const std::string& bytes) {
    auto d = load_checkpoint(bytes);
    m.step = d.at("step").toInt();
    TensorMap saved = from_dict(d.at("model"));
    {
      torch::NoGradGuard no_grad;
      for (auto& [name, t] : model_state(*m.model)) {
        auto it = saved.find(name);
        if (it == saved.end()) throw std::runtime_error("checkpoint has no tensor '" + name + "'");
        if (it->second.sizes() != t.sizes())
          throw std::runtime_error("checkpoint tensor '" + name + "' has a different shape");
        t.copy_(it->second);
      }
    }
    m.optimizer->load_state(to_device(from_dict(d.at("optimizer")), device));
    auto rng = d.at("rng").toGenericDict();
    const torch::Tensor dropout_state = rng.at("torch_default").toTensor();
    if (ensemble) {
      m.dropout_state = dropout_state;  // an ensemble's members draw no dropout
    } else {
      std::vector<std::pair<std::string, torch::Tensor>> states;
      states.reserve(2);
      states.emplace_back("torch_default", dropout_state);
      if (device.is_cuda()) {
        if (!rng.contains("cuda_default"))
          throw std::runtime_error("checkpoint has no CUDA generator state: it was not written by a CUDA run");
        states.emplace_back("cuda_default", rng.at("cuda_default").toTensor());
      }
      set_rng_states(states);
    }
    m.order_gen.set_state(rng.at("order").toTensor());
    auto data = d.at("data").toGenericDict();
    auto p = data.at("perm").toTensor();
    m.perm = p.numel() > 0 ? p : torch::Tensor();
    m.cursor = data.at("cursor").toInt();
  }

  // Builds member s (the whole run when s is the only one) from the registry.
  Member build_member(const ResolvedConfig& config, const Architecture& arch,
                      const std::function<const Component*(Kind, const std::string&)>& find) {
    Member m;
    m.seeds = derive_seeds(config.run.seed, config.run.seed_streams);
    m.task = guarded("task " + config.task.plugin,
                     [&] { return find(Kind::Task, config.task.plugin)->make_task(config.task.params); });
    m.optimizer = guarded("optimizer " + config.optimizer.plugin, [&] {
      return find(Kind::Optimizer, config.optimizer.plugin)->make_optimizer(config.optimizer.params);
    });
    for (size_t i = 0; i < config.metrics.size(); ++i) {
      const auto& mc = config.metrics[i];
      m.metrics.push_back(guarded("metrics." + std::to_string(i) + " " + mc.plugin,
                                  [&] { return find(Kind::Metric, mc.plugin)->make_metric(mc.params); }));
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
    m.model = guarded("architecture " + config.architecture.plugin, [&] { return arch.build(m.task->spec()); });
    // Initialised on the CPU from the init stream, so the initial bits do not
    // depend on the device; then moved.
    if (!device.is_cpu()) m.model->to(device);
    m.order_gen = torch::make_generator<at::CPUGeneratorImpl>(m.seeds.order);
    return m;
  }

  // Hands member m's parameters to its optimizer and keeps θ₀.
  static void attach(Member& m) {
    std::vector<std::pair<std::string, torch::Tensor>> params;
    for (const auto& p : m.model->named_parameters(true)) params.emplace_back(p.key(), p.value());
    m.optimizer->attach(params);
    torch::NoGradGuard no_grad;
    for (const auto& [name, t] : params) m.initial_params[name] = t.detach().clone();
  }

  // After an evaluation of member m: whether its stop metric is reached.
  bool reached_stop(const std::map<std::string, double>& values, bool all_ran) const {
    if (cfg.run.stop_metric.empty()) return false;
    auto it = values.find(cfg.run.stop_metric);
    if (it == values.end() && all_ran)
      throw std::runtime_error("run.stop_metric = \"" + cfg.run.stop_metric +
                               "\" is not reported by any metric (check [[metrics]])");
    // Absent while its metric is on another cadence.
    return it != values.end() && it->second >= cfg.run.stop_threshold;
  }

  // What follows member m's update at this step: evaluation, early stop,
  // checkpoint. Returns whether m stops here.
  bool after_update(Member& m, TrainObserver& obs, bool eval_now, int64_t last, int64_t stop) {
    bool done = step == last;
    if (eval_now) {
      bool all_ran = true;
      auto values = evaluate(m, done, all_ran);
      m.params_before.clear();
      m.gradients.clear();
      obs.on_eval(step, values);
      // Early stop is part of the config, so a replay stops at the same step.
      if (reached_stop(values, all_ran)) done = true;
    }
    const int64_t ckpt_every = cfg.run.checkpoint_every;
    if ((ckpt_every > 0 && step % ckpt_every == 0) || done || step == stop) obs.on_checkpoint(checkpoint(m));
    return done;
  }
};

Trainer::Trainer(const ResolvedConfig& config, const Registry& registry) : impl_(new Impl) {
  auto& m = *impl_;
  m.cfg = config;
  set_threads(config.run.threads);
  m.device = training_device(config.run.device);
  if (m.device.is_cuda()) make_cuda_deterministic();

  auto find = [&](Kind kind, const std::string& name) {
    const Component* c = registry.find(kind, name);
    if (c == nullptr)
      throw std::runtime_error(std::string("no ") + to_string(kind) + " component '" + name + "' is loaded");
    return c;
  };
  auto arch = guarded("architecture " + config.architecture.plugin, [&] {
    return find(Kind::Architecture, config.architecture.plugin)->make_architecture(config.architecture.params);
  });
  m.loss_float64 = config.run.loss_dtype == "float64";
  for (const auto& mc : config.metrics) m.metric_every.push_back(mc.params.has("every") ? mc.params.get_int("every") : 0);

  const int64_t S = config.run.ensemble;
  if (S <= 1) {
    m.members.push_back(m.build_member(config, *arch, find));
    Impl::attach(m.members[0]);
    torch::manual_seed(m.members[0].seeds.dropout);
    m.members[0].model->train();
    return;
  }
  for (int64_t s = 0; s < S; ++s) {
    m.members.push_back(m.build_member(member_config(config, s), *arch, find));
    Member& x = m.members.back();
    torch::manual_seed(x.seeds.dropout);
    x.dropout_state = generator_state(default_generator());
    // The batched model takes equal row blocks per member: every member's
    // batch must have member 0's rows (a full batch of a split of another
    // size, or one that run.batch_size covers for one member and not another,
    // would hand one member's rows to the next).
    const Member& first = m.members.front();
    if (m.batch_rows(x) != m.batch_rows(first)) {
      std::ostringstream why;
      why << "run.ensemble: member " << s << "'s training batch has " << m.batch_rows(x) << " rows (training split "
          << x.task->size(x.train_split) << "), member 0's " << m.batch_rows(first) << " (training split "
          << first.task->size(first.train_split) << ", run.batch_size " << config.run.batch_size
          << "); an ensemble needs equal batches";
      throw std::runtime_error(why.str());
    }
  }
  std::vector<std::shared_ptr<Model>> models;
  for (const auto& x : m.members) models.push_back(x.model);
  m.ensemble = guarded("architecture " + config.architecture.plugin + " (run.ensemble = " + std::to_string(S) + ")",
                             [&]() -> std::shared_ptr<Model> {
                               auto e = arch->build_ensemble(m.members.front().task->spec(), models);
                               if (!e)
                                 throw std::runtime_error("it trains no ensembles (Architecture::build_ensemble); "
                                                          "use run.ensemble = 1 or a sweep over run.seed");
                               return e;
                             });
  if (!m.device.is_cpu()) {
    m.ensemble->to(m.device);
    bind_members(*m.ensemble, models);  // the members' parameters onto the moved tensors
  }
  for (auto& x : m.members) {
    auto stacked = m.ensemble->named_parameters(true);
    for (const auto& p : x.model->named_parameters(true)) x.slices.emplace_back(p.value(), stacked[p.key()]);
    Impl::attach(x);
    x.model->train();
  }
  m.ensemble->train();
}

Trainer::~Trainer() = default;

const Seeds& Trainer::seeds() const { return impl_->members.front().seeds; }

int64_t Trainer::members() const { return static_cast<int64_t>(impl_->members.size()); }


uint64_t Trainer::metric_seed(uint64_t metric_stream, int64_t step) {
  return metric_stream ^ (static_cast<uint64_t>(step) * 0x9E3779B97F4A7C15ull);
}

ResolvedConfig Trainer::member_config(const ResolvedConfig& config, int64_t member) {
  ResolvedConfig c = config;
  c.run.seed = config.run.seed + static_cast<uint64_t>(member);
  c.run.ensemble = 1;
  return c;
}

int64_t Trainer::run(TrainObserver& obs, const TrainPlan& plan) {
  auto& m = *impl_;
  if (m.ensemble) throw std::logic_error("Trainer::run: run.ensemble > 1 trains with run_ensemble()");
  Member& x = m.members.front();
  if (!plan.resume_from.empty()) m.restore(x, plan.resume_from);
  m.step = x.step;
  const int64_t last = m.cfg.run.steps;
  const int64_t stop = plan.stop_step > 0 ? std::min(plan.stop_step, last) : last;
  while (m.step < stop) {
    x.step = ++m.step;
    Batch b = m.next_batch(x);
    auto loss = m.loss_of(x.model->forward(b.inputs), b);
    x.optimizer->zero_grad();
    loss.backward();
    const bool eval_now = m.eval_due(m.step == last);
    if (eval_now) Impl::snapshot_before_update(x);
    x.optimizer->step(m.step);
    obs.on_step(m.step, loss.item<double>());
    if (m.after_update(x, obs, eval_now, last, stop)) break;
  }
  return m.step;
}

std::vector<int64_t> Trainer::run_ensemble(const std::vector<TrainObserver*>& obs, const TrainPlan& plan) {
  auto& m = *impl_;
  if (!m.ensemble) throw std::logic_error("Trainer::run_ensemble: this run is no ensemble (run.ensemble = 1)");
  const size_t S = m.members.size();
  if (obs.size() != S) throw std::logic_error("Trainer::run_ensemble: one observer per member");
  if (!plan.member_resume.empty()) {
    if (plan.member_resume.size() != S || plan.member_stopped.size() != S)
      throw std::logic_error("Trainer::run_ensemble: member_resume and member_stopped need one entry per member");
    for (size_t s = 0; s < S; ++s) {
      m.restore(m.members[s], plan.member_resume[s]);
      m.members[s].stopped = plan.member_stopped[s];
    }
  }
  m.step = 0;
  for (const auto& x : m.members) {
    if (x.stopped) continue;
    if (m.step != 0 && x.step != m.step)
      throw std::runtime_error("run.ensemble: the members still training were checkpointed at different steps (" +
                               std::to_string(m.step) + " and " + std::to_string(x.step) + ")");
    m.step = x.step;
  }
  const int64_t last = m.cfg.run.steps;
  const int64_t stop = plan.stop_step > 0 ? std::min(plan.stop_step, last) : last;
  auto training = [&] {
    for (const auto& x : m.members)
      if (!x.stopped) return true;
    return false;
  };
  while (m.step < stop && training()) {
    ++m.step;
    // Every member's batch, member-major; a stopped member's last one keeps
    // the shapes (one that was resumed stopped draws one: it updates no more).
    std::vector<torch::Tensor> inputs;
    std::vector<Batch> batches;
    for (auto& x : m.members) {
      if (!x.stopped || !x.last_batch.inputs.defined()) x.last_batch = m.next_batch(x);
      batches.push_back(x.last_batch);
      inputs.push_back(x.last_batch.inputs);
    }
    auto logits = m.ensemble->forward(torch::cat(inputs));
    // Every member's mean cross-entropy at once; the sum over the members
    // still training has each member's own gradient, bit for bit as its single
    // run's (log-softmax is per row; the mean's gradient is 1/count).
    const int64_t L = logits.size(1), C = logits.size(2);
    std::vector<torch::Tensor> targets;
    for (const auto& b : batches) targets.push_back(b.targets.narrow(1, b.targets.size(1) - L, L));
    const torch::Tensor t = torch::cat(targets).reshape({static_cast<int64_t>(S), -1});
    const torch::Tensor flat = logits.reshape({-1, C});
    const torch::Tensor nll =
        at::nll_loss(at::log_softmax(m.loss_float64 ? flat.to(torch::kDouble) : flat, 1), t.reshape({-1}), {},
                     at::Reduction::None, -1)
            .view({static_cast<int64_t>(S), -1});
    std::vector<double> active(S);
    for (size_t s = 0; s < S; ++s) active[s] = m.members[s].stopped ? 0.0 : 1.0;
    const torch::Tensor losses = nll.sum(1) / t.ge(0).sum(1).to(nll.scalar_type());
    const torch::Tensor total = (losses * torch::tensor(active, losses.options())).sum();
    for (auto& p : m.ensemble->parameters(true)) p.mutable_grad() = torch::Tensor();
    for (auto& x : m.members) x.optimizer->zero_grad();
    total.backward();
    const bool eval_now = m.eval_due(m.step == last);
    const torch::Tensor detached = losses.detach().to(torch::kCPU, torch::kDouble).contiguous();
    const std::vector<double> loss_values(detached.data_ptr<double>(), detached.data_ptr<double>() + S);
    for (size_t s = 0; s < S; ++s) {
      Member& x = m.members[s];
      if (x.stopped) continue;
      x.step = m.step;
      for (auto& [param, stacked] : x.slices)
        if (stacked.grad().defined()) param.mutable_grad() = stacked.grad().select(0, static_cast<int64_t>(s));
      if (eval_now) Impl::snapshot_before_update(x);
      x.optimizer->step(m.step);
      obs[s]->on_step(m.step, loss_values[s]);
    }
    for (size_t s = 0; s < S; ++s) {
      Member& x = m.members[s];
      if (!x.stopped && m.after_update(x, *obs[s], eval_now, last, stop)) x.stopped = true;
    }
  }
  std::vector<int64_t> steps;
  for (const auto& x : m.members) steps.push_back(x.step);
  return steps;
}

int64_t Trainer::checkpoint_step(const std::string& bytes) { return load_checkpoint(bytes).at("step").toInt(); }

std::vector<std::pair<std::string, std::string>> Trainer::checkpoint_tensor_hashes(const std::string& bytes) {
  auto d = load_checkpoint(bytes);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, t] : from_dict(d.at("model"))) out.emplace_back(name, tensor_hash(name, t));
  return out;
}

}  // namespace groklab

// random_tokens: uniformly random token sequences with uniformly random
// targets at every position — nothing to learn, a fixed workload. It is what
// `groklab bench` trains to measure throughput against the PyTorch peer
// (whose batch is random tokens and targets too), through groklab's real path.
#include <stdexcept>
#include <string>

#include <torch/torch.h>

#include "groklab/components.h"
#include "tasks.h"

namespace groklab::tasks {
namespace {

class RandomTokens final : public Task {
 public:
  explicit RandomTokens(const Params& p)
      : vocab_(p.get_int("vocab")), seq_len_(p.get_int("seq_len")), train_(p.get_int("train_size")),
        test_(p.get_int("test_size")) {}

  TaskSpec spec() const override { return {vocab_, seq_len_, vocab_}; }

  void prepare(uint64_t seed) override {
    torch::Generator g = torch::make_generator<at::CPUGeneratorImpl>(seed);
    auto draw = [&](int64_t n) {
      return torch::randint(vocab_, {n, seq_len_}, g, torch::TensorOptions().dtype(torch::kLong));
    };
    train_in_ = draw(train_);
    train_tg_ = draw(train_);
    test_in_ = draw(test_);
    test_tg_ = draw(test_);
  }

  std::vector<std::string> splits() const override { return {"train", "test"}; }

  int64_t size(const std::string& split) const override { return split == "train" ? train_ : test_; }

  Batch batch(const std::string& split, const torch::Tensor& indices) const override {
    if (!train_in_.defined()) throw std::logic_error("random_tokens: batch() before prepare()");
    if (split == "train") return {train_in_.index_select(0, indices), train_tg_.index_select(0, indices)};
    if (split == "test") return {test_in_.index_select(0, indices), test_tg_.index_select(0, indices)};
    throw std::invalid_argument("random_tokens: no split '" + split + "' (train, test)");
  }

 private:
  int64_t vocab_, seq_len_, train_, test_;
  torch::Tensor train_in_, train_tg_, test_in_, test_tg_;
};

}  // namespace

void register_random_tokens(Registrar& r) {
  r.add_task("random_tokens",
             "random tokens with random targets at every position: a fixed workload for throughput "
             "benchmarks (groklab bench), nothing to learn",
             Schema()
                 .integer("vocab", 114, "tokens and classes")
                 .range(2, 1 << 20)
                 .integer("seq_len", 3, "sequence length; every position carries loss")
                 .range(1, 1 << 16)
                 .integer("train_size", 1024, "training sequences")
                 .min(1)
                 .integer("test_size", 64, "test sequences")
                 .min(1),
             [](const Params& p) { return std::make_shared<RandomTokens>(p); });
}

}  // namespace groklab::tasks

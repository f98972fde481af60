// modular_arithmetic: inputs `a b =` (the token `=` is p), target (a ∘ b) mod p,
// scored at the answer position only. Train/test split of all pairs.
#include <algorithm>
#include <numeric>
#include <random>
#include <stdexcept>

#include <torch/torch.h>

#include "groklab/components.h"
#include "tasks.h"

namespace groklab::tasks {
namespace {

int64_t mod(int64_t x, int64_t p) { return ((x % p) + p) % p; }

int64_t mod_pow(int64_t b, int64_t e, int64_t p) {
  int64_t r = 1;
  b = mod(b, p);
  while (e > 0) {
    if (e & 1) r = r * b % p;
    b = b * b % p;
    e >>= 1;
  }
  return r;
}

class ModularArithmetic final : public Task {
 public:
  explicit ModularArithmetic(const Params& params)
      : p_(params.get_int("p")),
        op_(params.get_string("operation")),
        train_fraction_(params.get_float("train_fraction")) {
    if (op_ == "div") {
      // Division needs b⁻¹ = b^(p-2): p must be prime.
      for (int64_t d = 2; d * d <= p_; ++d)
        if (p_ % d == 0)
          throw std::invalid_argument("modular_arithmetic: operation \"div\" needs a prime p, got " +
                                      std::to_string(p_));
    }
  }

  TaskSpec spec() const override { return {p_ + 1, 3, p_ + 1}; }

  void prepare(uint64_t seed) override {
    std::vector<int64_t> a, b, c;
    for (int64_t i = 0; i < p_; ++i) {
      for (int64_t j = 0; j < p_; ++j) {
        if (op_ == "div" && j == 0) continue;
        a.push_back(i);
        b.push_back(j);
        c.push_back(apply(i, j));
      }
    }
    const int64_t n = static_cast<int64_t>(a.size());
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    // A Fisher–Yates shuffle with our own PRNG: std::shuffle's algorithm is
    // not specified, so it could differ between standard libraries.
    std::mt19937_64 rng(seed);
    for (int64_t i = n - 1; i > 0; --i) {
      int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
    }
    const int64_t n_train = static_cast<int64_t>(train_fraction_ * static_cast<double>(n));
    auto inputs = torch::empty({n, 3}, torch::kLong);
    auto targets = torch::full({n, 3}, -1, torch::kLong);
    auto in = inputs.accessor<int64_t, 2>();
    auto tg = targets.accessor<int64_t, 2>();
    for (int64_t k = 0; k < n; ++k) {
      auto src = static_cast<size_t>(order[static_cast<size_t>(k)]);
      in[k][0] = a[src];
      in[k][1] = b[src];
      in[k][2] = p_;
      tg[k][2] = c[src];
    }
    train_ = {inputs.narrow(0, 0, n_train), targets.narrow(0, 0, n_train)};
    test_ = {inputs.narrow(0, n_train, n - n_train), targets.narrow(0, n_train, n - n_train)};
  }

  std::vector<std::string> splits() const override { return {"train", "test"}; }

  int64_t size(const std::string& split) const override { return data(split).inputs.size(0); }

  Batch batch(const std::string& split, const torch::Tensor& indices) const override {
    const Batch& d = data(split);
    return {d.inputs.index_select(0, indices), d.targets.index_select(0, indices)};
  }

 private:
  int64_t apply(int64_t a, int64_t b) const {
    if (op_ == "add") return mod(a + b, p_);
    if (op_ == "sub") return mod(a - b, p_);
    if (op_ == "mul") return mod(a * b, p_);
    if (op_ == "div") return mod(a * mod_pow(b, p_ - 2, p_), p_);
    if (op_ == "x2xyy2") return mod(a * a + a * b + b * b, p_);
    if (op_ == "xor") return mod(a ^ b, p_);
    throw std::invalid_argument("modular_arithmetic: unknown operation " + op_);
  }

  const Batch& data(const std::string& split) const {
    if (!train_.inputs.defined())
      throw std::logic_error("modular_arithmetic: prepare() was not called");
    if (split == "train") return train_;
    if (split == "test") return test_;
    throw std::invalid_argument("modular_arithmetic: no split named '" + split +
                                "' (splits: train, test)");
  }

  int64_t p_;
  std::string op_;
  double train_fraction_;
  Batch train_, test_;
};

}  // namespace

void register_modular_arithmetic(Registrar& r) {
  r.add_task("modular_arithmetic",
             "(a ∘ b) mod p from inputs `a b =`, scored at the answer position",
             Schema()
                 .integer("p", 113, "the modulus; inputs are 0..p-1 and the token `=` is p")
                 .range(2, 4096)
                 .choice("operation", "add", {"add", "sub", "mul", "div", "x2xyy2", "xor"},
                         "a+b, a-b, a·b, a·b⁻¹ (b≠0, p prime), a²+ab+b², a xor b")
                 .real("train_fraction", 0.3, "fraction of all pairs in the train split")
                 .range(0.0, 1.0),
             [](const Params& p) { return std::make_shared<ModularArithmetic>(p); });
}

}  // namespace groklab::tasks

// modular_arithmetic: inputs `a b =` (the token `=` is p), target (a ∘ b) mod p,
// scored at the answer position only. Train/test split of all pairs.
// format = "power" (Power et al. 2022, "Grokking: Generalization Beyond
// Overfitting on Small Algorithmic Datasets"): inputs `a ∘ b =`, every symbol a
// token (numbers 0..p-1, `=` p, the operator p+1), target c at the `=`
// position only; the answer is not an input, so a non-causal model cannot
// read it.
#include <algorithm>
#include <array>
#include <numeric>
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

// CPython's random.Random (Modules/_randommodule.c and Lib/random.py), just
// enough of it to reproduce `random.Random(seed).shuffle(list)` exactly: the
// split then equals grok_reference.py's and other Python grokking code's.
class PythonRandom {
 public:
  // random.Random(seed) for a non-negative int seed: init_by_array over the
  // seed's 32-bit words, least significant first (one word 0 for seed 0).
  explicit PythonRandom(uint64_t seed) {
    std::array<uint32_t, 2> key{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
    init_by_array(key.data(), (seed >> 32) != 0 ? 2 : 1);
  }

  // random.shuffle: for i = n-1 down to 1, swap x[i] with x[_randbelow(i+1)].
  template <typename T>
  void shuffle(std::vector<T>& x) {
    for (size_t i = x.size() > 0 ? x.size() - 1 : 0; i > 0; --i)
      std::swap(x[i], x[randbelow(static_cast<uint32_t>(i + 1))]);
  }

 private:
  static constexpr int N = 624, M = 397;

  // _randbelow_with_getrandbits: k = n.bit_length(); draw getrandbits(k) until < n.
  uint32_t randbelow(uint32_t n) {
    int k = 0;
    while (k < 32 && (n >> k) != 0) ++k;
    uint32_t r = getrandbits(k);
    while (r >= n) r = getrandbits(k);
    return r;
  }

  // getrandbits(k) for 1 <= k <= 32: the top k bits of one 32-bit output.
  uint32_t getrandbits(int k) { return genrand_uint32() >> (32 - k); }

  void init_genrand(uint32_t s) {
    mt_[0] = s;
    for (int i = 1; i < N; ++i)
      mt_[i] = 1812433253U * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + static_cast<uint32_t>(i);
    index_ = N;
  }

  void init_by_array(const uint32_t* key, size_t key_length) {
    init_genrand(19650218U);
    size_t i = 1, j = 0;
    for (size_t k = std::max<size_t>(N, key_length); k > 0; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525U)) + key[j] +
               static_cast<uint32_t>(j);
      ++i;
      ++j;
      if (i >= N) {
        mt_[0] = mt_[N - 1];
        i = 1;
      }
      if (j >= key_length) j = 0;
    }
    for (size_t k = N - 1; k > 0; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941U)) -
               static_cast<uint32_t>(i);
      ++i;
      if (i >= N) {
        mt_[0] = mt_[N - 1];
        i = 1;
      }
    }
    mt_[0] = 0x80000000U;
  }

  // MT19937's tempered output (the same sequence as std::mt19937 from this state).
  uint32_t genrand_uint32() {
    static constexpr uint32_t mag01[2] = {0x0U, 0x9908b0dfU};
    if (index_ >= N) {
      int kk = 0;
      for (; kk < N - M; ++kk) {
        uint32_t y = (mt_[kk] & 0x80000000U) | (mt_[kk + 1] & 0x7fffffffU);
        mt_[kk] = mt_[kk + M] ^ (y >> 1) ^ mag01[y & 0x1U];
      }
      for (; kk < N - 1; ++kk) {
        uint32_t y = (mt_[kk] & 0x80000000U) | (mt_[kk + 1] & 0x7fffffffU);
        mt_[kk] = mt_[kk + (M - N)] ^ (y >> 1) ^ mag01[y & 0x1U];
      }
      uint32_t y = (mt_[N - 1] & 0x80000000U) | (mt_[0] & 0x7fffffffU);
      mt_[N - 1] = mt_[M - 1] ^ (y >> 1) ^ mag01[y & 0x1U];
      index_ = 0;
    }
    uint32_t y = mt_[index_++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= (y >> 18);
    return y;
  }

  std::array<uint32_t, N> mt_{};
  int index_ = N + 1;
};

class ModularArithmetic final : public Task {
 public:
  explicit ModularArithmetic(const Params& params)
      : p_(params.get_int("p")),
        op_(params.get_string("operation")),
        train_fraction_(params.get_float("train_fraction")),
        power_(params.get_string("format") == "power") {
    if (op_ == "div") {
      // Division needs b⁻¹ = b^(p-2): p must be prime.
      for (int64_t d = 2; d * d <= p_; ++d)
        if (p_ % d == 0)
          throw std::invalid_argument("modular_arithmetic: operation \"div\" needs a prime p, got " +
                                      std::to_string(p_));
    }
  }

  TaskSpec spec() const override {
    if (power_) return {p_ + 2, 4, p_ + 2};
    return {p_ + 1, 3, p_ + 1};
  }

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
    // Python's random.Random(seed).shuffle over the pairs in (a, b) row-major
    // order, so the split equals grok_reference.py's for the same seed.
    PythonRandom rng(seed);
    rng.shuffle(order);
    const int64_t n_train = static_cast<int64_t>(train_fraction_ * static_cast<double>(n));
    const int64_t T = power_ ? 4 : 3;
    auto inputs = torch::empty({n, T}, torch::kLong);
    auto targets = torch::full({n, T}, -1, torch::kLong);
    auto in = inputs.accessor<int64_t, 2>();
    auto tg = targets.accessor<int64_t, 2>();
    for (int64_t k = 0; k < n; ++k) {
      auto src = static_cast<size_t>(order[static_cast<size_t>(k)]);
      if (power_) {  // a ∘ b =
        in[k][0] = a[src];
        in[k][1] = p_ + 1;
        in[k][2] = b[src];
        in[k][3] = p_;
        tg[k][3] = c[src];
      } else {  // a b =
        in[k][0] = a[src];
        in[k][1] = b[src];
        in[k][2] = p_;
        tg[k][2] = c[src];
      }
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
  bool power_;  // format "power": a ∘ b =
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
                 .range(0.0, 1.0)
                 .choice("format", "answer", {"answer", "power"},
                         "answer: inputs `a b =` (`=` is p); power: `a ∘ b =` as Power et al. "
                         "2022 (`=` is p, ∘ is p+1, vocab p+2)"),
             [](const Params& p) { return std::make_shared<ModularArithmetic>(p); });
}

}  // namespace groklab::tasks

// sparse_parity: n random bits, label = parity of a hidden subset of k of them
// (Barak et al. 2022, "Hidden progress in deep learning: SGD learns parities
// near the computational limit"). An out-of-tree task plugin: it sees only the
// installed groklab headers.
//
// Tokens: position j < n holds bit j (token 0 or 1), position n the readout
// token 2; the target is scored at the readout position only, 2 classes.
//
// Data from the data-split seed, with SplitMix64 (no std distributions, so
// the bits are the same on every platform and easy to reproduce in Python):
//   1. the hidden subset: a partial Fisher–Yates shuffle of 0..n-1, k draws,
//      then sorted (drawn even when `subset` is given, so the examples do
//      not depend on whether it is);
//   2. train_size + test_size distinct n-bit patterns: a partial Fisher–Yates
//      shuffle of 0..2^n-1; the first train_size are train, the rest test.
// Draw i of a shuffle of 0..N-1 swaps slots i and i + below(N - i), where
// below(b) = r % b for the first SplitMix64 output r >= 2^64 mod b.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/torch.h>

#include "groklab/components.h"
#include "groklab/plugin.h"

namespace {

using groklab::Batch;
using groklab::Params;
using groklab::TaskSpec;

constexpr int64_t kMaxBits = 63;            // patterns are uint64; 2^n must fit
constexpr int64_t kMaxExamples = 1 << 24;   // per split
constexpr int64_t kReadoutToken = 2;

// SplitMix64 (Steele, Lea & Flood 2014): the output sequence of a 64-bit state.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  // Returns a uniform integer in [0, bound), bound >= 1, by rejection.
  uint64_t below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % bound;
    }
  }

 private:
  uint64_t state_;
};

// Returns the first m entries of a Fisher–Yates shuffle of 0..N-1, storing
// only the slots that moved (so N may be 2^63).
std::vector<uint64_t> sample_distinct(SplitMix64& rng, uint64_t N, uint64_t m) {
  std::unordered_map<uint64_t, uint64_t> moved;
  auto slot = [&](uint64_t i) {
    auto it = moved.find(i);
    return it == moved.end() ? i : it->second;
  };
  std::vector<uint64_t> out;
  out.reserve(m);
  for (uint64_t i = 0; i < m; ++i) {
    const uint64_t j = i + rng.below(N - i);
    const uint64_t vi = slot(i), vj = slot(j);
    moved[j] = vi;
    out.push_back(vj);
  }
  return out;
}

class SparseParity final : public groklab::Task {
 public:
  explicit SparseParity(const Params& p)
      : n_(p.get_int("n")),
        k_(p.get_int("k")),
        train_size_(p.get_int("train_size")),
        test_size_(p.get_int("test_size")) {
    auto fail = [](const std::string& what) { throw std::invalid_argument("sparse_parity: " + what); };
    if (k_ > n_) fail("k = " + std::to_string(k_) + " exceeds n = " + std::to_string(n_));
    // 2^n >= train_size + test_size, or there are not enough distinct patterns.
    if (n_ < 62 && (int64_t{1} << n_) < train_size_ + test_size_)
      fail("train_size + test_size = " + std::to_string(train_size_ + test_size_) +
           " exceeds the 2^" + std::to_string(n_) + " = " + std::to_string(int64_t{1} << n_) +
           " distinct inputs of n = " + std::to_string(n_) + " bits");
    const auto& subset = p.get_list("subset");
    if (!subset.empty()) {
      if (static_cast<int64_t>(subset.size()) != k_)
        fail("subset has " + std::to_string(subset.size()) + " positions but k = " +
             std::to_string(k_) + " (give k positions, or [] to draw them from the seed)");
      for (const auto& v : subset) {
        const int64_t pos = v.as_int();
        if (pos < 0 || pos >= n_)
          fail("subset position " + std::to_string(pos) + " is not in [0, " +
               std::to_string(n_ - 1) + "]");
        if (std::find(fixed_subset_.begin(), fixed_subset_.end(), pos) != fixed_subset_.end())
          fail("subset position " + std::to_string(pos) + " is given twice");
        fixed_subset_.push_back(pos);
      }
      std::sort(fixed_subset_.begin(), fixed_subset_.end());
    }
  }

  TaskSpec spec() const override { return {3, n_ + 1, 2}; }

  void prepare(uint64_t seed) override {
    SplitMix64 rng(seed);
    std::vector<int64_t> subset;
    for (uint64_t pos : sample_distinct(rng, static_cast<uint64_t>(n_), static_cast<uint64_t>(k_)))
      subset.push_back(static_cast<int64_t>(pos));
    std::sort(subset.begin(), subset.end());
    subset_ = fixed_subset_.empty() ? subset : fixed_subset_;

    const int64_t m = train_size_ + test_size_;
    const auto patterns =
        sample_distinct(rng, uint64_t{1} << n_, static_cast<uint64_t>(m));
    uint64_t mask = 0;
    for (int64_t pos : subset_) mask |= uint64_t{1} << pos;

    auto inputs = torch::empty({m, n_ + 1}, torch::kLong);
    auto targets = torch::full({m, n_ + 1}, -1, torch::kLong);
    auto in = inputs.accessor<int64_t, 2>();
    auto tg = targets.accessor<int64_t, 2>();
    for (int64_t e = 0; e < m; ++e) {
      const uint64_t x = patterns[static_cast<size_t>(e)];
      for (int64_t j = 0; j < n_; ++j) in[e][j] = static_cast<int64_t>((x >> j) & 1U);
      in[e][n_] = kReadoutToken;
      tg[e][n_] = static_cast<int64_t>(__builtin_popcountll(x & mask) & 1);
    }
    train_ = {inputs.narrow(0, 0, train_size_), targets.narrow(0, 0, train_size_)};
    test_ = {inputs.narrow(0, train_size_, test_size_), targets.narrow(0, train_size_, test_size_)};
  }

  std::vector<std::string> splits() const override { return {"train", "test"}; }

  int64_t size(const std::string& split) const override { return data(split).inputs.size(0); }

  Batch batch(const std::string& split, const torch::Tensor& indices) const override {
    const Batch& d = data(split);
    return {d.inputs.index_select(0, indices), d.targets.index_select(0, indices)};
  }

 private:
  const Batch& data(const std::string& split) const {
    if (!train_.inputs.defined()) throw std::logic_error("sparse_parity: prepare() was not called");
    if (split == "train") return train_;
    if (split == "test") return test_;
    throw std::invalid_argument("sparse_parity: no split named '" + split +
                                "' (splits: train, test)");
  }

  int64_t n_, k_, train_size_, test_size_;
  std::vector<int64_t> fixed_subset_;  // from the `subset` parameter, sorted; empty: drawn
  std::vector<int64_t> subset_;        // the hidden subset in use, sorted
  Batch train_, test_;
};

}  // namespace

GROKLAB_PLUGIN(sparse_parity, "1.0.0", GROKLAB_KIND_TASK, registrar) {
  registrar.add_task(
      "sparse_parity",
      "parity of a hidden k-subset of n random bits (Barak et al. 2022); tokens: n bits, then 2",
      groklab::Schema()
          .integer("n", 40, "input bits; the sequence is n bit tokens then the readout token 2")
          .range(1, kMaxBits)
          .integer("k", 3, "size of the hidden subset whose parity is the label (k <= n)")
          .range(1, kMaxBits)
          .integer("train_size", 1000, "distinct random inputs in the train split")
          .range(1, kMaxExamples)
          .integer("test_size", 1000, "distinct random inputs in the test split, none in train")
          .range(1, kMaxExamples)
          .list("subset", groklab::Value::List{},
                "the hidden positions (k distinct in [0, n)); [] draws them from the data-split seed",
                groklab::ParamType::Int),
      [](const Params& p) { return std::make_shared<SparseParity>(p); });
}

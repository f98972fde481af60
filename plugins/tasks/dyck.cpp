// dyck: Dyck-(k, m) language modelling, the structural-grokking task of
// Murty, Sharma, Andreas & Manning, "Grokking of Hierarchical Structure in
// Vanilla Transformers", ACL 2023 (their data_utils/dyck_helpers.py).
//
// Strings. k bracket types, named a, b, …, z, aa, bb, … (Murty's identifiers);
// `(x` opens and `x)` closes type x. A string is sampled token by token from
// the stack state: with an empty stack, END with probability 1/2, else each
// opening bracket 1/(2k); at depth 1…m−1, close the top bracket with
// probability 1/2, else each opening bracket 1/(2k); at depth m, close. An END
// drawn while the string is shorter than min_len is drawn again. With
// max_len > 0 a string that grows past max_len tokens is dropped and sampled
// anew (this conditions the distribution on length ≤ max_len).
//
// Randomness. One std::mt19937_64 seeded with the data-split seed, read two
// ways, in the order the sampler asks: a coin is the next bit of a 64-bit
// output (least significant first, 64 coins per output; 1 = END/close); a
// bracket type is the next 32-bit half of an output (low half first), u,
// redrawn while u ≥ 2³² − (2³² mod k), then u mod k. No <random> distribution
// is used, so the data are the same with every standard library.
//
// Splits, as Murty's get_training_data / get_test_data. `train`: the first
// train_size samples (duplicates kept). A string's parts are its top-level
// balanced substrings; a part's shape is its sequence of stack depths (its
// open/close pattern). Later samples are classified until both eval splits are
// full: `val` takes strings whose parts' shapes all occur in train and which
// are not themselves in train; `test` takes strings with at least one part
// whose shape never occurs in train (structurally unseen). Each eval split is
// then stably sorted by length, so that batches of consecutive examples (as
// metrics take them) are of similar length and trimmed padding is small.
//
// Tokens (the order of Murty's vocabulary): (x = 0…k−1, x) = k…2k−1,
// START = 2k, END = 2k+1; vocab = num_classes = 2k+2. A string t₁…tₙ is the
// causal-LM example inputs [START, t₁, …, tₙ], targets [t₁, …, tₙ, END]
// (n+1 positions). batch() pads to the longest example in the batch: inputs
// with END, targets with −1. seq_len is max_len+1 when max_len > 0 (shape
// independent of the seed), else the longest example over all splits.
//
// correct() scores positions, not examples: it returns int8 [B, L] with 1
// (right), 0 (wrong) or −1 (not scored), which the accuracy metric turns into
// the fraction of closing-bracket targets predicted right, as Murty's
// eval_callback_dyck: at a position whose target is a closing bracket the
// logits are restricted to the k closing brackets and the position is right
// iff the true one's logit is strictly greater than every other closing
// bracket's (a tie, or a NaN among them, is wrong — Murty's argmax would pick
// the first). Other targets (opening brackets, END) are not scored.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <torch/torch.h>

#include "groklab/components.h"
#include "tasks.h"

namespace groklab::tasks {
namespace {

// Strings of one split, tokens concatenated: string i is
// tokens[offsets[i], offsets[i+1]).
struct Corpus {
  std::u16string tokens;
  std::vector<int64_t> offsets{0};

  int64_t size() const { return static_cast<int64_t>(offsets.size()) - 1; }
  std::u16string_view at(int64_t i) const {
    const auto b = static_cast<size_t>(offsets[static_cast<size_t>(i)]);
    const auto e = static_cast<size_t>(offsets[static_cast<size_t>(i) + 1]);
    return std::u16string_view(tokens).substr(b, e - b);
  }
  void push(std::u16string_view s) {
    tokens.append(s);
    offsets.push_back(static_cast<int64_t>(tokens.size()));
  }
};

// The Dyck-(k, m) sampler (see the file comment for the draws).
class Sampler {
 public:
  Sampler(uint64_t seed, int64_t k, int64_t m, int64_t min_len, int64_t max_len)
      : gen_(seed), k_(static_cast<uint32_t>(k)), m_(static_cast<size_t>(m)),
        min_len_(static_cast<size_t>(min_len)), max_len_(static_cast<size_t>(max_len)),
        limit_(static_cast<uint64_t>(1) << 32) {
    limit_ -= limit_ % k_;
    stack_.reserve(m_);
  }

  // Replaces out with the next string (END not included).
  void sample(std::u16string& out) {
    for (int64_t attempt = 0;; ++attempt) {
      if (attempt == kMaxAttempts)
        throw std::runtime_error("dyck: " + std::to_string(kMaxAttempts) +
                                 " samples in a row were longer than max_len = " +
                                 std::to_string(max_len_) + "; raise max_len");
      if (draw(out)) return;
    }
  }

 private:
  static constexpr int64_t kMaxAttempts = 1000000;

  // One draw; false if it grew past max_len.
  bool draw(std::u16string& out) {
    out.clear();
    stack_.clear();
    for (;;) {
      const size_t d = stack_.size();
      if (d == m_ || (d > 0 && coin())) {
        out.push_back(static_cast<char16_t>(k_ + stack_.back()));
        stack_.pop_back();
      } else if (d == 0 && coin()) {
        if (out.size() >= min_len_) return true;
        continue;  // END before min_len: draw again
      } else {
        const auto x = static_cast<uint16_t>(bracket());
        stack_.push_back(x);
        out.push_back(static_cast<char16_t>(x));
      }
      if (max_len_ > 0 && out.size() > max_len_) return false;
    }
  }

  bool coin() {
    if (coins_left_ == 0) {
      coins_ = gen_();
      coins_left_ = 64;
    }
    const bool c = (coins_ & 1U) != 0;
    coins_ >>= 1;
    --coins_left_;
    return c;
  }

  uint32_t half() {
    if (have_half_) {
      have_half_ = false;
      return static_cast<uint32_t>(halves_ >> 32);
    }
    halves_ = gen_();
    have_half_ = true;
    return static_cast<uint32_t>(halves_);
  }

  uint32_t bracket() {
    for (;;) {
      const uint32_t u = half();
      if (u < limit_) return u % k_;
    }
  }

  std::mt19937_64 gen_;
  uint32_t k_;
  size_t m_, min_len_, max_len_;
  uint64_t limit_;
  std::vector<uint16_t> stack_;
  uint64_t coins_ = 0, halves_ = 0;
  int coins_left_ = 0;
  bool have_half_ = false;
};

// Calls f(key) for each top-level part of s, key = the part's open/close
// pattern packed 8 tokens a byte (open = 1, least significant bit first).
// Distinct balanced parts give distinct keys: one cannot be another plus
// closing brackets. Stops early when f returns false.
template <class F>
void for_each_part(std::u16string_view s, uint32_t k, std::string& key, F&& f) {
  key.clear();
  int64_t depth = 0;
  unsigned byte = 0;
  int bits = 0;
  for (const char16_t t : s) {
    const bool open = t < k;
    if (open) byte |= 1U << bits;
    if (++bits == 8) {
      key.push_back(static_cast<char>(byte));
      byte = 0;
      bits = 0;
    }
    depth += open ? 1 : -1;
    if (depth == 0) {
      if (bits > 0) key.push_back(static_cast<char>(byte));
      byte = 0;
      bits = 0;
      if (!f(key)) return;
      key.clear();
    }
  }
}

class Dyck final : public Task {
 public:
  explicit Dyck(const Params& params)
      : k_(params.get_int("k")),
        m_(params.get_int("max_depth")),
        train_size_(params.get_int("train_size")),
        eval_size_(params.get_int("eval_size")),
        min_len_(params.get_int("min_len")),
        max_len_(params.get_int("max_len")) {
    // The schema's ranges are checked when a manifest is composed; a direct
    // construction gets the same messages here.
    check_range("k", k_, 1, kMaxK);
    check_range("max_depth", m_, 1, kMaxDepth);
    check_range("train_size", train_size_, 1, kMaxSplit);
    check_range("eval_size", eval_size_, 1, kMaxSplit);
    check_range("min_len", min_len_, 0, kMaxLen);
    check_range("max_len", max_len_, 0, kMaxLen);
    const int64_t shortest = std::max<int64_t>(2, min_len_ + (min_len_ % 2));  // lengths are even
    if (max_len_ > 0 && max_len_ < shortest)
      throw std::invalid_argument("dyck: parameter max_len = " + std::to_string(max_len_) +
                                  " is below the shortest string allowed by min_len = " +
                                  std::to_string(min_len_) + " (" + std::to_string(shortest) +
                                  " tokens); use max_len = 0 (no cap) or at least " +
                                  std::to_string(shortest));
  }

  TaskSpec spec() const override {
    require_prepared();
    const int64_t vocab = 2 * k_ + 2;
    return {vocab, max_len_ > 0 ? max_len_ + 1 : longest_ + 1, vocab};
  }

  void prepare(uint64_t seed) override {
    const auto k = static_cast<uint32_t>(k_);
    Sampler sampler(seed, k_, m_, min_len_, max_len_);
    Corpus train, val, test;
    std::u16string s;
    for (int64_t i = 0; i < train_size_; ++i) {
      sampler.sample(s);
      train.push(s);
    }
    // Shapes of train's parts, and train's strings (views into train.tokens,
    // which no longer grows).
    std::unordered_set<std::string> shapes;
    std::unordered_set<std::u16string_view> seen;
    seen.reserve(static_cast<size_t>(train_size_));
    std::string key;
    for (int64_t i = 0; i < train.size(); ++i) {
      seen.insert(train.at(i));
      for_each_part(train.at(i), k, key, [&](const std::string& p) {
        shapes.insert(p);
        return true;
      });
    }
    const int64_t budget = kSampleBudgetPerExample * eval_size_ + kSampleBudget;
    int64_t drawn = 0;
    while (val.size() < eval_size_ || test.size() < eval_size_) {
      if (drawn++ == budget)
        throw std::runtime_error(
            "dyck: after " + std::to_string(budget) + " samples only " + std::to_string(val.size()) +
            " val and " + std::to_string(test.size()) + " test strings of eval_size = " +
            std::to_string(eval_size_) + " were found (k = " + std::to_string(k_) +
            ", max_depth = " + std::to_string(m_) + ", train_size = " + std::to_string(train_size_) +
            "): lower eval_size or change train_size, k or max_depth");
      sampler.sample(s);
      bool all_seen = true;
      for_each_part(s, k, key, [&](const std::string& p) {
        all_seen = shapes.count(p) > 0;
        return all_seen;
      });
      if (all_seen) {
        if (val.size() < eval_size_ && seen.count(s) == 0) val.push(s);
      } else if (test.size() < eval_size_) {
        test.push(s);
      }
    }
    train_ = std::move(train);
    val_ = sorted_by_length(val);
    test_ = sorted_by_length(test);
    longest_ = 0;
    for (const Corpus* c : {&train_, &val_, &test_})
      for (int64_t i = 0; i < c->size(); ++i)
        longest_ = std::max<int64_t>(longest_, static_cast<int64_t>(c->at(i).size()));
    prepared_ = true;
  }

  std::vector<std::string> splits() const override { return {"train", "val", "test"}; }

  int64_t size(const std::string& split) const override { return data(split).size(); }

  Batch batch(const std::string& split, const torch::Tensor& indices) const override {
    const Corpus& c = data(split);
    if (indices.dim() != 1 || indices.scalar_type() != torch::kLong)
      throw std::invalid_argument("dyck: batch indices must be a 1-D int64 tensor");
    const auto idx = indices.to(torch::kCPU).contiguous();
    const int64_t B = idx.size(0);
    const int64_t* ip = idx.data_ptr<int64_t>();
    int64_t T = 1;
    for (int64_t b = 0; b < B; ++b) {
      if (ip[b] < 0 || ip[b] >= c.size())
        throw std::out_of_range("dyck: index " + std::to_string(ip[b]) + " out of range for split '" +
                                split + "' of " + std::to_string(c.size()) + " strings");
      T = std::max<int64_t>(T, static_cast<int64_t>(c.at(ip[b]).size()) + 1);
    }
    const int64_t start = 2 * k_, end = 2 * k_ + 1;
    auto inputs = torch::full({B, T}, end, torch::kLong);
    auto targets = torch::full({B, T}, -1, torch::kLong);
    auto in = inputs.accessor<int64_t, 2>();
    auto tg = targets.accessor<int64_t, 2>();
    for (int64_t b = 0; b < B; ++b) {
      const auto s = c.at(ip[b]);
      const auto n = static_cast<int64_t>(s.size());
      in[b][0] = start;
      for (int64_t t = 0; t < n; ++t) {
        in[b][t + 1] = s[static_cast<size_t>(t)];
        tg[b][t] = s[static_cast<size_t>(t)];
      }
      tg[b][n] = end;
    }
    return {inputs, targets};
  }

  torch::Tensor sentence_indices(const std::string& split) const override {
    return torch::arange(size(split), torch::kLong);
  }

  // START and the string's brackets, with the gold tree of its bracket
  // structure, binarised right-branching: a matched pair `(x α x)` is a
  // constituent whose children are `(x`, the top-level pairs of α, and `x)`;
  // the root's children are the string's top-level pairs; a node with children
  // c₁…c_m (m > 2) becomes c₁ (c₂ (… (c_{m−1} c_m))).
  Sentence sentence(const std::string& split, int64_t index) const override {
    const Corpus& c = data(split);
    if (index < 0 || index >= c.size())
      throw std::out_of_range("dyck: sentence " + std::to_string(index) + " out of range for split '" +
                              split + "' of " + std::to_string(c.size()) + " strings");
    const auto s = c.at(index);
    const auto n = static_cast<int64_t>(s.size());
    Sentence out;
    out.inputs.push_back(2 * k_);
    for (const char16_t t : s) out.inputs.push_back(t);
    // Children (word spans, 1-based inclusive) of each open node; a stack of
    // child lists, the root's at the bottom.
    std::vector<std::vector<std::pair<int64_t, int64_t>>> stack(1);
    auto close = [&out](const std::vector<std::pair<int64_t, int64_t>>& kids) {
      if (kids.size() < 2) return;
      // Right-branching: the suffix c_q…c_m for q = m−1 down to 1 (c₁…c_m is the node).
      for (size_t q = kids.size() - 1; q-- > 0;)
        out.gold.emplace_back(kids[q].first, kids.back().second);
    };
    for (int64_t p = 1; p <= n; ++p) {
      if (s[static_cast<size_t>(p - 1)] < k_) {
        stack.push_back({{p, p}});
      } else {
        auto kids = std::move(stack.back());
        stack.pop_back();
        kids.emplace_back(p, p);
        close(kids);
        stack.back().emplace_back(kids.front().first, p);
      }
    }
    if (stack.size() != 1) throw std::logic_error("dyck: unbalanced string in split '" + split + "'");
    close(stack.front());
    return out;
  }

  torch::Tensor correct(const torch::Tensor& logits, const Batch& batch) const override {
    if (logits.dim() != 3 || logits.size(2) != 2 * k_ + 2 || logits.size(1) > batch.targets.size(1) ||
        logits.size(0) != batch.targets.size(0))
      throw std::invalid_argument("dyck: logits " + shape(logits) + " do not fit targets " +
                                  shape(batch.targets) + " with " + std::to_string(2 * k_ + 2) +
                                  " classes");
    const int64_t L = logits.size(1);
    const auto targets = batch.targets.narrow(1, batch.targets.size(1) - L, L).to(logits.device());
    const auto closing = targets.ge(k_).logical_and(targets.lt(2 * k_));       // [B, L]
    const auto closers = logits.narrow(2, k_, k_);                               // [B, L, k]
    const auto which = torch::where(closing, targets - k_, torch::zeros_like(targets)).unsqueeze(2);
    const auto truth = closers.gather(2, which);                                 // [B, L, 1]
    // Right iff truth is a number and the only closing logit ≥ truth (NaNs
    // count as ≥ anything).
    const auto at_least = closers.ge(truth).logical_or(closers.isnan()).sum(2);  // [B, L]
    const auto right = at_least.eq(1).logical_and(truth.squeeze(2).isnan().logical_not());
    auto out = right.to(torch::kChar);
    out.masked_fill_(closing.logical_not(), -1);
    return out;
  }

 private:
  static constexpr int64_t kMaxK = 1000, kMaxDepth = 1000, kMaxSplit = 100000000,
                           kMaxLen = 1000000;
  // val and test must fill within this many samples: 200 per eval example
  // plus a million.
  static constexpr int64_t kSampleBudgetPerExample = 200, kSampleBudget = 1000000;

  static void check_range(const char* name, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi)
      throw std::invalid_argument(std::string("dyck: parameter ") + name + " = " + std::to_string(v) +
                                  " is out of range [" + std::to_string(lo) + ", " +
                                  std::to_string(hi) + "]");
  }

  static std::string shape(const torch::Tensor& t) {
    std::string s = "[";
    for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
    return s + "]";
  }

  static Corpus sorted_by_length(const Corpus& c) {
    std::vector<int64_t> order(static_cast<size_t>(c.size()));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return c.at(a).size() < c.at(b).size(); });
    Corpus out;
    out.tokens.reserve(c.tokens.size());
    for (const int64_t i : order) out.push(c.at(i));
    return out;
  }

  void require_prepared() const {
    if (!prepared_) throw std::logic_error("dyck: prepare() was not called");
  }

  const Corpus& data(const std::string& split) const {
    require_prepared();
    if (split == "train") return train_;
    if (split == "val") return val_;
    if (split == "test") return test_;
    throw std::invalid_argument("dyck: no split named '" + split + "' (splits: train, val, test)");
  }

  int64_t k_, m_, train_size_, eval_size_, min_len_, max_len_;
  Corpus train_, val_, test_;
  int64_t longest_ = 0;
  bool prepared_ = false;
};

}  // namespace

void register_dyck(Registrar& r) {
  r.add_task(
      "dyck",
      "Dyck-(k, m) causal language modelling (Murty et al. 2023); val: seen structures, "
      "test: structurally unseen; accuracy over closing-bracket positions",
      Schema()
          .integer("k", 20, "bracket types (tokens (x = 0..k-1, x) = k..2k-1, START 2k, END 2k+1)")
          .range(1, 1000)
          .integer("max_depth", 10, "m: the deepest nesting; at depth m the top bracket closes")
          .range(1, 1000)
          .integer("train_size", 200000, "strings sampled for the train split (duplicates kept)")
          .range(1, 100000000)
          .integer("eval_size", 20000, "strings in each of val and test")
          .range(1, 100000000)
          .integer("min_len", 4, "an END drawn before this many tokens is drawn again")
          .range(0, 1000000)
          .integer("max_len", 0,
                   "0: no cap (seq_len = longest string + 1); else strings longer than this are "
                   "resampled and seq_len = max_len + 1")
          .range(0, 1000000),
      [](const Params& p) { return std::make_shared<Dyck>(p); });
}

}  // namespace groklab::tasks

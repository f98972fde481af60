// The dyck task (Murty et al. 2023 structural grokking): its generator against
// their val file, determinism, split definitions, batches, the closing-bracket
// accuracy, bad parameters, the depth-sweep preset end to end; and
// modular_arithmetic's Power et al. format.
#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>

#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "builtins.h"
#include "groklab/components.h"
#include "groklab/host.h"
#include "groklab/manifest.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace groklab;
using test::builtins;
using test::params_for;
using test::run_groklab;
using Result = test::CommandResult;

namespace {

const std::string kValFile = std::string(GROKLAB_SOURCE_DIR) + "/tests/data/dyck/k-20_d-10_val.txt";
const std::string kPreset =
    std::string(GROKLAB_SOURCE_DIR) + "/manifests/structural_grokking/dyck_depth_sweep.toml";

std::shared_ptr<Task> make_task(const std::string& name, std::map<std::string, Value> set = {}) {
  return builtins().find(Kind::Task, name)->make_task(params_for(Kind::Task, name, std::move(set)));
}

std::shared_ptr<Task> dyck(std::map<std::string, Value> set, uint64_t seed) {
  auto t = make_task("dyck", std::move(set));
  t->prepare(seed);
  return t;
}

using Str = std::vector<int64_t>;  // one string's tokens, END excluded

// The strings of a split, read back through batch(): inputs [START, t…],
// targets [t…, END, -1…].
std::vector<Str> strings(const Task& task, const std::string& split, int64_t k) {
  std::vector<Str> out;
  const int64_t n = task.size(split);
  for (int64_t start = 0; start < n; start += 1000) {
    Batch b = task.batch(split, torch::arange(start, std::min(n, start + 1000), torch::kLong));
    auto in = b.inputs.accessor<int64_t, 2>();
    auto tg = b.targets.accessor<int64_t, 2>();
    const int64_t T = b.inputs.size(1);
    for (int64_t r = 0; r < b.inputs.size(0); ++r) {
      Str s;
      bool ok = in[r][0] == 2 * k;
      int64_t t = 0;
      for (; ok && t < T && tg[r][t] != 2 * k + 1; ++t) {
        ok = tg[r][t] >= 0 && tg[r][t] < 2 * k && t + 1 < T && in[r][t + 1] == tg[r][t];
        s.push_back(tg[r][t]);
      }
      if (!ok || t == T) FAIL(split << " string " << start + r << " is not [START, t…] → [t…, END]");
      out.push_back(std::move(s));
    }
  }
  return out;
}

struct Stats {
  double length = 0, depth = 0, parts = 0;
  size_t n = 0;
  void add(const std::vector<bool>& opens) {  // true = opening bracket
    int64_t d = 0, md = 0, p = 0;
    for (bool o : opens) {
      d += o ? 1 : -1;
      md = std::max(md, d);
      if (d == 0) ++p;
    }
    length += static_cast<double>(opens.size());
    depth += static_cast<double>(md);
    parts += static_cast<double>(p);
    ++n;
  }
  double mean_length() const { return length / static_cast<double>(n); }
  double mean_depth() const { return depth / static_cast<double>(n); }
  double mean_parts() const { return parts / static_cast<double>(n); }
};

std::vector<bool> opens_of(const Str& s, int64_t k) {
  std::vector<bool> o;
  for (int64_t t : s) o.push_back(t < k);
  return o;
}

// The depth sequence of each top-level part of s.
std::vector<std::vector<int>> part_shapes(const Str& s, int64_t k) {
  std::vector<std::vector<int>> out;
  std::vector<int> cur;
  int d = 0;
  for (int64_t t : s) {
    d += t < k ? 1 : -1;
    if (d == 0) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(d);
    }
  }
  return out;
}

uint64_t fnv(uint64_t h, int64_t v) {
  for (int i = 0; i < 8; ++i) {
    h ^= static_cast<uint64_t>(v >> (8 * i)) & 0xffU;
    h *= 1099511628211ULL;
  }
  return h;
}

// A hash of every split's strings and the spec.
uint64_t task_hash(const Task& task, int64_t k) {
  uint64_t h = 14695981039346656037ULL;
  for (const auto& split : task.splits()) {
    for (const auto& s : strings(task, split, k)) {
      for (int64_t t : s) h = fnv(h, t);
      h = fnv(h, -1);
    }
    h = fnv(h, -2);
  }
  const TaskSpec spec = task.spec();
  return fnv(fnv(fnv(h, spec.vocab_size), spec.seq_len), spec.num_classes);
}

// Returns logits rows selected by inputs[:, 0] (the row index), for a task
// whose inputs carry it.
struct FixedModel : Model {
  torch::Tensor logits;
  explicit FixedModel(torch::Tensor l) : logits(std::move(l)) {}
  torch::Tensor forward(const torch::Tensor& inputs) override {
    return logits.index_select(0, inputs.select(1, 0));
  }
};

// Golden batch rows behind a Task, scored by the dyck task's correct().
struct GoldenTask : Task {
  Batch golden;
  std::shared_ptr<Task> scorer;
  bool float_correct = false;  // return a float [B, L] from correct() (an error for accuracy)
  TaskSpec spec() const override { return {6, golden.targets.size(1), 6}; }
  void prepare(uint64_t) override {}
  std::vector<std::string> splits() const override { return {"golden"}; }
  int64_t size(const std::string&) const override { return golden.inputs.size(0); }
  Batch batch(const std::string&, const torch::Tensor& idx) const override {
    return {golden.inputs.index_select(0, idx), golden.targets.index_select(0, idx)};
  }
  torch::Tensor correct(const torch::Tensor& logits, const Batch& b) const override {
    auto c = scorer->correct(logits, b);
    return float_correct ? c.to(torch::kFloat) : c;
  }
};

// The closing-bracket oracle: at each position, logit 1 on the closing
// bracket of the open top of the stack. wrong_first: at each string's first
// closing bracket, logit 2 on another closing bracket instead.
struct OracleModel : Model {
  int64_t k;
  bool wrong_first;
  OracleModel(int64_t k_, bool wrong) : k(k_), wrong_first(wrong) {}
  torch::Tensor forward(const torch::Tensor& inputs) override {
    const int64_t B = inputs.size(0), T = inputs.size(1);
    auto out = torch::zeros({B, T, 2 * k + 2});
    auto in = inputs.accessor<int64_t, 2>();
    auto o = out.accessor<float, 3>();
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int64_t> stack;
      bool closed_once = false;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t tok = in[b][t];
        if (tok < k) stack.push_back(tok);
        if (tok >= k && tok < 2 * k) {
          stack.pop_back();
          closed_once = true;
        }
        if (stack.empty()) continue;
        // The next token, if a closing one, closes stack.back(). The first
        // closing target comes right after the first run of opening brackets.
        const bool first = !closed_once;
        if (wrong_first && first)
          o[b][t][k + (stack.back() + 1) % k] = 2;
        else
          o[b][t][k + stack.back()] = 1;
      }
    }
    return out;
  }
};

double accuracy(Task& task, Model& model, const std::string& split, int64_t batch_size) {
  auto metric = builtins().find(Kind::Metric, "accuracy")
                    ->make_metric(params_for(Kind::Metric, "accuracy",
                                             {{"split", split}, {"batch_size", batch_size}}));
  EvalContext ctx;
  ctx.model = &model;
  ctx.task = &task;
  return metric->evaluate(ctx).at(split + "_accuracy");
}

// The value after "  name " in the CLI's final metrics (NaN if absent).
double metric_value(const std::string& out, const std::string& name) {
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key;
    double v;
    if (words >> key && key == name && words >> v) return v;
  }
  return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

TEST_CASE("dyck: the val split matches Murty et al.'s k-20_d-10_val.txt", "[dyck][statistics]") {
  // Their file, parsed: `(x` / `x)` with x in a..t, depth ≤ 10, a final END.
  std::ifstream file(kValFile);
  REQUIRE(file.good());
  Stats theirs;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(file, line)) {
    ++line_no;
    std::istringstream words(line);
    std::vector<std::string> toks;
    for (std::string w; words >> w;) toks.push_back(w);
    bool ok = toks.size() >= 2 && toks.back() == "END";
    if (ok) toks.pop_back();
    std::vector<bool> opens;
    std::vector<char> stack;
    for (const auto& w : toks) {
      if (!ok) break;
      if (w.size() == 2 && w[0] == '(' && w[1] >= 'a' && w[1] <= 't' && stack.size() < 10) {
        stack.push_back(w[1]);
        opens.push_back(true);
      } else if (w.size() == 2 && w[1] == ')' && !stack.empty() && stack.back() == w[0]) {
        stack.pop_back();
        opens.push_back(false);
      } else {
        ok = false;
      }
    }
    if (!ok || !stack.empty()) FAIL(kValFile << ":" << line_no << ": not a Dyck-(20, 10) string + END");
    theirs.add(opens);
  }
  REQUIRE(theirs.n == 20000);
  CHECK(theirs.mean_length() == Approx(13.27).margin(0.005));
  CHECK(theirs.mean_depth() == Approx(3.07).margin(0.005));
  CHECK(theirs.mean_parts() == Approx(2.57).margin(0.005));

  // The full pipeline with the defaults: 200k train strings, 20k val and test.
  auto task = make_task("dyck");
  const auto t0 = std::chrono::steady_clock::now();
  task->prepare(20230601);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(task->size("train") == 200000);
  REQUIRE(task->size("val") == 20000);
  REQUIRE(task->size("test") == 20000);
  Stats val, test;
  for (const auto& s : strings(*task, "val", 20)) val.add(opens_of(s, 20));
  for (const auto& s : strings(*task, "test", 20)) test.add(opens_of(s, 20));
  INFO("prepare " << seconds << " s; val mean length " << val.mean_length() << ", max depth "
                  << val.mean_depth() << ", parts " << val.mean_parts() << "; theirs "
                  << theirs.mean_length() << ", " << theirs.mean_depth() << ", "
                  << theirs.mean_parts() << "; test mean length " << test.mean_length());
  CHECK(val.mean_length() == Approx(theirs.mean_length()).epsilon(0.03));
  CHECK(val.mean_depth() == Approx(theirs.mean_depth()).epsilon(0.03));
  CHECK(val.mean_parts() == Approx(theirs.mean_parts()).epsilon(0.03));
  // Structurally unseen strings are long and deep: unseen shapes are rare ones.
  CHECK(test.mean_length() > 5 * val.mean_length());
  CHECK(test.mean_depth() > 2 * val.mean_depth());
  CHECK(seconds < 15.0);  // about 0.5 s on an idle core
}

TEST_CASE("dyck: the generator follows the PDFA's transition probabilities", "[dyck][generator]") {
  const int64_t k = 20, m = 10;
  auto task = dyck({{"train_size", 50000}, {"eval_size", 500}}, 7);
  const auto train = strings(*task, "train", k);
  REQUIRE(train.size() == 50000);
  int64_t end_at_zero = 0, open_at_zero = 0, close_mid = 0, open_mid = 0, at_max = 0;
  std::vector<int64_t> type_count(static_cast<size_t>(k), 0);
  int64_t short_strings = 0, bad = 0;
  for (const auto& s : train) {
    if (s.size() < 4) ++short_strings;  // min_len
    std::vector<int64_t> stack;
    for (size_t i = 0; i <= s.size(); ++i) {
      const size_t d = stack.size();
      if (i == s.size()) {  // END, at an empty stack only
        if (d != 0) ++bad;
        ++end_at_zero;
        break;
      }
      const int64_t t = s[i];
      if (t < k) {
        if (d >= static_cast<size_t>(m)) ++bad;  // never deeper than m
        ++type_count[static_cast<size_t>(t)];
        if (d == 0 && i >= 4) ++open_at_zero;
        if (d > 0) ++open_mid;
        stack.push_back(t);
      } else if (d == 0 || t != k + stack.back()) {  // must close the top bracket
        ++bad;
        break;
      } else {
        if (d == static_cast<size_t>(m)) ++at_max;
        else ++close_mid;
        stack.pop_back();
      }
    }
  }
  CHECK(short_strings == 0);
  CHECK(bad == 0);
  // At an empty stack (past min_len), END half the time; in between, close half the time.
  const double p_end = static_cast<double>(end_at_zero) / static_cast<double>(end_at_zero + open_at_zero);
  const double p_close = static_cast<double>(close_mid) / static_cast<double>(close_mid + open_mid);
  INFO("P(END | empty) " << p_end << ", P(close | 0 < depth < m) " << p_close << ", closes at m " << at_max);
  CHECK(p_end == Approx(0.5).margin(0.01));
  CHECK(p_close == Approx(0.5).margin(0.003));
  CHECK(at_max > 0);
  const double mean = static_cast<double>(std::accumulate(type_count.begin(), type_count.end(), int64_t{0})) /
                      static_cast<double>(k);
  for (int64_t c : type_count) CHECK(static_cast<double>(c) == Approx(mean).epsilon(0.03));
}

TEST_CASE("dyck: the same seed gives the same bytes, another seed others", "[dyck][determinism]") {
  const std::map<std::string, Value> small{{"train_size", 20000}, {"eval_size", 2000}};
  const uint64_t a = task_hash(*dyck(small, 11), 20);
  CHECK(task_hash(*dyck(small, 11), 20) == a);
  CHECK(task_hash(*dyck(small, 12), 20) != a);
  auto other_k = dyck({{"train_size", 20000}, {"eval_size", 2000}, {"k", 5}}, 11);
  CHECK(task_hash(*other_k, 5) != a);
}

TEST_CASE("dyck: val is unseen strings of seen structure, test has an unseen structure",
          "[dyck][splits]") {
  const int64_t k = 20;
  auto task = dyck({{"train_size", 20000}, {"eval_size", 2000}}, 3);
  REQUIRE(task->splits() == std::vector<std::string>{"train", "val", "test"});
  const auto train = strings(*task, "train", k);
  const auto val = strings(*task, "val", k);
  const auto test = strings(*task, "test", k);
  REQUIRE(train.size() == 20000);
  REQUIRE(val.size() == 2000);
  REQUIRE(test.size() == 2000);
  const std::set<Str> train_set(train.begin(), train.end());
  std::set<std::vector<int>> shapes;
  for (const auto& s : train)
    for (auto& p : part_shapes(s, k)) shapes.insert(std::move(p));
  CHECK(train_set.size() < train.size());  // duplicates are kept, as Murty's
  for (const auto& s : val) {
    CHECK(train_set.count(s) == 0);
    for (const auto& p : part_shapes(s, k)) CHECK(shapes.count(p) == 1);
  }
  for (const auto& s : test) {
    bool unseen = false;
    for (const auto& p : part_shapes(s, k)) unseen = unseen || shapes.count(p) == 0;
    CHECK(unseen);
  }
  // Eval splits are sorted by length.
  for (const auto* split : {&val, &test})
    for (size_t i = 1; i < split->size(); ++i) CHECK((*split)[i - 1].size() <= (*split)[i].size());
}

TEST_CASE("dyck: batches are START-prefixed, END-terminated, padded and trimmed", "[dyck][batch]") {
  const int64_t k = 2;
  auto task = dyck({{"k", k}, {"max_depth", 3}, {"train_size", 500}, {"eval_size", 50}}, 5);
  const TaskSpec spec = task->spec();
  CHECK(spec.vocab_size == 6);
  CHECK(spec.num_classes == 6);
  int64_t longest = 0;
  for (const auto& split : task->splits())
    for (const auto& s : strings(*task, split, k)) longest = std::max<int64_t>(longest, static_cast<int64_t>(s.size()));
  CHECK(spec.seq_len == longest + 1);

  // Two val strings of different lengths (val is sorted by length).
  const int64_t last = task->size("val") - 1;
  Batch b = task->batch("val", torch::tensor({int64_t{0}, last}));
  const auto all_val = strings(*task, "val", k);
  const Str& s0 = all_val.front();
  const Str& s1 = all_val.back();
  REQUIRE(s0.size() < s1.size());
  const auto T = static_cast<int64_t>(s1.size()) + 1;
  REQUIRE(b.inputs.sizes() == torch::IntArrayRef({2, T}));
  REQUIRE(b.targets.sizes() == torch::IntArrayRef({2, T}));
  const auto n0 = static_cast<int64_t>(s0.size());
  CHECK(b.inputs[0][0].item<int64_t>() == 4);          // START
  CHECK(b.targets[0][n0].item<int64_t>() == 5);        // END
  for (int64_t t = n0 + 1; t < T; ++t) {
    CHECK(b.targets[0][t].item<int64_t>() == -1);      // padding carries no loss
    CHECK(b.inputs[0][t].item<int64_t>() == 5);        // and END as input
  }
  CHECK(b.targets[1][T - 1].item<int64_t>() == 5);
  // A batch of the shortest string alone is trimmed to it.
  CHECK(task->batch("val", torch::tensor({int64_t{0}})).inputs.size(1) == n0 + 1);

  // max_len caps every string and fixes seq_len.
  auto capped = dyck({{"k", k}, {"max_depth", 3}, {"train_size", 500}, {"eval_size", 50}, {"max_len", 12}}, 5);
  CHECK(capped->spec().seq_len == 13);
  for (const auto& split : capped->splits())
    for (const auto& s : strings(*capped, split, k)) CHECK(s.size() <= 12);
}

TEST_CASE("dyck: accuracy is over closing-bracket positions, restricted to closing brackets",
          "[dyck][accuracy]") {
  // k = 2: (a 0, (b 1, a) 2, b) 3, START 4, END 5.
  auto task = dyck({{"k", 2}, {"max_depth", 3}, {"train_size", 200}, {"eval_size", 20}}, 1);
  auto longs = [](std::vector<int64_t> v) { return torch::tensor(v, torch::kLong).view({3, 5}); };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  Batch golden;
  golden.targets = longs({0, 1, 3, 2, 5,      // (a (b b) a) END
                          1, 3, 5, -1, -1,    // (b b) END, padded
                          0, 2, 1, 3, 5});    // (a a) (b b) END
  golden.inputs = longs({0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2});  // row ids
  auto logits = torch::zeros({3, 5, 6});
  auto set = [&](int64_t r, int64_t t, std::array<float, 6> v) {
    for (int64_t c = 0; c < 6; ++c) logits[r][t][c] = v[static_cast<size_t>(c)];
  };
  set(0, 0, {0, 0, 9, 0, 0, 0});      // opening target: not scored
  set(0, 2, {0, 0, 1, 2, 0, 9});      // b) beats a); END's 9 is outside the restriction: right
  set(0, 3, {0, 0, .5, .5, 0, 0});    // a) ties b): wrong
  set(0, 4, {0, 0, 7, 0, 0, 0});      // END target: not scored
  set(1, 1, {0, 0, 3, 1, 0, 0});      // b) true, a) higher: wrong
  set(1, 3, {0, 0, 5, 0, 0, 0});      // padding: not scored
  set(2, 1, {0, 0, nan, 0, 0, 0});    // the true logit is NaN: wrong
  set(2, 3, {0, 0, nan, 1, 0, 0});    // another closing logit is NaN: wrong
  const auto expected = longs({-1, -1, 1, 0, -1, -1, 0, -1, -1, -1, -1, 0, -1, 0, -1});
  auto c = task->correct(logits, golden);
  CHECK(c.scalar_type() == torch::kChar);
  CHECK(torch::equal(c.to(torch::kLong), expected));
  // Logits for the last L positions only are aligned with the last L targets.
  CHECK(torch::equal(task->correct(logits.narrow(1, 2, 3), golden).to(torch::kLong), expected.narrow(1, 2, 3)));
  // -inf is a number: a) at -inf loses to b).
  set(2, 3, {0, 0, -inf, 1, 0, 0});
  CHECK(task->correct(logits, golden)[2][3].item<int>() == 1);
  set(2, 3, {0, 0, nan, 1, 0, 0});
  // Wrong class count is a clear error.
  CHECK_THROWS_WITH(task->correct(torch::zeros({3, 5, 7}), golden), Catch::Contains("dyck: logits [3, 5, 7]"));

  // Through the accuracy metric: 1 of 5 scored positions (per example it would be 0 of 3).
  GoldenTask g;
  g.golden = golden;
  g.scorer = task;
  FixedModel model(logits);
  for (int64_t bs : {0, 1, 2}) CHECK(accuracy(g, model, "golden", bs) == Approx(0.2).margin(1e-12));
  g.float_correct = true;
  CHECK_THROWS_WITH(accuracy(g, model, "golden", 0),
                    Catch::Contains("accuracy: Task::correct returned a 2-d Float tensor"));
}

TEST_CASE("dyck: the accuracy metric counts positions on real splits", "[dyck][accuracy]") {
  const int64_t k = 20;
  auto task = dyck({{"train_size", 5000}, {"eval_size", 300}}, 9);
  OracleModel oracle(k, false), first_wrong(k, true);
  for (const std::string split : {"val", "test"}) {
    INFO(split);
    const auto ss = strings(*task, split, k);
    double closing = 0;
    for (const auto& s : ss) closing += static_cast<double>(s.size()) / 2;
    CHECK(accuracy(*task, oracle, split, 37) == 1.0);
    const double want = 1.0 - static_cast<double>(ss.size()) / closing;
    CHECK(accuracy(*task, first_wrong, split, 37) == Approx(want).margin(1e-12));
    CHECK(accuracy(*task, first_wrong, split, 0) == Approx(want).margin(1e-12));
  }
}

TEST_CASE("dyck: bad parameters and calls are clear errors", "[dyck][bad-input]") {
  CHECK_THROWS_WITH(make_task("dyck", {{"max_len", 3}}),
                    Catch::Contains("dyck: parameter max_len = 3 is below the shortest string allowed by "
                                    "min_len = 4 (4 tokens)"));
  CHECK_THROWS_WITH(make_task("dyck", {{"min_len", 5}, {"max_len", 5}}), Catch::Contains("(6 tokens)"));
  CHECK_NOTHROW(make_task("dyck", {{"min_len", 5}, {"max_len", 6}}));
  CHECK_THROWS_WITH(make_task("dyck", {{"k", 0}}),
                    Catch::Contains("dyck: parameter k = 0 is out of range [1, 1000]"));
  CHECK_THROWS_WITH(make_task("dyck", {{"max_depth", -1}}), Catch::Contains("parameter max_depth = -1"));

  auto unprepared = make_task("dyck");
  CHECK_THROWS_WITH(unprepared->spec(), Catch::Contains("dyck: prepare() was not called"));
  CHECK_THROWS_WITH(unprepared->size("train"), Catch::Contains("dyck: prepare() was not called"));

  auto task = dyck({{"train_size", 100}, {"eval_size", 10}}, 0);
  CHECK_THROWS_WITH(task->size("valid"), Catch::Contains("dyck: no split named 'valid' (splits: train, val, test)"));
  CHECK_THROWS_WITH(task->batch("val", torch::tensor({int64_t{10}})),
                    Catch::Contains("dyck: index 10 out of range for split 'val' of 10 strings"));
  CHECK_THROWS_WITH(task->batch("val", torch::tensor({0.0})), Catch::Contains("1-D int64"));

  // One bracket type at depth 1 has one structure: no string is structurally unseen.
  auto impossible = make_task("dyck", {{"k", 1}, {"max_depth", 1}, {"train_size", 1000}, {"eval_size", 1}});
  CHECK_THROWS_WITH(impossible->prepare(0), Catch::Contains("val and 0 test strings of eval_size = 1") &&
                                                Catch::Contains("lower eval_size"));

  // In a manifest, the schema names the file, line and parameter.
  Composer composer(builtins());
  const std::string bad =
      "[task]\nplugin = \"dyck\"\nk = 0\n[architecture]\nplugin = \"transformer\"\n"
      "[optimizer]\nplugin = \"adamw\"\n";
  try {
    composer.compose_string(bad, "bad.toml");
    FAIL("composing k = 0 did not throw");
  } catch (const ManifestErrors& e) {
    CHECK_THAT(e.what(), Catch::Contains("bad.toml:3:") && Catch::Contains("task.k"));
  }
}

TEST_CASE("modular_arithmetic: the power format is `a ∘ b =` with the answer at `=`",
          "[modular_arithmetic][power]") {
  const int64_t p = 97;
  auto answer = make_task("modular_arithmetic", {{"p", p}});
  auto power = make_task("modular_arithmetic", {{"p", p}, {"format", "power"}});
  answer->prepare(4);
  power->prepare(4);
  CHECK(answer->spec().vocab_size == p + 1);  // the default is unchanged
  CHECK(answer->spec().seq_len == 3);
  const TaskSpec s = power->spec();
  CHECK(s.vocab_size == p + 2);
  CHECK(s.seq_len == 4);
  CHECK(s.num_classes == p + 2);
  for (const std::string split : {"train", "test"}) {
    REQUIRE(power->size(split) == answer->size(split));
    const auto idx = torch::arange(answer->size(split));
    Batch a = answer->batch(split, idx), b = power->batch(split, idx);
    // The same pairs in the same order: a ∘ b = with ∘ = p+1 and = = p.
    CHECK(torch::equal(b.inputs.select(1, 0), a.inputs.select(1, 0)));
    CHECK(torch::equal(b.inputs.select(1, 2), a.inputs.select(1, 1)));
    CHECK(torch::equal(b.inputs.select(1, 1), torch::full({idx.size(0)}, p + 1, torch::kLong)));
    CHECK(torch::equal(b.inputs.select(1, 3), torch::full({idx.size(0)}, p, torch::kLong)));
    CHECK(torch::equal(b.targets.select(1, 3), a.targets.select(1, 2)));
    CHECK(torch::equal(b.targets.narrow(1, 0, 3), torch::full({idx.size(0), 3}, -1, torch::kLong)));
    // (a + b) mod p
    CHECK(torch::equal(b.targets.select(1, 3), (b.inputs.select(1, 0) + b.inputs.select(1, 2)).remainder(p)));
  }
}

TEST_CASE("the dyck depth-sweep preset composes to 50 runs and trains end to end", "[dyck][manifest]") {
  Composer composer(builtins());
  const auto children = composer.expand(kPreset);
  REQUIRE(children.size() == 50);
  const ResolvedConfig& c = children.front().config;
  CHECK(c.task.plugin == "dyck");
  CHECK(c.architecture.params.get_bool("causal"));
  CHECK(c.architecture.params.get_string("layer_norm") == "post");
  CHECK(c.architecture.params.get_string("readout") == "all");
  CHECK(c.optimizer.params.get_float("eps") == 1e-7);
  CHECK(c.optimizer.params.get_int("decay_steps") == 2000000);
  CHECK(c.run.batch_size == 8);
  CHECK(children.back().config.architecture.params.get_int("depth") == 10);
  CHECK(children.back().config.run.seed == 9);

  // One child, tiny, through the real CLI into a temporary ledger; then replayed.
  const fs::path dir = fs::temp_directory_path() / ("groklab-dyck-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string ledger = " --ledger " + (dir / "ledger").string();
  const std::string overrides =
      " architecture.depth=2 run.seed=0 architecture.d_model=64 architecture.heads=2 "
      "architecture.d_ff=128 run.steps=50 run.eval_every=25 run.checkpoint_every=25 "
      "task.train_size=2000 task.eval_size=100 optimizer.warmup_steps=10 metrics.3.sentences=20";
  Result run = run_groklab("-q run " + kPreset + overrides + ledger);
  INFO(run.out);
  REQUIRE(run.status == 0);
  for (const char* m : {"val_accuracy", "test_accuracy"}) {
    const double v = metric_value(run.out, m);
    CHECK(v >= 0.0);
    CHECK(v <= 1.0);
  }
  CHECK(metric_value(run.out, "val_loss") > 0.0);
  CHECK(metric_value(run.out, "train_tscore") > 0.0);  // the best split never scores below a random one
  for (const char* m : {"train_tparseval", "weight_norm_per_layer"}) CHECK(metric_value(run.out, m) > 0.0);
  CHECK(metric_value(run.out, "train_attention_sparsity") < 0.0);
  const auto at = run.out.find("run ");
  REQUIRE(at != std::string::npos);
  const std::string id = run.out.substr(at + 4, run.out.find(' ', at + 4) - at - 4);
  Result replay = run_groklab("-q replay " + id + ledger);
  INFO(replay.out);
  CHECK(replay.status == 0);
  CHECK_THAT(replay.out, Catch::Contains("bit-identical"));
  fs::remove_all(dir);
}

// question_formation and tense_inflection (McCoy et al. 2020 data, Murty et
// al. 2023 accuracies): shipped data parses, generated data matches the shipped
// statistics and is disjoint and deterministic, splits and batches, the two
// accuracy definitions on hand-made outputs, errors, and the presets train.
#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>

#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "builtins.h"
#include "groklab/components.h"
#include "groklab/host.h"
#include "mccoy_data.h"
#include "support.h"

using namespace groklab;
using test::builtins;
using test::params_for;
using test::TempDir;
using Result = test::CommandResult;
namespace fs = std::filesystem;

namespace {

// Runs groklab -q ARGS; captures stdout+stderr.
Result run_groklab(const std::string& args) { return test::run_groklab("-q " + args); }

const std::string kData = std::string(GROKLAB_SOURCE_DIR) + "/data";
const std::string kQF = kData + "/question_formation/";
const std::string kTI = kData + "/tense_inflection/";

std::shared_ptr<Task> make_task(const std::string& name, std::map<std::string, Value> set = {}) {
  return builtins().find(Kind::Task, name)->make_task(params_for(Kind::Task, name, std::move(set)));
}

std::vector<std::string> lines_of(const std::string& file) {
  std::ifstream in(file);
  std::vector<std::string> out;
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

std::string slurp(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

// Share of lines with " MARKER\t" and the distribution of source lengths.
struct Stats {
  double share = 0;
  std::map<size_t, double> lengths;
};
Stats stats(const std::vector<std::string>& lines, const std::string& marker) {
  Stats s;
  for (const auto& l : lines) {
    if (l.find(" " + marker + "\t") != std::string::npos) s.share += 1;
    std::istringstream in(l.substr(0, l.find('\t')));
    std::string w;
    size_t n = 0;
    while (in >> w) ++n;
    s.lengths[n] += 1;
  }
  s.share /= static_cast<double>(lines.size());
  for (auto& [k, v] : s.lengths) v /= static_cast<double>(lines.size());
  return s;
}

// A model that plays a script: after the PAST/PRESENT marker of a row it
// predicts the row's scripted tokens, then <eos> (or keeps repeating the
// script when it has no end); elsewhere token 0.
class ScriptModel final : public Model {
 public:
  ScriptModel(int64_t vocab, std::set<int64_t> markers, int64_t eos)
      : vocab_(vocab), markers_(std::move(markers)), eos_(eos) {}
  std::map<std::vector<int64_t>, std::vector<int64_t>> scripts;  // prefix (<sos>…marker) -> tokens
  bool endless = false;
  std::set<std::vector<int64_t>> seen;

  torch::Tensor forward(const torch::Tensor& inputs) override {
    const int64_t B = inputs.size(0), T = inputs.size(1);
    auto logits = torch::zeros({B, T, vocab_});
    auto in = inputs.accessor<int64_t, 2>();
    auto lg = logits.accessor<float, 3>();
    for (int64_t b = 0; b < B; ++b) {
      int64_t m = -1;
      std::vector<int64_t> prefix;
      for (int64_t p = 0; p < T && m < 0; ++p) {
        prefix.push_back(in[b][p]);
        if (markers_.count(in[b][p])) m = p;
      }
      if (m < 0) continue;
      seen.insert(prefix);
      auto it = scripts.find(prefix);
      const std::vector<int64_t> script = it == scripts.end() ? std::vector<int64_t>{} : it->second;
      for (int64_t p = m; p < T; ++p) {
        const auto k = static_cast<size_t>(p - m);
        int64_t next = k < script.size() ? script[k] : eos_;
        if (endless && !script.empty()) next = script[k % script.size()];
        lg[b][p][next] = 1.0f;
      }
    }
    return logits;
  }

 private:
  int64_t vocab_;
  std::set<int64_t> markers_;
  int64_t eos_;
};

using Spans = std::vector<std::pair<int64_t, int64_t>>;

std::vector<std::string> words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// A full binary tree over n words: n − 1 distinct nested spans of ≥ 2 words,
// the root among them, each but the root inside a larger one.
bool full_binary_tree(const Spans& spans, int64_t n) {
  if (n < 2) return spans.empty();
  std::set<std::pair<int64_t, int64_t>> set(spans.begin(), spans.end());
  if (static_cast<int64_t>(set.size()) != n - 1 || !set.count({1, n})) return false;
  for (const auto& [i, j] : set) {
    if (i < 1 || j > n || j - i < 1) return false;
    for (const auto& [k, l] : set)  // no two spans cross
      if ((k < i && i <= l && l < j) || (i < k && k <= j && j < l)) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("gold trees: the grammar's constituents, binarised right-branching", "[mccoy][tree]") {
  namespace m = groklab::mccoy;
  SECTION("question formation, by hand from question.gr") {
    const m::Data qf(m::Kind::QuestionFormation, kData);
    // S -> NP_M_S VP_M_S; NP_M_S -> Det N_S [1, 2]; VP_M_S -> Aux_S V_intrans [3, 4].
    auto g = qf.gold_tree(words("the newt does swim"));
    CHECK(g.parses == 1);
    CHECK(g.spans == Spans{{1, 2}, {1, 4}, {3, 4}});
    // S [1, 12] -> NP_M_S [1, 5] VP_M_S [6, 12];
    // NP_M_S -> Det N_S Prep Det N: the(1) (newt(2) (near(3) (the(4) yaks(5))));
    // VP_M_S -> Aux_S V_trans NP_O: does(6) (admire(7) NP_O [8, 12]);
    // NP_O -> Det N_S RC_S: the(8) (quail(9) RC_S [10, 12]);
    // RC_S -> Rel Aux_S V_intrans: who(10) (does(11) swim(12)).
    g = qf.gold_tree(words("the newt near the yaks does admire the quail who does swim"));
    CHECK(g.parses == 1);
    CHECK(g.spans == Spans{{1, 5}, {1, 12}, {2, 5}, {3, 5}, {4, 5}, {6, 12}, {7, 12}, {8, 12}, {9, 12}, {10, 12}, {11, 12}});
    // The derivation is over the grammar's own symbols, a child per symbol of a rule.
    const m::Grammar& gr = qf.grammar();
    std::vector<std::vector<int>> cells;
    for (const auto& w : words("the newt near the yaks does swim")) cells.push_back({gr.symbol(w)});
    const auto chart = gr.parse(cells);
    const auto nodes = gr.derivation(chart, gr.symbol("S"), 0, cells.size());
    REQUIRE(nodes.size() >= 3);
    CHECK(gr.name(nodes[0].sym) == "S");
    REQUIRE(nodes[0].children.size() == 2);
    const auto& np = nodes[nodes[0].children[0]];
    CHECK(gr.name(np.sym) == "NP_M_S");
    CHECK((np.begin == 0 && np.end == 5));
    std::vector<std::string> kids;
    for (size_t c : np.children) kids.push_back(gr.name(nodes[c].sym));
    CHECK(kids == std::vector<std::string>{"Det", "N_S", "Prep", "Det", "N"});
    for (const auto& n : nodes) CHECK(gr.symbol(gr.name(n.sym)) == n.sym);  // no binarisation symbol
    CHECK(gr.derivations(chart, gr.symbol("S"), 0, cells.size()) == 1);
    CHECK_THROWS_AS(gr.derivation(chart, gr.symbol("S"), 0, 4), std::invalid_argument);
    // Not a sentence: no tree.
    g = qf.gold_tree(words("the newt does"));
    CHECK(g.parses == 0);
    CHECK(g.spans.empty());
  }
  SECTION("tense inflection: past-tense verbs, by hand from tense.gr") {
    const m::Data ti(m::Kind::TenseInflection, kData);
    // S [1, 10] -> NP_M_pl [1, 5] VP_M_pl [6, 10];
    // NP_M_pl -> Det N_pl Prep Det N_sg: the(1) (newts(2) (near(3) (the(4) yak(5))));
    // VP_M_pl -> V_trans_pl NP_O_sg: entertained(6) NP_O_sg [7, 10];
    // NP_O_sg -> Det N_sg RC_sg: the(7) (quail(8) RC_sg [9, 10]); RC_sg -> Rel V_intrans_sg.
    auto g = ti.gold_tree(words("the newts near the yak entertained the quail who slept"));
    CHECK(g.parses == 1);
    CHECK(g.spans == Spans{{1, 5}, {1, 10}, {2, 5}, {3, 5}, {4, 5}, {6, 10}, {7, 10}, {8, 10}, {9, 10}});
    CHECK_THROWS_WITH(ti.gold_tree(words("the newts entertain the quail")), Catch::Contains("past tense"));
  }
  SECTION("an ambiguous grammar: the first rule, the earliest boundaries") {
    TempDir dir("gr");
    write(dir.path / "toy.gr",
          "1\tROOT\tS .\n1\tS\tX Y\n1\tX\ta b\n1\tX\ta\n1\tY\tb c\n1\tY\tc\n");
    const auto gr = m::Grammar::load((dir.path / "toy.gr").string());
    std::vector<std::vector<int>> cells;
    for (const char* w : {"a", "b", "c"}) cells.push_back({gr.symbol(w)});
    const auto chart = gr.parse(cells);
    // (a b) c and a (b c).
    CHECK(gr.derivations(chart, gr.symbol("S"), 0, 3) == 2);
    const auto nodes = gr.derivation(chart, gr.symbol("S"), 0, 3);
    REQUIRE(nodes[0].children.size() == 2);
    const auto& x = nodes[nodes[0].children[0]];
    const auto& y = nodes[nodes[0].children[1]];
    CHECK((gr.name(x.sym) == "X" && x.begin == 0 && x.end == 1));  // X -> a: the shortest first child
    CHECK((gr.name(y.sym) == "Y" && y.begin == 1 && y.end == 3));
  }
}

TEST_CASE("every sentence of the shipped and generated data has one parse and a gold tree", "[mccoy][tree]") {
  namespace m = groklab::mccoy;
  for (const auto kind : {m::Kind::QuestionFormation, m::Kind::TenseInflection}) {
    const m::Data d(kind, kData);
    std::vector<std::string> lines = d.generate(5000, 4);
    for (const auto& f : {d.dev_file(), d.gen_file(), d.test_file()})
      for (auto& l : d.read(f)) lines.push_back(std::move(l));
    size_t n = 0, one = 0, full = 0;
    for (const auto& text : lines) {
      m::Line l = d.split(text, "line");
      if (kind == m::Kind::QuestionFormation && l.marker != "quest") continue;
      l.source.pop_back();  // "."
      const auto g = d.gold_tree(l.source);
      ++n;
      one += g.parses == 1;
      full += full_binary_tree(g.spans, static_cast<int64_t>(l.source.size()));
    }
    INFO(m::name_of(kind));
    CHECK(n > 10000);
    CHECK(one == n);
    CHECK(full == n);
  }
  // Through the task: every sampled training sentence of both tasks has its tree.
  for (const char* name : {"question_formation", "tense_inflection"}) {
    auto task = make_task(name, {{"train_size", Value(int64_t{2000})}});
    task->prepare(5);
    const torch::Tensor idx = task->sentence_indices("train");
    REQUIRE(idx.numel() > 500);
    for (int64_t k = 0; k < idx.numel(); ++k) {
      const Sentence s = task->sentence("train", idx[k].item<int64_t>());
      INFO(name << " sentence " << k);
      CHECK(full_binary_tree(s.gold, static_cast<int64_t>(s.inputs.size()) - 1));
    }
  }
}

TEST_CASE("every shipped line parses with the grammar and has the right transformation", "[mccoy]") {
  Result qf = run_groklab("data check question_formation " + kQF + "question.dev " + kQF + "question.test " +
                          kQF + "question.gen " + kQF + "question.train.first20k_from_kan_transformer");
  INFO(qf.out);
  CHECK(qf.status == 0);
  CHECK_THAT(qf.out, Catch::Contains("question.gen: 10000 lines, 0 bad"));
  CHECK_THAT(qf.out, Catch::Contains("question.train.first20k_from_kan_transformer: 20000 lines, 0 bad"));
  Result ti = run_groklab("data check tense_inflection " + kTI + "tense.dev " + kTI + "tense.test " + kTI +
                          "tense.gen");
  INFO(ti.out);
  CHECK(ti.status == 0);
  CHECK_THAT(ti.out, Catch::Contains("tense.gen: 10000 lines, 0 bad"));
  CHECK_THAT(ti.out, Catch::Contains("tense.dev: 1000 lines, 0 bad"));

  // McCoy's training constraint: the in-distribution sets satisfy it, the
  // generalisation sets never do.
  Result train = run_groklab("data check --train question_formation " + kQF +
                             "question.train.first20k_from_kan_transformer " + kQF + "question.dev");
  CHECK(train.status == 0);
  Result gen = run_groklab("data check --train question_formation " + kQF + "question.gen");
  CHECK(gen.status == 1);
  CHECK_THAT(gen.out, Catch::Contains("question.gen: 10000 lines, 10000 bad"));
  CHECK_THAT(gen.out, Catch::Contains("first auxiliary is not the main one"));
  Result tgen = run_groklab("data check --train tense_inflection " + kTI + "tense.gen " + kTI + "tense.test");
  CHECK(tgen.status == 1);
  CHECK_THAT(tgen.out, Catch::Contains("tense.gen: 10000 lines, 10000 bad"));
  CHECK_THAT(tgen.out, Catch::Contains("tense.test: 10000 lines, 0 bad"));
}

TEST_CASE("data check names the file and line of a bad example", "[mccoy]") {
  TempDir dir("check");
  const auto f = (dir.path / "bad.txt").string();
  write(f,
        "the walrus doesn't move . decl\tthe walrus doesn't move .\n"
        // the first auxiliary fronted instead of the main one
        "my raven that doesn't sleep does change . quest\tdoesn't my raven that sleep does change ?\n"
        // ungrammatical: agreement broken
        "the walrus don't move . decl\tthe walrus don't move .\n"
        "the walrus doesn't dance . decl\tthe walrus doesn't dance .\n"
        "the walrus doesn't move . decl the walrus doesn't move .\n");
  Result r = run_groklab("data check question_formation " + f);
  INFO(r.out);
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains(f + ":2: the target is not the quest transformation"));
  CHECK_THAT(r.out, Catch::Contains("does my raven that doesn't sleep change ?"));
  CHECK_THAT(r.out, Catch::Contains(f + ":3: not a sentence of the grammar"));
  CHECK_THAT(r.out, Catch::Contains(f + ":4: unknown word \"dance\""));
  CHECK_THAT(r.out, Catch::Contains(f + ":5: expected `source . MARKER<TAB>target`"));
  CHECK_THAT(r.out, Catch::Contains("5 lines, 4 bad"));

  const auto t = (dir.path / "bad_tense.txt").string();
  write(t,
        "my quail upon my peacocks remembered her unicorns . PRESENT\tmy quail upon my peacocks remember her unicorns .\n"
        "my quail remembers her unicorns . PAST\tmy quail remembers her unicorns .\n");
  Result rt = run_groklab("data check tense_inflection " + t);
  INFO(rt.out);
  CHECK(rt.status == 1);
  CHECK_THAT(rt.out, Catch::Contains(t + ":1: the target is not the PRESENT transformation"));
  CHECK_THAT(rt.out, Catch::Contains("my quail upon my peacocks remembers her unicorns ."));
  CHECK_THAT(rt.out, Catch::Contains(t + ":2: \"remembers\" is not in the past tense"));
}

TEST_CASE("generated question formation data has the shipped subset's statistics", "[mccoy]") {
  TempDir dir("qf");
  const auto a = (dir.path / "a.txt").string(), b = (dir.path / "b.txt").string(),
             c = (dir.path / "c.txt").string();
  Result r = run_groklab("data generate question_formation --size 20000 --seed 3 -o " + a);
  REQUIRE(r.status == 0);
  REQUIRE(run_groklab("data generate question_formation --size 20000 --seed 3 -o " + b).status == 0);
  REQUIRE(run_groklab("data generate question_formation --size 20000 --seed 4 -o " + c).status == 0);
  const std::string bytes = slurp(a);
  CHECK(std::hash<std::string>{}(bytes) == std::hash<std::string>{}(slurp(b)));  // same seed, same bytes
  CHECK(bytes == slurp(b));
  CHECK(bytes != slurp(c));

  const auto gen = lines_of(a);
  REQUIRE(gen.size() == 20000);
  CHECK(std::set<std::string>(gen.begin(), gen.end()).size() == gen.size());
  const Stats want = stats(lines_of(kQF + "question.train.first20k_from_kan_transformer"), "quest");
  const Stats got = stats(gen, "quest");
  CHECK(got.share == Approx(want.share).margin(0.02));
  for (const auto& [len, share] : want.lengths) {
    INFO("source length " << len);
    CHECK(got.lengths.count(len) == 1);
    CHECK(got.lengths.at(len) == Approx(share).margin(0.02));
  }
  CHECK(got.lengths.size() == want.lengths.size());

  std::set<std::string> held;
  for (const char* f : {"question.dev", "question.test", "question.gen"})
    for (auto& l : lines_of(kQF + f)) held.insert(l);
  size_t overlap = 0;
  for (const auto& l : gen) overlap += held.count(l);
  CHECK(overlap == 0);
  Result check = run_groklab("data check --train question_formation " + a);
  INFO(check.out);
  CHECK(check.status == 0);
}

TEST_CASE("generated tense inflection data: 100k lines in seconds, disjoint, ambiguous", "[mccoy]") {
  TempDir dir("ti");
  const auto a = (dir.path / "a.txt").string();
  const auto t0 = std::chrono::steady_clock::now();
  Result r = run_groklab("data generate tense_inflection --size 100000 --seed 1 -o " + a);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK(seconds < 60);
  const auto gen = lines_of(a);
  REQUIRE(gen.size() == 100000);
  std::set<std::string> held;
  for (const char* f : {"tense.dev", "tense.test", "tense.gen"})
    for (auto& l : lines_of(kTI + f)) held.insert(l);
  size_t overlap = 0;
  for (const auto& l : gen) overlap += held.count(l);
  CHECK(overlap == 0);
  CHECK(std::set<std::string>(gen.begin(), gen.end()).size() == gen.size());
  const Stats want = stats(lines_of(kTI + "tense.test"), "PRESENT");
  CHECK(stats(gen, "PRESENT").share == Approx(want.share).margin(0.02));
  Result check = run_groklab("data check --train tense_inflection " + a);
  INFO(check.out);
  CHECK(check.status == 0);
  // The grammar's own probabilities are available too.
  const auto p = (dir.path / "p.txt").string();
  REQUIRE(run_groklab("data generate tense_inflection --structure pcfg --size 2000 --seed 1 -o " + p).status == 0);
  CHECK(run_groklab("data check --train tense_inflection " + p).status == 0);
}

TEST_CASE("question_formation splits, vocabulary and batches", "[mccoy]") {
  auto task = make_task("question_formation", {{"train_source", Value(std::string("shipped"))}});
  task->prepare(0);
  CHECK(task->splits() == std::vector<std::string>{"train", "val", "test"});
  CHECK(task->size("train") == 20000);
  CHECK(task->size("val") == 1000);
  CHECK(task->size("test") == 10000);
  CHECK(task->scored("val").numel() == 406);
  CHECK(task->scored("test").numel() == 10000);
  const TaskSpec spec = task->spec();
  CHECK(spec.vocab_size == spec.num_classes);
  CHECK(spec.vocab_size == 3 + 65 + 2 + 1);  // specials, grammar terminals, decl/quest, "?"
  CHECK(spec.seq_len == 2 * 17 + 2);  // <sos>, the longest source (17 tokens) twice, the marker

  // "the walrus doesn't move . decl the walrus doesn't move ." is val line 4: 11 tokens.
  Batch one = task->batch("val", torch::tensor({3}, torch::kLong));
  CHECK(one.inputs.size(1) == 12);  // <sos> + 11 tokens: trimmed to this example
  CHECK(one.inputs[0][0].item<int64_t>() == 1);              // <sos>
  CHECK(one.targets[0][11].item<int64_t>() == 2);            // <eos>
  CHECK(torch::equal(one.inputs.narrow(1, 1, 11), one.targets.narrow(1, 0, 11)));

  Batch two = task->batch("val", torch::tensor({3, 0}, torch::kLong));
  CHECK(two.inputs.size(1) == 26);  // val line 1: 25 tokens + <sos>
  CHECK(two.targets[0].narrow(0, 12, 14).eq(-1).all().item<bool>());
  CHECK(two.inputs[0].narrow(0, 12, 14).eq(0).all().item<bool>());  // <pad>

  // Generated training data: deterministic in the data-split seed.
  auto g1 = make_task("question_formation", {{"train_size", Value(int64_t{300})}});
  auto g2 = make_task("question_formation", {{"train_size", Value(int64_t{300})}});
  g1->prepare(11);
  g2->prepare(11);
  auto all = torch::arange(300, torch::kLong);
  CHECK(g1->size("train") == 300);
  CHECK(torch::equal(g1->batch("train", all).inputs, g2->batch("train", all).inputs));
  g2->prepare(12);
  CHECK_FALSE(torch::equal(g1->batch("train", all).inputs, g2->batch("train", all).inputs));
  auto ti = make_task("tense_inflection", {{"train_source", Value(std::string("shipped"))}});
  CHECK_THROWS_WITH(ti->prepare(0), Catch::Contains("no shipped training set"));
}

TEST_CASE("question_formation accuracy: the first word among the four auxiliaries", "[mccoy]") {
  auto task = make_task("question_formation", {{"train_source", Value(std::string("shipped"))}});
  task->prepare(0);
  // val lines 1 and 2 are questions starting with doesn't / does; line 4 is decl.
  Batch b = task->batch("val", torch::tensor({0, 1, 3}, torch::kLong));
  const int64_t C = task->spec().num_classes, T = b.inputs.size(1);
  // The marker's input position: <sos> + the source's tokens.
  auto quest_pos = [](int64_t row) { return row == 0 ? int64_t{13} : int64_t{14}; };
  const int64_t doesnt = b.targets[0][quest_pos(0)].item<int64_t>();
  const int64_t does = b.targets[1][quest_pos(1)].item<int64_t>();
  const int64_t the = b.inputs[0][1].item<int64_t>();  // "our"
  REQUIRE(doesnt != does);

  auto logits = torch::zeros({3, T, C});
  SECTION("the right auxiliary wins, even below a non-auxiliary token") {
    logits[0][quest_pos(0)][doesnt] = 1;
    logits[0][quest_pos(0)][the] = 5;  // not one of the four: ignored
    logits[1][quest_pos(1)][does] = 2;
    logits[1][quest_pos(1)][doesnt] = 1;
    logits[2][5][does] = 9;  // decl line: never right
    CHECK(torch::equal(task->correct(logits, b), torch::tensor({true, true, false})));
  }
  SECTION("a wrong auxiliary loses") {
    logits[0][quest_pos(0)][does] = 1;
    logits[1][quest_pos(1)][doesnt] = 1;
    CHECK(torch::equal(task->correct(logits, b), torch::tensor({false, false, false})));
  }
  SECTION("ties go to doesn't, does, do, don't in that order") {
    CHECK(torch::equal(task->correct(logits, b), torch::tensor({true, false, false})));
  }
  SECTION("logits of the last position only cannot be scored") {
    CHECK_THROWS_WITH(task->correct(logits.narrow(1, T - 1, 1), b), Catch::Contains("readout = \"all\""));
  }
}

TEST_CASE("accuracy metric on question_formation counts quest lines only", "[mccoy]") {
  auto task = make_task("question_formation", {{"train_source", Value(std::string("shipped"))}});
  task->prepare(0);
  // A model that always says "does" after quest.
  struct Does final : Model {
    int64_t quest, does, C;
    torch::Tensor forward(const torch::Tensor& in) override {
      auto lg = torch::zeros({in.size(0), in.size(1), C});
      lg.select(2, does).masked_fill_(in.eq(quest), 1.0);
      return lg;
    }
  } model;
  Batch b = task->batch("val", torch::tensor({1}, torch::kLong));
  model.quest = b.inputs[0][14].item<int64_t>();
  model.does = b.targets[0][14].item<int64_t>();
  model.C = task->spec().num_classes;
  double want = 0, quests = 0;
  for (const auto& l : lines_of(kQF + "question.dev"))
    if (l.find(" quest\t") != std::string::npos) {
      quests += 1;
      want += l.substr(l.find('\t') + 1, 5) == "does " ? 1 : 0;
    }
  REQUIRE(quests == 406);
  auto metric = builtins().find(Kind::Metric, "accuracy")
                    ->make_metric(params_for(Kind::Metric, "accuracy", {{"split", Value(std::string("val"))},
                                                                        {"batch_size", Value(int64_t{100})}}));
  EvalContext ctx{&model, task.get(), 0, 7};
  CHECK(metric->evaluate(ctx).at("val_accuracy") == Approx(want / quests));
}

TEST_CASE("tense_inflection accuracy: greedy decoding, POS sequence and main verb", "[mccoy]") {
  auto task = make_task("tense_inflection", {{"train_size", Value(int64_t{200})}});
  task->prepare(0);
  // test line 1: "the yaks that some unicorn entertained applauded her salamanders below
  // some walrus . PRESENT" -> "the yaks that some unicorn entertains applaud her
  // salamanders below some walrus ." (third tag R: the main verb is the second verb).
  Batch b = task->batch("test", torch::tensor({0}, torch::kLong));
  const int64_t n = 13, m = n + 1;  // 13 source tokens incl. "."; marker at input position 14
  const int64_t C = task->spec().num_classes;
  std::vector<int64_t> prefix, target, source;
  for (int64_t p = 0; p <= m; ++p) prefix.push_back(b.inputs[0][p].item<int64_t>());
  for (int64_t p = m; p < m + n; ++p) target.push_back(b.targets[0][p].item<int64_t>());
  for (int64_t p = 1; p <= n; ++p) source.push_back(b.inputs[0][p].item<int64_t>());
  const int64_t eos = b.targets[0][m + n].item<int64_t>();
  REQUIRE(eos == 2);
  ScriptModel model(C, {prefix.back()}, eos);
  auto run = [&](std::vector<int64_t> script) {
    model.scripts[prefix] = std::move(script);
    return task->correct_model(model, "test", torch::tensor({0}, torch::kLong))[0].item<bool>();
  };
  CHECK(run(target));
  auto main_past = target;
  main_past[6] = source[6];  // "applauded" for "applaud": same POS, wrong main verb
  CHECK_FALSE(run(main_past));
  auto rc_past = target;
  rc_past[5] = source[5];  // "entertained" for "entertains": not the main verb
  CHECK(run(rc_past));
  auto no_stop = target;
  no_stop.pop_back();  // final "." stripped from both
  CHECK(run(no_stop));
  auto noun_for_verb = target;
  noun_for_verb[6] = source[1];  // a noun where the main verb goes: POS differs
  CHECK_FALSE(run(noun_for_verb));
  CHECK_FALSE(run({}));  // <eos> at once
  model.endless = true;  // never stops: too long
  CHECK_FALSE(run(target));
  model.endless = false;

  // Rows of a batch finish at different times and are scored independently.
  Batch two = task->batch("test", torch::tensor({0, 3}, torch::kLong));
  std::vector<int64_t> prefix2;
  for (int64_t p = 0; p < two.inputs.size(1); ++p) {
    prefix2.push_back(two.inputs[1][p].item<int64_t>());
    if (two.inputs[1][p].item<int64_t>() == prefix.back()) break;
  }
  std::vector<int64_t> target2;
  for (int64_t p = static_cast<int64_t>(prefix2.size()) - 1; two.targets[1][p].item<int64_t>() != eos; ++p)
    target2.push_back(two.targets[1][p].item<int64_t>());
  model.scripts[prefix] = target;
  model.scripts[prefix2] = target2;
  CHECK(torch::equal(task->correct_model(model, "test", torch::tensor({0, 3}, torch::kLong)),
                     torch::tensor({true, true})));
  model.scripts[prefix2] = main_past;  // another line's output
  CHECK(torch::equal(task->correct_model(model, "test", torch::tensor({0, 3}, torch::kLong)),
                     torch::tensor({true, false})));

  SECTION("the accuracy metric decodes max_examples sampled lines") {
    ScriptModel perfect(C, {prefix.back()}, eos);
    const int64_t N = task->size("test");
    for (int64_t start = 0; start < N; start += 1000) {
      Batch bb = task->batch("test", torch::arange(start, std::min(N, start + 1000), torch::kLong));
      for (int64_t r = 0; r < bb.inputs.size(0); ++r) {
        std::vector<int64_t> pre, out;
        int64_t p = 0;
        for (; p < bb.inputs.size(1); ++p) {
          pre.push_back(bb.inputs[r][p].item<int64_t>());
          if (pre.back() == prefix.back()) break;
        }
        for (; bb.targets[r][p].item<int64_t>() != eos; ++p) out.push_back(bb.targets[r][p].item<int64_t>());
        perfect.scripts[pre] = out;
      }
    }
    auto metric = builtins().find(Kind::Metric, "accuracy")
                      ->make_metric(params_for(Kind::Metric, "accuracy",
                                               {{"split", Value(std::string("test"))},
                                                {"max_examples", Value(int64_t{25})},
                                                {"batch_size", Value(int64_t{10})}}));
    EvalContext ctx{&perfect, task.get(), 0, 99};
    CHECK(metric->evaluate(ctx).at("test_accuracy") == 1.0);
    CHECK(perfect.seen.size() == 25);  // exactly the sample
    const auto first = perfect.seen;
    perfect.seen.clear();
    metric->evaluate(ctx);
    CHECK(perfect.seen == first);  // same seed, same sample
    perfect.seen.clear();
    EvalContext other{&perfect, task.get(), 0, 100};
    metric->evaluate(other);
    CHECK(perfect.seen != first);
    perfect.scripts.clear();  // now it says <eos> at once
    CHECK(metric->evaluate(ctx).at("test_accuracy") == 0.0);
  }
}

TEST_CASE("missing or malformed data files are named", "[mccoy]") {
  TempDir dir("files");
  const fs::path qf = dir.path / "question_formation";
  fs::create_directories(qf);
  for (const char* f : {"question.gr", "question.dev", "question.test"})
    fs::copy_file(kQF + f, qf / f);
  const Value root(dir.path.string());
  auto task = make_task("question_formation", {{"data_dir", root}, {"train_source", Value(std::string("shipped"))}});
  CHECK_THROWS_WITH(task->prepare(0), Catch::Contains((qf / "question.train.first20k_from_kan_transformer").string()));
  fs::copy_file(kQF + std::string("question.train.first20k_from_kan_transformer"),
                qf / "question.train.first20k_from_kan_transformer");
  CHECK_THROWS_WITH(task->prepare(0), Catch::Contains("missing data file " + (qf / "question.gen").string()));
  auto dev = lines_of(kQF + "question.dev");
  dev[2] = "the walrus doesn't move . huh\tthe walrus doesn't move .";
  std::string text;
  for (const auto& l : dev) text += l + "\n";
  write(qf / "question.gen", text);
  CHECK_THROWS_WITH(task->prepare(0), Catch::Contains((qf / "question.gen").string() + ":3:") &&
                                          Catch::Contains("must end in one of decl quest"));
  write(qf / "question.gr", "1\tROOT\tS .\nnot a rule\n");
  CHECK_THROWS_WITH(make_task("question_formation", {{"data_dir", root}}),
                    Catch::Contains((qf / "question.gr").string() + ":2:"));
  CHECK_THROWS_WITH(make_task("tense_inflection", {{"data_dir", root}}),
                    Catch::Contains("has no tense_inflection/ subdirectory"));
}

TEST_CASE("the structural grokking presets train", "[mccoy][slow]") {
  TempDir dir("presets");
  for (const char* t : {"question_formation", "tense_inflection"}) {
    const std::string m = std::string(GROKLAB_SOURCE_DIR) + "/manifests/structural_grokking/" + t + "_depth_sweep.toml";
    const std::string ledger = (dir.path / t).string();
    Result r = run_groklab("run " + m +
                           " architecture.depth=2 architecture.d_model=64 architecture.heads=4 "
                           "architecture.d_ff=128 run.seed=0 run.steps=50 run.eval_every=50 "
                           "task.train_size=400 metrics.3.sentences=20 --ledger " + ledger);
    INFO(r.out);
    CHECK(r.status == 0);
    Result v = run_groklab("ledger verify --ledger " + ledger);
    INFO(v.out);
    CHECK(v.status == 0);
    for (const char* key :
         {"test_accuracy", "train_tscore", "train_tparseval", "weight_norm_per_layer", "train_attention_sparsity"})
      CHECK(slurp(ledger + "/entries.jsonl").find(key) != std::string::npos);
  }
}

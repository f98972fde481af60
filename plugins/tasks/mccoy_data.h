// The data of McCoy, Frank & Linzen (2020) as used by Murty et al. (2023):
// question formation and tense inflection. Grammar (PCFG) loading, a CKY
// recogniser and the gold trees of its parses, the two transformations,
// validation of data files and deterministic generation of training sets. No
// LibTorch: the `groklab_tasks` plugin and the `groklab data` command both link it.
//
//   auto data = mccoy::Data(mccoy::Kind::QuestionFormation, mccoy::find_data_dir(""));
//   auto lines = data.generate(100000, 7);   // "the newt does giggle . quest\tdoes the newt giggle ?"
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace groklab::mccoy {

// Which task.
enum class Kind { QuestionFormation, TenseInflection };

// "question_formation" or "tense_inflection".
const char* name_of(Kind kind);
// The kind named name; throws std::invalid_argument naming the choices.
Kind kind_named(const std::string& name);

// How generate() chooses sentence structures.
enum class Structure {
  // The structures (sequences of word categories, with the task marker) of
  // McCoy's in-distribution data, in their frequencies: the shipped QF train
  // subset, tense.test for TI. Matches the shipped data's statistics.
  Empirical,
  // Derivations sampled from the PCFG with its rule probabilities, the marker
  // drawn 50/50 (McCoy's released data does not follow these probabilities).
  Pcfg,
};
Structure structure_named(const std::string& name);  // "empirical" | "pcfg"

// The data root holding question_formation/ and tense_inflection/: explicit
// if non-empty, else $GROKLAB_DATA_DIR, else the installed location relative
// to the binary that contains this code (plugin or executable), else the
// source tree's data/ (build tree). Throws std::runtime_error listing the
// places tried when none has the task's directory.
std::string find_data_dir(const std::string& explicit_dir, Kind kind);

// A PCFG in McCoy's .gr format: `prob TAB lhs TAB rhs` per line (rhs space
// separated), blank lines ignored, start symbol ROOT. A symbol that is never
// a left-hand side is a terminal.
class Grammar {
 public:
  // Throws std::runtime_error naming path and line on a missing or malformed file.
  static Grammar load(const std::string& path);

  int symbol(const std::string& name) const;  // -1 if unknown
  const std::string& name(int sym) const { return names_[static_cast<size_t>(sym)]; }
  bool terminal(int sym) const { return !is_lhs_[static_cast<size_t>(sym)]; }
  std::vector<std::string> terminals() const;
  // The terminals X rewrites to directly (X -> word), in file order.
  std::vector<std::string> words_of(const std::string& category) const;
  // The longest yield of ROOT, in tokens.
  int64_t max_length() const;
  // A derivation of ROOT sampled with the rule probabilities; draw() returns
  // uniform doubles in [0, 1).
  template <class Draw>
  std::vector<int> sample(Draw&& draw) const {
    std::vector<int> out;
    expand(root_, draw, out, 0);
    return out;
  }

  // A CKY chart: the set of symbols deriving tokens [i, j), as bits.
  struct Chart {
    size_t n = 0, words = 0;
    std::vector<uint64_t> bits;  // (i * (n + 1) + j) * words + w
    bool has(size_t i, size_t j, int sym) const {
      return (bits[(i * (n + 1) + j) * words + static_cast<size_t>(sym) / 64] >> (sym % 64)) & 1u;
    }
  };
  // CKY over cells of alternative terminals (one set per token).
  Chart parse(const std::vector<std::vector<int>>& cells) const;
  // A key equal for cells that parse alike (same categories per token).
  std::string signature(const std::vector<std::vector<int>>& cells) const;
  // The split k of a binary rule lhs -> X Y with X over [i, k) and Y over [k, j); -1 if none.
  int split(const Chart& c, int lhs, size_t i, size_t j) const;
  // A node of a derivation: sym over tokens [begin, end) and its children
  // (indices into the derivation), one per symbol of the rule's right-hand side.
  struct Node {
    int sym = -1;
    size_t begin = 0, end = 0;
    std::vector<size_t> children;
  };
  // One derivation of sym over [i, j) with the grammar's own rules (not the
  // chart's internal binarisation symbols), root first. Deterministic: at
  // every node the first rule of sym (file order) that derives the span, with
  // the earliest boundaries between its children (the first child as short as
  // possible, then the second, …). Throws std::invalid_argument if sym does
  // not derive [i, j) in c.
  std::vector<Node> derivation(const Chart& c, int sym, size_t i, size_t j) const;
  // The number of derivations of sym over [i, j) (0 if none); a double, as it
  // can be large. Throws std::runtime_error on a unary cycle.
  double derivations(const Chart& c, int sym, size_t i, size_t j) const;
  int root() const { return root_; }

 private:
  struct Rule {
    double prob;
    int lhs;
    std::vector<int> rhs;
  };
  int intern(const std::string& s);
  template <class Draw>
  void expand(int sym, Draw& draw, std::vector<int>& out, int depth) const;
  void compile();
  int64_t longest(int sym, std::vector<int64_t>& memo, int depth) const;
  void close(uint64_t* cell) const;  // unary closure in place
  size_t derive(const Chart& c, int sym, size_t i, size_t j, std::vector<Node>& out, int depth) const;
  bool cuts(const Chart& c, const std::vector<int>& rhs, size_t k, size_t i, size_t j,
            std::vector<size_t>& at) const;
  double count(const Chart& c, int sym, size_t i, size_t j, std::vector<double>& memo) const;

  std::vector<std::string> names_;
  std::unordered_map<std::string, int> ids_;
  std::vector<char> is_lhs_;
  std::vector<Rule> rules_;                     // as written
  std::vector<std::vector<size_t>> by_lhs_;     // rule indices per lhs
  std::vector<std::pair<int, int>> unary_;      // (lhs, rhs) incl. lexical rules
  std::vector<std::array<int, 3>> binary_;      // (lhs, left, right) after binarisation
  int root_ = -1;
  int n_symbols_ = 0;                           // incl. binarisation symbols
  size_t words_ = 0;                            // 64-bit words per chart cell
  std::vector<std::vector<uint64_t>> closure_;  // per terminal: its unary closure
  std::vector<uint64_t> relevant_;              // symbols used by binary rules or ROOT
  std::string path_;
};

// One data line: `source… . MARKER TAB target…`.
struct Line {
  std::vector<std::string> source;  // the declarative / past-tense sentence, ending in "."
  std::string marker;               // decl | quest, PAST | PRESENT
  std::vector<std::string> target;  // the output sentence
};

// The grammar, lexicon and transformation of one task, read from
// <root>/<task name>/.
class Data {
 public:
  Data(Kind kind, const std::string& root);
  Kind kind() const { return kind_; }
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& file) const { return dir_ + "/" + file; }
  const Grammar& grammar() const { return grammar_; }

  // File names of the splits in dir(): McCoy's dev, gen, in-distribution test,
  // and (question formation only) the shipped 20k training subset.
  std::string dev_file() const;
  std::string gen_file() const;
  std::string test_file() const;
  std::string shipped_train_file() const;  // throws for tense inflection
  // {"decl", "quest"} or {"PAST", "PRESENT"}.
  const std::vector<std::string>& markers() const { return markers_; }
  // Specials "<pad>" "<sos>" "<eos>" (ids 0, 1, 2), then every other word
  // sorted bytewise: the grammar's terminals, the markers, "?" (QF) and the
  // past-tense forms of verbs.txt (TI).
  std::vector<std::string> vocabulary() const;
  // The longest line in tokens (source, marker and target): 2·max_length()+1.
  int64_t max_line_tokens() const { return 2 * grammar_.max_length() + 1; }

  // Splits text at its TAB and checks the shape and vocabulary; throws
  // std::runtime_error "<where>: reason".
  Line split(const std::string& text, const std::string& where) const;
  // Reads every line of file (in dir()) with split(); throws naming the file
  // (and line) when it is missing, empty or malformed.
  std::vector<std::string> read(const std::string& file) const;
  // The target of source under marker (QF quest: the main auxiliary moved to
  // the front and "." replaced by "?"; TI PRESENT: every verb in the present
  // tense agreeing with its subject). Throws std::runtime_error if source is
  // not a sentence of the grammar.
  std::vector<std::string> transform(const std::vector<std::string>& source,
                                     const std::string& marker) const;
  // "" if line is a grammatical example whose target is the transformation of
  // its source (and, if training, ambiguous as McCoy's training data is:
  // a question's first auxiliary is its main one; a PRESENT line's verbs agree
  // with their most recent noun); else the reason.
  std::string check(const std::string& line, bool training) const;
  // The gold binary tree of a sentence (its words without the final "."; TI:
  // past-tense verbs) from a parse with the task's grammar: the
  // derivation() of S over the words, each constituent with children
  // c₁…c_m (m > 2) binarised right-branching, c₁ (c₂ (… (c_{m−1} c_m))).
  // spans: every constituent of ≥ 2 words, the root included, as inclusive
  // 1-based word spans [i, j], sorted, each once (a full binary tree: n − 1 of
  // them); parses: the number of derivations of S over the words (> 1: the
  // derivation() rule chose; 0: not a sentence of the grammar, no spans).
  // Cached per cell signature, as parses are. Throws std::runtime_error if a
  // word is not in the vocabulary (or, TI, a verb is not in the past tense).
  struct GoldTree {
    std::vector<std::pair<int64_t, int64_t>> spans;
    double parses = 0;
  };
  GoldTree gold_tree(const std::vector<std::string>& words) const;
  // n distinct training lines (TAB form), deterministic in seed, none of them
  // in the dev, gen or in-distribution test file, all passing check(·, true).
  std::vector<std::string> generate(size_t n, uint64_t seed,
                                    Structure structure = Structure::Empirical) const;

 private:
  struct Parse {
    bool ok = false;
    int s_split = -1;  // QF: the token index where the main VP starts
  };
  std::vector<std::vector<int>> cells(const std::vector<std::string>& words, bool past) const;
  Parse parse_cached(const std::vector<std::vector<int>>& cells) const;
  bool grammatical(const std::vector<std::string>& source) const;
  int main_aux(const std::vector<std::string>& source) const;
  std::vector<std::string> present(const std::vector<std::string>& source) const;
  std::vector<std::string> present_nearest(const std::vector<std::string>& source) const;
  bool ambiguous(const Line& line) const;

  Kind kind_;
  std::string dir_;
  Grammar grammar_;
  std::vector<std::string> markers_;
  std::unordered_set<std::string> vocab_;
  std::unordered_set<std::string> aux_;                        // QF auxiliaries
  std::unordered_map<std::string, std::string> past_of_, sg_of_, pl_of_;  // TI verb forms
  std::unordered_map<std::string, std::string> present_sg_, present_pl_;  // TI past -> present
  std::unordered_set<std::string> nouns_sg_, nouns_pl_;
  mutable std::unordered_map<std::string, Parse> cache_;       // by cell signature
  mutable std::unordered_map<std::string, GoldTree> gold_cache_;  // by cell signature
};

}  // namespace groklab::mccoy

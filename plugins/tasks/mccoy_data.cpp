// McCoy et al. (2020) data: grammar, recogniser, transformations, generation.
#include "mccoy_data.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace groklab::mccoy {
namespace fs = std::filesystem;
namespace {

std::vector<std::string> words_of_text(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

std::string join(const std::vector<std::string>& w) {
  std::string s;
  for (size_t i = 0; i < w.size(); ++i) s += (i ? " " : "") + w[i];
  return s;
}

// SplitMix64: a small, fully specified generator (the standard library's
// distributions are implementation-defined, so they are not used).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  uint64_t below(uint64_t n) {  // uniform in [0, n), n > 0, by rejection
    const uint64_t limit = ~uint64_t{0} - (~uint64_t{0} % n);
    uint64_t x = next();
    while (x >= limit) x = next();
    return x % n;
  }

 private:
  uint64_t s_;
};

std::vector<std::string> read_text_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.push_back(line);
  }
  return out;
}

// The directory of the shared object or executable this code is linked into.
std::string own_binary_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&own_binary_dir), &info) == 0 || info.dli_fname == nullptr)
    return "";
  std::error_code ec;
  fs::path p = fs::canonical(info.dli_fname, ec);
  if (ec) p = fs::path(info.dli_fname);
  return p.parent_path().string();
}

}  // namespace

const char* name_of(Kind kind) {
  return kind == Kind::QuestionFormation ? "question_formation" : "tense_inflection";
}

Kind kind_named(const std::string& name) {
  if (name == "question_formation") return Kind::QuestionFormation;
  if (name == "tense_inflection") return Kind::TenseInflection;
  throw std::invalid_argument("unknown McCoy task '" + name +
                              "' (choices: question_formation, tense_inflection)");
}

Structure structure_named(const std::string& name) {
  if (name == "empirical") return Structure::Empirical;
  if (name == "pcfg") return Structure::Pcfg;
  throw std::invalid_argument("unknown structure '" + name + "' (choices: empirical, pcfg)");
}

std::string find_data_dir(const std::string& explicit_dir, Kind kind) {
  std::vector<std::string> tried;
  auto has = [&](const std::string& root) {
    tried.push_back(root);
    std::error_code ec;
    return fs::is_directory(fs::path(root) / name_of(kind), ec);
  };
  if (!explicit_dir.empty()) {
    if (has(explicit_dir)) return explicit_dir;
    throw std::runtime_error(std::string("data directory ") + explicit_dir + " has no " +
                             name_of(kind) + "/ subdirectory");
  }
  if (const char* env = std::getenv("GROKLAB_DATA_DIR"); env != nullptr && *env != '\0') {
    if (has(env)) return env;
    throw std::runtime_error(std::string("GROKLAB_DATA_DIR=") + env + " has no " + name_of(kind) +
                             "/ subdirectory");
  }
  const std::string here = own_binary_dir();
  if (!here.empty()) {
    // Installed: <prefix>/lib/groklab/plugins/*.so or <prefix>/bin/groklab.
    for (const char* rel : {GROKLAB_MCCOY_DATA_FROM_PLUGINDIR, GROKLAB_MCCOY_DATA_FROM_BINDIR}) {
      std::error_code ec;
      fs::path p = fs::weakly_canonical(fs::path(here) / rel, ec);
      if (!ec && has(p.string())) return p.string();
    }
  }
  if (has(GROKLAB_MCCOY_SOURCE_DATA_DIR)) return GROKLAB_MCCOY_SOURCE_DATA_DIR;
  std::string msg = std::string("cannot find the ") + name_of(kind) + " data; looked in:";
  for (const auto& t : tried) msg += " " + t;
  throw std::runtime_error(msg + " (set the task's data_dir or GROKLAB_DATA_DIR)");
}

// ---- Grammar ---------------------------------------------------------------

int Grammar::intern(const std::string& s) {
  auto it = ids_.find(s);
  if (it != ids_.end()) return it->second;
  const int id = static_cast<int>(names_.size());
  names_.push_back(s);
  ids_.emplace(s, id);
  is_lhs_.push_back(0);
  return id;
}

int Grammar::symbol(const std::string& name) const {
  auto it = ids_.find(name);
  return it == ids_.end() ? -1 : it->second;
}

Grammar Grammar::load(const std::string& path) {
  const auto lines = read_text_lines(path);
  Grammar g;
  g.path_ = path;
  for (size_t n = 0; n < lines.size(); ++n) {
    const std::string where = path + ":" + std::to_string(n + 1);
    const std::string& line = lines[n];
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::vector<std::string> fields;
    size_t start = 0;
    while (true) {
      size_t tab = line.find('\t', start);
      fields.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    while (fields.size() > 3 && words_of_text(fields.back()).empty()) fields.pop_back();
    if (fields.size() != 3)
      throw std::runtime_error(where + ": expected `prob TAB lhs TAB rhs`, got \"" + line + "\"");
    char* end = nullptr;
    const double prob = std::strtod(fields[0].c_str(), &end);
    if (end == fields[0].c_str() || *end != '\0' || !(prob > 0))
      throw std::runtime_error(where + ": the probability \"" + fields[0] + "\" is not a positive number");
    const auto lhs = words_of_text(fields[1]);
    const auto rhs = words_of_text(fields[2]);
    if (lhs.size() != 1) throw std::runtime_error(where + ": the left-hand side must be one symbol");
    if (rhs.empty()) throw std::runtime_error(where + ": the right-hand side is empty");
    Rule r{prob, g.intern(lhs[0]), {}};
    for (const auto& s : rhs) r.rhs.push_back(g.intern(s));
    g.is_lhs_[static_cast<size_t>(r.lhs)] = 1;
    g.rules_.push_back(std::move(r));
  }
  g.root_ = g.symbol("ROOT");
  if (g.root_ < 0 || g.terminal(g.root_))
    throw std::runtime_error(path + ": no rule for the start symbol ROOT");
  g.compile();
  return g;
}

void Grammar::compile() {
  by_lhs_.assign(names_.size(), {});
  for (size_t i = 0; i < rules_.size(); ++i) by_lhs_[static_cast<size_t>(rules_[i].lhs)].push_back(i);
  n_symbols_ = static_cast<int>(names_.size());
  for (size_t i = 0; i < rules_.size(); ++i) {
    const Rule& r = rules_[i];
    if (r.rhs.size() == 1) {
      unary_.emplace_back(r.lhs, r.rhs[0]);
      continue;
    }
    // A -> X1 X2 … Xm becomes A -> X1 @1, @1 -> X2 @2, …, @(m-2) -> X(m-1) Xm.
    int lhs = r.lhs;
    for (size_t k = 0; k + 2 < r.rhs.size(); ++k) {
      const int next = n_symbols_++;
      binary_.push_back({lhs, r.rhs[k], next});
      lhs = next;
    }
    binary_.push_back({lhs, r.rhs[r.rhs.size() - 2], r.rhs.back()});
  }
  words_ = (static_cast<size_t>(n_symbols_) + 63) / 64;
  relevant_.assign(words_, 0);
  auto mark = [&](std::vector<uint64_t>& v, int s) { v[static_cast<size_t>(s) / 64] |= uint64_t{1} << (s % 64); };
  for (const auto& b : binary_) {
    mark(relevant_, b[1]);
    mark(relevant_, b[2]);
  }
  mark(relevant_, root_);
  closure_.assign(names_.size(), {});
  for (size_t t = 0; t < names_.size(); ++t) {
    if (!terminal(static_cast<int>(t))) continue;
    closure_[t].assign(words_, 0);
    mark(closure_[t], static_cast<int>(t));
    close(closure_[t].data());
  }
}

void Grammar::close(uint64_t* cell) const {
  for (bool changed = true; changed;) {
    changed = false;
    for (const auto& [lhs, rhs] : unary_) {
      const size_t lw = static_cast<size_t>(lhs) / 64, rw = static_cast<size_t>(rhs) / 64;
      if (((cell[rw] >> (rhs % 64)) & 1u) && !((cell[lw] >> (lhs % 64)) & 1u)) {
        cell[lw] |= uint64_t{1} << (lhs % 64);
        changed = true;
      }
    }
  }
}

std::vector<std::string> Grammar::terminals() const {
  std::vector<std::string> out;
  for (size_t s = 0; s < names_.size(); ++s)
    if (!is_lhs_[s]) out.push_back(names_[s]);
  return out;
}

std::vector<std::string> Grammar::words_of(const std::string& category) const {
  std::vector<std::string> out;
  const int c = symbol(category);
  if (c < 0) return out;
  for (size_t i : by_lhs_[static_cast<size_t>(c)]) {
    const Rule& r = rules_[i];
    if (r.rhs.size() == 1 && terminal(r.rhs[0])) out.push_back(names_[static_cast<size_t>(r.rhs[0])]);
  }
  return out;
}

int64_t Grammar::longest(int sym, std::vector<int64_t>& memo, int depth) const {
  if (terminal(sym)) return 1;
  if (depth > 64) throw std::runtime_error(path_ + ": the grammar is recursive (no longest sentence)");
  int64_t& m = memo[static_cast<size_t>(sym)];
  if (m >= 0) return m;
  int64_t best = 0;
  for (size_t i : by_lhs_[static_cast<size_t>(sym)]) {
    int64_t len = 0;
    for (int s : rules_[i].rhs) len += longest(s, memo, depth + 1);
    best = std::max(best, len);
  }
  return m = best;
}

int64_t Grammar::max_length() const {
  std::vector<int64_t> memo(names_.size(), -1);
  return longest(root_, memo, 0);
}

template <class Draw>
void Grammar::expand(int sym, Draw& draw, std::vector<int>& out, int depth) const {
  if (terminal(sym)) {
    out.push_back(sym);
    return;
  }
  if (depth > 64) throw std::runtime_error(path_ + ": derivation deeper than 64 (recursive grammar?)");
  const auto& rs = by_lhs_[static_cast<size_t>(sym)];
  double total = 0;
  for (size_t i : rs) total += rules_[i].prob;
  double x = draw() * total;
  size_t pick = rs.back();
  for (size_t i : rs) {
    x -= rules_[i].prob;
    if (x < 0) {
      pick = i;
      break;
    }
  }
  for (int s : rules_[pick].rhs) expand(s, draw, out, depth + 1);
}

std::string Grammar::signature(const std::vector<std::vector<int>>& cells) const {
  std::string key;
  key.reserve(cells.size() * words_ * 8);
  std::vector<uint64_t> c(words_);
  for (const auto& alts : cells) {
    std::fill(c.begin(), c.end(), 0);
    for (int t : alts)
      for (size_t w = 0; w < words_; ++w) c[w] |= closure_[static_cast<size_t>(t)][w];
    for (size_t w = 0; w < words_; ++w) {
      const uint64_t v = c[w] & relevant_[w];
      key.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
  }
  return key;
}

Grammar::Chart Grammar::parse(const std::vector<std::vector<int>>& cells) const {
  Chart c;
  c.n = cells.size();
  c.words = words_;
  c.bits.assign((c.n + 1) * (c.n + 1) * words_, 0);
  auto cell = [&](size_t i, size_t j) { return c.bits.data() + (i * (c.n + 1) + j) * words_; };
  for (size_t i = 0; i < c.n; ++i) {
    uint64_t* b = cell(i, i + 1);
    for (int t : cells[i])
      for (size_t w = 0; w < words_; ++w) b[w] |= closure_[static_cast<size_t>(t)][w];
  }
  for (size_t len = 2; len <= c.n; ++len) {
    for (size_t i = 0; i + len <= c.n; ++i) {
      const size_t j = i + len;
      uint64_t* out = cell(i, j);
      for (size_t k = i + 1; k < j; ++k) {
        const uint64_t* l = cell(i, k);
        const uint64_t* r = cell(k, j);
        for (const auto& b : binary_) {
          if (((l[static_cast<size_t>(b[1]) / 64] >> (b[1] % 64)) & 1u) &&
              ((r[static_cast<size_t>(b[2]) / 64] >> (b[2] % 64)) & 1u))
            out[static_cast<size_t>(b[0]) / 64] |= uint64_t{1} << (b[0] % 64);
        }
      }
      close(out);
    }
  }
  return c;
}

int Grammar::split(const Chart& c, int lhs, size_t i, size_t j) const {
  for (const Rule& r : rules_) {
    if (r.lhs != lhs || r.rhs.size() != 2) continue;
    for (size_t k = i + 1; k < j; ++k)
      if (c.has(i, k, r.rhs[0]) && c.has(k, j, r.rhs[1])) return static_cast<int>(k);
  }
  return -1;
}

// Boundaries at[k] < at[k + 1] for rhs[k..] over [i, j) (at[k] = i already set),
// the earliest first: rhs[k] over [i, b) for b ascending, the rest recursively.
bool Grammar::cuts(const Chart& c, const std::vector<int>& rhs, size_t k, size_t i, size_t j,
                   std::vector<size_t>& at) const {
  if (k + 1 == rhs.size()) {
    if (!c.has(i, j, rhs[k])) return false;
    at[k + 1] = j;
    return true;
  }
  for (size_t b = i + 1; b + (rhs.size() - k - 1) <= j; ++b) {
    if (!c.has(i, b, rhs[k])) continue;
    at[k + 1] = b;
    if (cuts(c, rhs, k + 1, b, j, at)) return true;
  }
  return false;
}

size_t Grammar::derive(const Chart& c, int sym, size_t i, size_t j, std::vector<Node>& out, int depth) const {
  const size_t self = out.size();
  out.push_back({sym, i, j, {}});
  if (terminal(sym)) return self;
  if (depth > 64) throw std::runtime_error(path_ + ": derivation deeper than 64 (unary cycle?)");
  std::vector<size_t> at;
  for (size_t r : by_lhs_[static_cast<size_t>(sym)]) {
    const auto& rhs = rules_[r].rhs;
    if (rhs.size() > j - i) continue;
    at.assign(rhs.size() + 1, i);
    if (!cuts(c, rhs, 0, i, j, at)) continue;
    for (size_t k = 0; k < rhs.size(); ++k) {
      const size_t child = derive(c, rhs[k], at[k], at[k + 1], out, depth + 1);
      out[self].children.push_back(child);
    }
    return self;
  }
  throw std::logic_error(path_ + ": the chart has " + names_[static_cast<size_t>(sym)] +
                         " over a span no rule derives");
}

std::vector<Grammar::Node> Grammar::derivation(const Chart& c, int sym, size_t i, size_t j) const {
  if (sym < 0 || sym >= static_cast<int>(names_.size()) || i >= j || j > c.n || !c.has(i, j, sym))
    throw std::invalid_argument("no derivation of " +
                                (sym >= 0 && sym < static_cast<int>(names_.size()) ? names_[static_cast<size_t>(sym)]
                                                                                   : std::string("?")) +
                                " over tokens [" + std::to_string(i) + ", " + std::to_string(j) + ")");
  std::vector<Node> out;
  derive(c, sym, i, j, out, 0);
  return out;
}

// memo[(sym · (n+1) + i) · (n+1) + j]: −1 unknown, −2 being counted (a cycle).
double Grammar::count(const Chart& c, int sym, size_t i, size_t j, std::vector<double>& memo) const {
  if (!c.has(i, j, sym)) return 0;
  if (terminal(sym)) return 1;
  double& m = memo[(static_cast<size_t>(sym) * (c.n + 1) + i) * (c.n + 1) + j];
  if (m == -2) throw std::runtime_error(path_ + ": unary cycle through " + names_[static_cast<size_t>(sym)]);
  if (m >= 0) return m;
  m = -2;
  double total = 0;
  std::vector<double> ways, next;
  for (size_t r : by_lhs_[static_cast<size_t>(sym)]) {
    // ways[p − i]: derivations of the rule's first symbols over [i, p).
    ways.assign(j - i + 1, 0);
    ways[0] = 1;
    for (int x : rules_[r].rhs) {
      next.assign(j - i + 1, 0);
      for (size_t p = i; p < j; ++p) {
        if (ways[p - i] == 0) continue;
        for (size_t q = p + 1; q <= j; ++q)
          if (c.has(p, q, x)) next[q - i] += ways[p - i] * count(c, x, p, q, memo);
      }
      ways.swap(next);
    }
    total += ways[j - i];
  }
  m = total;  // memo has a fixed size: m still refers to its slot
  return total;
}

double Grammar::derivations(const Chart& c, int sym, size_t i, size_t j) const {
  if (sym < 0 || sym >= static_cast<int>(names_.size()) || i >= j || j > c.n) return 0;
  std::vector<double> memo(names_.size() * (c.n + 1) * (c.n + 1), -1);
  return count(c, sym, i, j, memo);
}

// ---- Data --------------------------------------------------------------------

Data::Data(Kind kind, const std::string& root) : kind_(kind), dir_(root + "/" + name_of(kind)) {
  const bool qf = kind == Kind::QuestionFormation;
  const std::string gr = path(qf ? "question.gr" : "tense.gr");
  if (!fs::exists(gr)) throw std::runtime_error("missing grammar file " + gr);
  grammar_ = Grammar::load(gr);
  markers_ = qf ? std::vector<std::string>{"decl", "quest"} : std::vector<std::string>{"PAST", "PRESENT"};
  for (const auto& t : grammar_.terminals()) vocab_.insert(t);
  for (const auto& m : markers_) vocab_.insert(m);
  auto need = [&](const std::string& cat) {
    auto w = grammar_.words_of(cat);
    if (w.empty()) throw std::runtime_error(gr + ": no words for the category " + cat);
    return w;
  };
  if (qf) {
    vocab_.insert("?");
    for (const char* c : {"Aux_S", "Aux_P"})
      for (const auto& w : need(c)) aux_.insert(w);
    if (grammar_.symbol("S") < 0) throw std::runtime_error(gr + ": no symbol S");
    return;
  }
  for (const auto& w : need("N_sg")) nouns_sg_.insert(w);
  for (const auto& w : need("N_pl")) nouns_pl_.insert(w);
  const std::string vt = path("verbs.txt");
  if (!fs::exists(vt)) throw std::runtime_error("missing verb table " + vt);
  const auto lines = read_text_lines(vt);
  for (size_t n = 0; n < lines.size(); ++n) {
    if (lines[n].empty() || lines[n][0] == '#') continue;
    const auto f = words_of_text(lines[n]);
    const std::string where = vt + ":" + std::to_string(n + 1);
    if (f.size() != 3) throw std::runtime_error(where + ": expected `plural TAB singular TAB past`");
    for (size_t k = 0; k < 2; ++k)
      if (const int sym = grammar_.symbol(f[k]); sym < 0 || !grammar_.terminal(sym))
        throw std::runtime_error(where + ": \"" + f[k] + "\" is not a word of " + gr);
    pl_of_[f[2]] = f[0];
    sg_of_[f[2]] = f[1];
    past_of_[f[0]] = f[2];
    past_of_[f[1]] = f[2];
    present_pl_[f[2]] = f[0];
    present_sg_[f[2]] = f[1];
    vocab_.insert(f[2]);
  }
  for (const char* c : {"V_intrans_sg", "V_intrans_pl", "V_trans_sg", "V_trans_pl"})
    for (const auto& w : need(c))
      if (!past_of_.count(w)) throw std::runtime_error(vt + ": no past tense for the verb \"" + w + "\"");
}

std::string Data::dev_file() const { return kind_ == Kind::QuestionFormation ? "question.dev" : "tense.dev"; }
std::string Data::gen_file() const { return kind_ == Kind::QuestionFormation ? "question.gen" : "tense.gen"; }
std::string Data::test_file() const { return kind_ == Kind::QuestionFormation ? "question.test" : "tense.test"; }
std::string Data::shipped_train_file() const {
  if (kind_ != Kind::QuestionFormation)
    throw std::invalid_argument("tense_inflection has no shipped training set (generate it)");
  return "question.train.first20k_from_kan_transformer";
}

std::vector<std::string> Data::vocabulary() const {
  std::vector<std::string> words(vocab_.begin(), vocab_.end());
  std::sort(words.begin(), words.end());
  std::vector<std::string> out{"<pad>", "<sos>", "<eos>"};
  out.insert(out.end(), words.begin(), words.end());
  return out;
}

Line Data::split(const std::string& text, const std::string& where) const {
  const size_t tab = text.find('\t');
  if (tab == std::string::npos || text.find('\t', tab + 1) != std::string::npos)
    throw std::runtime_error(where + ": expected `source . MARKER<TAB>target` with exactly one TAB");
  Line l;
  l.source = words_of_text(text.substr(0, tab));
  l.target = words_of_text(text.substr(tab + 1));
  if (l.source.size() < 3 || l.target.empty())
    throw std::runtime_error(where + ": source or target is empty");
  l.marker = l.source.back();
  l.source.pop_back();
  if (std::find(markers_.begin(), markers_.end(), l.marker) == markers_.end())
    throw std::runtime_error(where + ": the source must end in one of " + join(markers_) + ", not \"" +
                             l.marker + "\"");
  if (l.source.back() != ".") throw std::runtime_error(where + ": the source must end in \". " + l.marker + "\"");
  for (const auto* side : {&l.source, &l.target})
    for (const auto& w : *side)
      if (!vocab_.count(w)) throw std::runtime_error(where + ": unknown word \"" + w + "\"");
  return l;
}

std::vector<std::string> Data::read(const std::string& file) const {
  const std::string p = path(file);
  if (!fs::exists(p)) throw std::runtime_error("missing data file " + p);
  auto lines = read_text_lines(p);
  if (lines.empty()) throw std::runtime_error("empty data file " + p);
  for (size_t n = 0; n < lines.size(); ++n) split(lines[n], p + ":" + std::to_string(n + 1));
  return lines;
}

std::vector<std::vector<int>> Data::cells(const std::vector<std::string>& words, bool past) const {
  std::vector<std::vector<int>> out;
  out.reserve(words.size());
  for (const auto& w : words) {
    if (past && kind_ == Kind::TenseInflection) {
      auto sg = present_sg_.find(w);
      if (sg != present_sg_.end()) {
        out.push_back({grammar_.symbol(sg->second), grammar_.symbol(present_pl_.at(w))});
        continue;
      }
      if (past_of_.count(w)) throw std::runtime_error("\"" + w + "\" is not in the past tense");
    }
    const int s = grammar_.symbol(w);
    if (s < 0 || !grammar_.terminal(s)) throw std::runtime_error("\"" + w + "\" is not a word of the grammar");
    out.push_back({s});
  }
  return out;
}

Data::Parse Data::parse_cached(const std::vector<std::vector<int>>& c) const {
  std::string key = grammar_.signature(c);
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;
  const auto chart = grammar_.parse(c);
  Parse p;
  p.ok = !c.empty() && chart.has(0, c.size(), grammar_.root());
  if (p.ok && kind_ == Kind::QuestionFormation)
    p.s_split = grammar_.split(chart, grammar_.symbol("S"), 0, c.size() - 1);
  if (cache_.size() > 200000) cache_.clear();  // bound memory on adversarial input
  cache_.emplace(std::move(key), p);
  return p;
}

namespace {

// The constituents of ≥ 2 tokens of a derivation (root first) as inclusive
// 1-based spans, sorted, each once; a node with children c₁…c_m (m > 2)
// binarised right-branching: the suffixes c_q…c_m for q = m−1 down to 1.
std::vector<std::pair<int64_t, int64_t>> right_branching_spans(const std::vector<Grammar::Node>& nodes) {
  std::vector<std::pair<int64_t, int64_t>> spans;
  for (const auto& node : nodes) {
    const size_t m = node.children.size();
    if (m < 2) continue;  // a unary node spans what its child does
    const size_t end = nodes[node.children.back()].end;
    for (size_t q = m - 1; q-- > 0;) {  // children q…m−1 (0-based); q = 0: the node itself
      const size_t begin = nodes[node.children[q]].begin;
      if (end - begin >= 2) spans.emplace_back(static_cast<int64_t>(begin) + 1, static_cast<int64_t>(end));
    }
  }
  std::sort(spans.begin(), spans.end());
  spans.erase(std::unique(spans.begin(), spans.end()), spans.end());
  return spans;
}

}  // namespace

Data::GoldTree Data::gold_tree(const std::vector<std::string>& words) const {
  const auto c = cells(words, true);
  std::string key = grammar_.signature(c);
  auto it = gold_cache_.find(key);
  if (it != gold_cache_.end()) return it->second;
  const int s = grammar_.symbol("S");
  if (s < 0 || grammar_.terminal(s)) throw std::runtime_error("the grammar has no symbol S");
  const auto chart = grammar_.parse(c);
  GoldTree g;
  if (!c.empty() && chart.has(0, c.size(), s)) {
    g.parses = grammar_.derivations(chart, s, 0, c.size());
    g.spans = right_branching_spans(grammar_.derivation(chart, s, 0, c.size()));
  }
  if (gold_cache_.size() > 200000) gold_cache_.clear();  // bound memory on adversarial input
  gold_cache_.emplace(std::move(key), g);
  return g;
}

bool Data::grammatical(const std::vector<std::string>& source) const {
  return parse_cached(cells(source, true)).ok;
}

int Data::main_aux(const std::vector<std::string>& source) const {
  const Parse p = parse_cached(cells(source, true));
  if (!p.ok) throw std::runtime_error("not a sentence of the grammar: " + join(source));
  if (p.s_split < 0 || !aux_.count(source[static_cast<size_t>(p.s_split)]))
    throw std::runtime_error("no main auxiliary in: " + join(source));
  return p.s_split;
}

std::vector<std::string> Data::present(const std::vector<std::string>& source) const {
  auto c = cells(source, true);
  if (!parse_cached(c).ok) throw std::runtime_error("not a sentence of the grammar: " + join(source));
  std::vector<std::string> out = source;
  for (size_t i = 0; i < c.size(); ++i) {
    if (c[i].size() != 2) continue;
    const auto alts = c[i];
    c[i] = {alts[0]};  // singular
    const bool sg = parse_cached(c).ok;
    c[i] = {alts[1]};
    const bool pl = parse_cached(c).ok;
    if (sg == pl) throw std::runtime_error("the number of \"" + source[i] + "\" is ambiguous in: " + join(source));
    out[i] = sg ? present_sg_.at(source[i]) : present_pl_.at(source[i]);
    c[i] = alts;
  }
  return out;
}

// structural-grokking's tense_nearest: each verb agrees with the most recent
// noun before it (singular if none).
std::vector<std::string> Data::present_nearest(const std::vector<std::string>& source) const {
  std::vector<std::string> out = source;
  bool sg = true;
  for (size_t i = 0; i < source.size(); ++i) {
    const auto& w = source[i];
    if (nouns_sg_.count(w)) sg = true;
    else if (nouns_pl_.count(w)) sg = false;
    else if (present_sg_.count(w)) out[i] = sg ? present_sg_.at(w) : present_pl_.at(w);
  }
  return out;
}

std::vector<std::string> Data::transform(const std::vector<std::string>& source,
                                         const std::string& marker) const {
  if (marker == "decl" || marker == "PAST") {
    if (!grammatical(source)) throw std::runtime_error("not a sentence of the grammar: " + join(source));
    return source;
  }
  if (marker == "quest") {
    const size_t k = static_cast<size_t>(main_aux(source));
    std::vector<std::string> q{source[k]};
    for (size_t i = 0; i + 1 < source.size(); ++i)
      if (i != k) q.push_back(source[i]);
    q.push_back("?");
    return q;
  }
  if (marker == "PRESENT") return present(source);
  throw std::runtime_error("unknown marker \"" + marker + "\"");
}

bool Data::ambiguous(const Line& l) const {
  if (l.marker == "quest") {
    for (size_t i = 0; i < l.source.size(); ++i)
      if (aux_.count(l.source[i])) return static_cast<int>(i) == main_aux(l.source);
    return false;
  }
  if (l.marker == "PRESENT") return present_nearest(l.source) == l.target;
  return true;
}

std::string Data::check(const std::string& text, bool training) const {
  try {
    const Line l = split(text, "line");
    if (transform(l.source, l.marker) != l.target)
      return "the target is not the " + l.marker + " transformation of the source (expected \"" +
             join(transform(l.source, l.marker)) + "\")";
    if (training && !ambiguous(l))
      return l.marker == "quest" ? "the first auxiliary is not the main one (not a training question)"
                                 : "agreement with the most recent noun differs (not a training line)";
    return "";
  } catch (const std::exception& e) {
    std::string m = e.what();
    return m.rfind("line: ", 0) == 0 ? m.substr(6) : m;
  }
}

std::vector<std::string> Data::generate(size_t n, uint64_t seed, Structure structure) const {
  std::unordered_set<std::string> taken;
  for (const auto& f : {dev_file(), gen_file(), test_file()})
    for (auto& l : read(f)) taken.insert(std::move(l));
  Rng rng(seed);
  std::vector<std::string> out;
  out.reserve(n);
  auto emit = [&](std::vector<std::string> source, const std::string& marker) {
    Line l{std::move(source), marker, {}};
    l.target = transform(l.source, marker);
    if (!ambiguous(l)) return false;
    std::string text = join(l.source) + " " + marker + "\t" + join(l.target);
    if (!taken.insert(text).second) return false;
    out.push_back(std::move(text));
    return true;
  };
  const size_t max_attempts = 1000 * n + 100000;
  size_t attempts = 0;
  auto give_up = [&] {
    throw std::runtime_error("could only generate " + std::to_string(out.size()) + " of " +
                             std::to_string(n) + " distinct " + name_of(kind_) + " lines");
  };
  const bool qf = kind_ == Kind::QuestionFormation;
  if (structure == Structure::Pcfg) {
    auto draw = [&] { return rng.uniform(); };
    while (out.size() < n) {
      if (++attempts > max_attempts) give_up();
      std::vector<std::string> s;
      for (int sym : grammar_.sample(draw)) s.push_back(grammar_.name(sym));
      if (!qf)
        for (auto& w : s)
          if (past_of_.count(w)) w = past_of_.at(w);
      emit(std::move(s), markers_[rng.below(2)]);
    }
    return out;
  }
  // Empirical: each structure is the sequence of word classes (the set of
  // grammar categories a word may be) of a reference line, plus its marker.
  const std::string ref = qf ? shipped_train_file() : test_file();
  std::map<std::string, std::vector<std::string>> pool;  // class key -> words, sorted
  auto class_of = [&](const std::string& w) { return grammar_.signature(cells({w}, true)); };
  for (const auto& w : vocab_) {
    if (w == "?" || std::find(markers_.begin(), markers_.end(), w) != markers_.end()) continue;
    if (!qf && past_of_.count(w) && !present_sg_.count(w)) continue;  // present forms: not in sources
    pool[class_of(w)].push_back(w);
  }
  for (auto& [k, v] : pool) std::sort(v.begin(), v.end());
  struct Shape {
    std::vector<const std::vector<std::string>*> slots;
    std::string marker;
  };
  std::map<std::string, size_t> index;  // structure key -> shapes_ index
  std::vector<Shape> shapes;
  std::vector<uint64_t> counts;
  const auto lines = read(ref);
  for (size_t i = 0; i < lines.size(); ++i) {
    const Line l = split(lines[i], path(ref) + ":" + std::to_string(i + 1));
    std::string key = l.marker;
    Shape s{{}, l.marker};
    for (const auto& w : l.source) {
      const std::string c = class_of(w);
      auto it = pool.find(c);
      if (it == pool.end()) throw std::runtime_error(path(ref) + ":" + std::to_string(i + 1) + ": no word class for \"" + w + "\"");
      s.slots.push_back(&it->second);
      key += "|" + c;
    }
    auto [it, fresh] = index.emplace(key, shapes.size());
    if (fresh) {
      shapes.push_back(std::move(s));
      counts.push_back(0);
    }
    ++counts[it->second];
  }
  std::vector<uint64_t> cumulative(counts.size());
  uint64_t total = 0;
  for (size_t i = 0; i < counts.size(); ++i) cumulative[i] = total += counts[i];
  // A structure whose fillings are used up is tried 64 times, then another is drawn.
  while (out.size() < n) {
    const uint64_t x = rng.below(total);
    const Shape& s = shapes[static_cast<size_t>(std::upper_bound(cumulative.begin(), cumulative.end(), x) -
                                                 cumulative.begin())];
    for (int tries = 0; tries < 64; ++tries) {
      if (++attempts > max_attempts) give_up();
      std::vector<std::string> words;
      words.reserve(s.slots.size());
      for (const auto* p : s.slots) words.push_back((*p)[rng.below(p->size())]);
      if (emit(std::move(words), s.marker)) break;
    }
  }
  return out;
}

}  // namespace groklab::mccoy

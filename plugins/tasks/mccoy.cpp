// question_formation and tense_inflection: the data of McCoy, Frank & Linzen
// (2020) as used by Murty et al. (2023), "Grokking of Hierarchical Structure in
// Vanilla Transformers". A causal LM on whole lines, the TAB replaced by a
// space: `<sos> source . MARKER target` -> `source . MARKER target <eos>`
// (targets -1 on padding). Splits: train (generated or shipped), val (McCoy's
// dev), test (McCoy's gen, out of distribution). Accuracy as the reference
// code computes it: QF the question's first word among the four auxiliaries
// after `quest`; TI greedy decoding after PAST/PRESENT, scored on its POS
// sequence and main verb.
#include <torch/torch.h>

#include <fstream>
#include <stdexcept>
#include <unordered_map>

#include "groklab/components.h"
#include "mccoy_data.h"
#include "tasks.h"

namespace groklab::tasks {
namespace {

using torch::Tensor;

// One split, tokenised: `<sos> tokens…` / `tokens… <eos>`, padded.
struct Encoded {
  Tensor inputs, targets, lengths;       // [N, T], [N, T], [N] (tokens incl. <sos>)
  std::vector<std::vector<int64_t>> ids;  // tokens per example, without <sos>/<eos>
  std::vector<int64_t> marker;            // index of the marker in ids
};

class McCoyTask : public Task {
 public:
  McCoyTask(mccoy::Kind kind, const Params& p)
      : kind_(kind),
        data_(kind, mccoy::find_data_dir(p.get_string("data_dir"), kind)),
        train_source_(p.get_string("train_source")),
        train_size_(p.get_int("train_size")),
        structure_(mccoy::structure_named(p.get_string("structure"))) {
    vocab_ = data_.vocabulary();
    for (size_t i = 0; i < vocab_.size(); ++i) ids_[vocab_[i]] = static_cast<int64_t>(i);
    seq_len_ = data_.max_line_tokens() + 1;
  }

  TaskSpec spec() const override {
    const auto v = static_cast<int64_t>(vocab_.size());
    return {v, seq_len_, v};
  }

  void prepare(uint64_t seed) override {
    std::vector<std::string> train;
    if (train_source_ == "shipped")
      train = data_.read(data_.shipped_train_file());
    else
      train = data_.generate(static_cast<size_t>(train_size_), seed, structure_);
    splits_["train"] = encode(train, "train");
    splits_["val"] = encode(data_.read(data_.dev_file()), data_.path(data_.dev_file()));
    splits_["test"] = encode(data_.read(data_.gen_file()), data_.path(data_.gen_file()));
  }

  std::vector<std::string> splits() const override { return {"train", "val", "test"}; }

  int64_t size(const std::string& split) const override { return data(split).inputs.size(0); }

  // Tree projections read the sentences of the examples accuracy scores (QF:
  // the quest lines, as Murty et al.; TI: every line).
  Tensor sentence_indices(const std::string& split) const override { return scored(split); }

  // `<sos>` and the source sentence: the line cut before its marker, the final
  // "." removed; its gold tree parses the words as the grammar's S
  // (mccoy::Data::gold_tree: the grammar's constituents, binarised
  // right-branching; none for words that are not a sentence of the grammar).
  Sentence sentence(const std::string& split, int64_t index) const override {
    const Encoded& d = data(split);
    if (index < 0 || index >= static_cast<int64_t>(d.ids.size()))
      throw std::out_of_range(std::string(name()) + ": sentence " + std::to_string(index) +
                              " out of range for split '" + split + "'");
    const auto& t = d.ids[static_cast<size_t>(index)];
    auto end = t.begin() + d.marker[static_cast<size_t>(index)];
    if (end != t.begin() && *(end - 1) == id(".")) --end;
    Sentence s;
    s.inputs.push_back(id("<sos>"));
    s.inputs.insert(s.inputs.end(), t.begin(), end);
    std::vector<std::string> words;
    for (auto w = t.begin(); w != end; ++w) words.push_back(word(*w));
    s.gold = data_.gold_tree(words).spans;  // none if the words are not a sentence of the grammar
    return s;
  }

  Batch batch(const std::string& split, const Tensor& indices) const override {
    const Encoded& d = data(split);
    const int64_t width = indices.numel() > 0 ? d.lengths.index_select(0, indices).max().item<int64_t>() : 1;
    return {d.inputs.index_select(0, indices).narrow(1, 0, width),
            d.targets.index_select(0, indices).narrow(1, 0, width)};
  }

 protected:
  const Encoded& data(const std::string& split) const {
    if (splits_.empty()) throw std::logic_error(std::string(name()) + ": prepare() was not called");
    auto it = splits_.find(split);
    if (it == splits_.end())
      throw std::invalid_argument(std::string(name()) + ": no split named '" + split +
                                  "' (splits: train, val, test)");
    return it->second;
  }

  const char* name() const { return mccoy::name_of(kind_); }
  int64_t id(const std::string& w) const { return ids_.at(w); }
  const std::string& word(int64_t id) const {
    static const std::string unknown = "<unk>";
    return id >= 0 && id < static_cast<int64_t>(vocab_.size()) ? vocab_[static_cast<size_t>(id)] : unknown;
  }

  // Index in the logits' last dimension of input position p, or throws.
  static int64_t logit_row(int64_t p, int64_t T, int64_t L, const char* who) {
    const int64_t r = p - (T - L);
    if (r < 0)
      throw std::invalid_argument(std::string(who) +
                                  ": accuracy needs logits at every position (architecture readout = \"all\")");
    return r;
  }

  mccoy::Kind kind_;
  mccoy::Data data_;
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> ids_;
  int64_t seq_len_ = 0;
  std::map<std::string, Encoded> splits_;

 private:
  Encoded encode(const std::vector<std::string>& lines, const std::string& where) const {
    Encoded e;
    const auto n = static_cast<int64_t>(lines.size());
    int64_t width = 1;
    for (size_t i = 0; i < lines.size(); ++i) {
      const mccoy::Line l = data_.split(lines[i], where + ":" + std::to_string(i + 1));
      std::vector<int64_t> t;
      for (const auto& w : l.source) t.push_back(id(w));
      e.marker.push_back(static_cast<int64_t>(t.size()));
      t.push_back(id(l.marker));
      for (const auto& w : l.target) t.push_back(id(w));
      if (static_cast<int64_t>(t.size()) + 1 > seq_len_)
        throw std::runtime_error(where + ":" + std::to_string(i + 1) + ": line longer than the grammar allows");
      width = std::max<int64_t>(width, static_cast<int64_t>(t.size()) + 1);
      e.ids.push_back(std::move(t));
    }
    e.inputs = torch::full({n, width}, id("<pad>"), torch::kLong);
    e.targets = torch::full({n, width}, -1, torch::kLong);
    e.lengths = torch::empty({n}, torch::kLong);
    auto in = e.inputs.accessor<int64_t, 2>();
    auto tg = e.targets.accessor<int64_t, 2>();
    auto len = e.lengths.accessor<int64_t, 1>();
    for (int64_t i = 0; i < n; ++i) {
      const auto& t = e.ids[static_cast<size_t>(i)];
      const auto m = static_cast<int64_t>(t.size());
      in[i][0] = id("<sos>");
      for (int64_t k = 0; k < m; ++k) {
        in[i][k + 1] = t[static_cast<size_t>(k)];
        tg[i][k] = t[static_cast<size_t>(k)];
      }
      tg[i][m] = id("<eos>");
      len[i] = m + 1;
    }
    return e;
  }

  std::string train_source_;
  int64_t train_size_;
  mccoy::Structure structure_;
};

// Question formation: accuracy over `quest` lines only; after the prefix up to
// and including `quest`, the next-token distribution restricted to {doesn't,
// does, do, don't} (ties go to the first in this order, as torch's argmax over
// the reference's list); right iff its argmax is the question's first word.
class QuestionFormation final : public McCoyTask {
 public:
  explicit QuestionFormation(const Params& p) : McCoyTask(mccoy::Kind::QuestionFormation, p) {
    for (const char* w : {"doesn't", "does", "do", "don't"}) aux_.push_back(id(w));
  }

  Tensor scored(const std::string& split) const override {
    const Encoded& d = data(split);
    std::vector<int64_t> idx;
    const int64_t quest = id("quest");
    for (size_t i = 0; i < d.ids.size(); ++i)
      if (d.ids[i][static_cast<size_t>(d.marker[i])] == quest) idx.push_back(static_cast<int64_t>(i));
    return torch::tensor(idx, torch::kLong);
  }

  Tensor correct(const Tensor& logits, const Batch& batch) const override {
    const int64_t B = batch.inputs.size(0), T = batch.inputs.size(1), L = logits.size(1);
    auto out = torch::zeros({B}, torch::kBool);
    if (B == 0) return out;
    auto in = batch.inputs.accessor<int64_t, 2>();
    auto tg = batch.targets.accessor<int64_t, 2>();
    const int64_t quest = id("quest");
    std::vector<int64_t> rows, pos;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t p = 0; p < T; ++p)
        if (in[b][p] == quest) {
          rows.push_back(b);
          pos.push_back(p);
          break;
        }
    if (rows.empty()) return out;
    std::vector<int64_t> lrow;
    for (int64_t p : pos) lrow.push_back(logit_row(p, T, L, "question_formation"));
    const Tensor sel = logits.index({torch::tensor(rows, torch::kLong), torch::tensor(lrow, torch::kLong)})
                           .index_select(1, torch::tensor(aux_, torch::kLong))
                           .to(torch::kDouble)
                           .contiguous();
    auto s = sel.accessor<double, 2>();
    auto o = out.accessor<bool, 1>();
    for (size_t r = 0; r < rows.size(); ++r) {
      size_t best = 0;
      for (size_t k = 1; k < aux_.size(); ++k)
        if (s[static_cast<int64_t>(r)][static_cast<int64_t>(k)] > s[static_cast<int64_t>(r)][static_cast<int64_t>(best)]) best = k;
      o[rows[r]] = aux_[best] == tg[rows[r]][pos[r]];
    }
    return out;
  }

 private:
  std::vector<int64_t> aux_;
};

// Tense inflection: greedy decoding of up to 50 tokens after the prefix up to
// and including PAST/PRESENT, until <eos>; the final "." stripped from output
// and target; right iff their POS sequences (pos.txt, then pos_tense.txt, as
// structural-grokking's sent_to_pos) are equal and so is the main verb (the
// second V if the third tag is R, else the first V).
class TenseInflection final : public McCoyTask {
 public:
  explicit TenseInflection(const Params& p) : McCoyTask(mccoy::Kind::TenseInflection, p) {
    for (const char* f : {"pos.txt", "pos_tense.txt"}) {
      const std::string path = data_.path(f);
      std::ifstream in(path);
      if (!in) throw std::runtime_error("missing POS table " + path);
      std::string line;
      for (int n = 1; std::getline(in, line); ++n) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        const size_t tab = line.find('\t');
        if (tab == std::string::npos || tab == 0)
          throw std::runtime_error(path + ":" + std::to_string(n) + ": expected `word TAB tag`");
        auto strip = [](std::string s) {
          const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
          return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
        };
        pos_.emplace(strip(line.substr(0, tab)), strip(line.substr(tab + 1)));  // first table wins
      }
    }
  }

  // Teacher-forced: every token after the marker (and <eos>) is the argmax.
  // Accuracy uses correct_model (greedy decoding) instead.
  Tensor correct(const Tensor& logits, const Batch& batch) const override {
    const int64_t B = batch.inputs.size(0), T = batch.inputs.size(1), L = logits.size(1);
    auto scored = batch.targets.ge(0);
    auto in = batch.inputs.accessor<int64_t, 2>();
    auto mask = torch::zeros({B, T}, torch::kBool);
    auto m = mask.accessor<bool, 2>();
    const int64_t past = id("PAST"), present = id("PRESENT");
    for (int64_t b = 0; b < B; ++b) {
      bool after = false;
      for (int64_t p = 0; p < T; ++p) {
        after = after || in[b][p] == past || in[b][p] == present;
        m[b][p] = after;
      }
    }
    const auto targets = batch.targets.narrow(1, T - L, L);
    const auto keep = scored.logical_and(mask).narrow(1, T - L, L);
    return logits.argmax(-1).eq(targets).logical_or(keep.logical_not()).all(1);
  }

  Tensor correct_model(Model& model, const std::string& split, const Tensor& indices) const override {
    torch::NoGradGuard no_grad;
    const Encoded& d = data(split);
    const int64_t B = indices.numel(), S = seq_len_, eos = id("<eos>");
    auto idx = indices.to(torch::kLong).contiguous();
    auto ix = idx.accessor<int64_t, 1>();
    auto buf = torch::full({B, S}, id("<pad>"), torch::kLong);
    auto bf = buf.accessor<int64_t, 2>();
    std::vector<int64_t> cur(static_cast<size_t>(B));
    std::vector<std::vector<int64_t>> out(static_cast<size_t>(B));
    std::vector<char> done(static_cast<size_t>(B), 0);
    for (int64_t b = 0; b < B; ++b) {
      const auto e = static_cast<size_t>(ix[b]);
      if (ix[b] < 0 || ix[b] >= static_cast<int64_t>(d.ids.size()))
        throw std::out_of_range("tense_inflection: index " + std::to_string(ix[b]) + " out of range");
      bf[b][0] = id("<sos>");
      for (int64_t k = 0; k <= d.marker[e]; ++k) bf[b][k + 1] = d.ids[e][static_cast<size_t>(k)];
      cur[static_cast<size_t>(b)] = d.marker[e] + 2;
    }
    for (int step = 0; step < kMaxDecode; ++step) {
      std::vector<int64_t> active;
      int64_t W = 0;
      for (int64_t b = 0; b < B; ++b)
        if (!done[static_cast<size_t>(b)]) {
          active.push_back(b);
          W = std::max(W, cur[static_cast<size_t>(b)]);
        }
      if (active.empty()) break;
      const Tensor act = torch::tensor(active, torch::kLong);
      const Tensor logits = model.forward(buf.index_select(0, act).narrow(1, 0, W));
      const int64_t L = logits.size(1);
      std::vector<int64_t> rows;
      for (int64_t b : active) rows.push_back(logit_row(cur[static_cast<size_t>(b)] - 1, W, L, "tense_inflection"));
      const Tensor next = logits.index({torch::arange(static_cast<int64_t>(active.size())), torch::tensor(rows, torch::kLong)})
                              .argmax(-1)
                              .contiguous();
      auto nx = next.accessor<int64_t, 1>();
      for (size_t a = 0; a < active.size(); ++a) {
        const auto b = static_cast<size_t>(active[a]);
        const int64_t t = nx[static_cast<int64_t>(a)];
        if (t == eos) {
          done[b] = 1;
          continue;
        }
        out[b].push_back(t);
        // Past the longest line: the output is already longer than any target.
        if (cur[b] >= S) {
          done[b] = 1;
          continue;
        }
        bf[active[a]][cur[b]++] = t;
      }
    }
    auto result = torch::zeros({B}, torch::kBool);
    auto r = result.accessor<bool, 1>();
    for (int64_t b = 0; b < B; ++b) {
      const auto e = static_cast<size_t>(ix[b]);
      std::vector<std::string> target, pred;
      for (size_t k = static_cast<size_t>(d.marker[e]) + 1; k < d.ids[e].size(); ++k) target.push_back(word(d.ids[e][k]));
      for (int64_t t : out[static_cast<size_t>(b)]) pred.push_back(word(t));
      r[b] = main_right_tense(target, pred);
    }
    return result;
  }

  // structural-grokking's main_right_tense after remove_fullstop on both.
  bool main_right_tense(std::vector<std::string> target, std::vector<std::string> pred) const {
    if (!target.empty() && target.back() == ".") target.pop_back();
    if (!pred.empty() && pred.back() == ".") pred.pop_back();
    if (target.size() != pred.size()) return false;
    std::vector<std::string> tags;
    for (size_t i = 0; i < target.size(); ++i) {
      const std::string t = tag(target[i]);
      if (t != tag(pred[i])) return false;
      tags.push_back(t);
    }
    const int want = tags.size() > 2 && tags[2] == "R" ? 2 : 1;
    int seen = 0;
    for (size_t i = 0; i < tags.size(); ++i)
      if (tags[i] == "V" && ++seen == want) return pred[i] == target[i];
    return false;
  }

 private:
  static constexpr int kMaxDecode = 50;
  std::string tag(const std::string& w) const {
    auto it = pos_.find(w);
    return it == pos_.end() ? "\x01unknown:" + w : it->second;
  }
  std::unordered_map<std::string, std::string> pos_;
};

Schema mccoy_schema(bool shipped) {
  std::vector<std::string> sources{"generated"};
  if (shipped) sources.push_back("shipped");
  return Schema()
      .string("data_dir", std::string(),
              "directory holding question_formation/ and tense_inflection/ (\"\": $GROKLAB_DATA_DIR, "
              "else the installed share/groklab/data, else the source tree's data/)")
      .choice("train_source", "generated", sources,
              shipped ? "generated: train_size lines from the grammar, seeded by the data-split seed; "
                        "shipped: the 20k-line subset of McCoy's training set"
                      : "generated: train_size lines from the grammar, seeded by the data-split seed")
      .integer("train_size", 100000, "lines of generated training data (the paper: about 100k)")
      .range(1, 10000000)
      .choice("structure", "empirical", {"empirical", "pcfg"},
              "sentence structures of generated data: empirical (the frequencies of McCoy's "
              "in-distribution data) or pcfg (the grammar's rule probabilities)");
}

}  // namespace

void register_mccoy(Registrar& r) {
  r.add_task("question_formation",
             "McCoy et al. 2020 question formation as a causal LM on `decl . quest question ?` "
             "lines (Murty et al. 2023); accuracy: first word of the question on quest lines",
             mccoy_schema(true), [](const Params& p) { return std::make_shared<QuestionFormation>(p); });
  r.add_task("tense_inflection",
             "McCoy et al. 2020 tense inflection as a causal LM on `past . PRESENT present` lines "
             "(Murty et al. 2023); accuracy: greedy decoding, POS sequence and main verb",
             mccoy_schema(false), [](const Params& p) { return std::make_shared<TenseInflection>(p); });
}

}  // namespace groklab::tasks

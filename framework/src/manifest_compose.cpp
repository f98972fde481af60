// The manifest composer: loads TOML (with includes), applies command-line
// overrides, expands sweeps and validates every child against the plugins'
// schemas, collecting every error with its file, line and column.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <toml++/toml.h>

#include "groklab/manifest.h"

namespace groklab {
namespace {

namespace fs = std::filesystem;

const char* const kCommandLine = "<command line>";
const std::vector<std::string> kTopLevel = {"architecture", "include", "metrics", "optimizer",
                                            "run",          "sweep",   "task"};
const std::vector<std::string> kPathTables = {"architecture", "metrics", "optimizer", "run",
                                              "task"};
constexpr std::uintmax_t kMaxFileBytes = 16u << 20;

// ---------------------------------------------------------------- helpers

struct Loc {
  std::string file;
  int line = 0;
  int column = 0;
};

// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
size_t edit_distance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

// Returns " (did you mean \"x\"?)" for the closest candidate, or "".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  if (word.size() > 64) return "";
  std::string best;
  size_t best_d = 0;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d > std::max<size_t>(1, word.size() / 3) || d >= std::max(word.size(), c.size())) continue;
    if (best.empty() || d < best_d) {
      best = c;
      best_d = d;
    }
  }
  return best.empty() ? "" : " (did you mean \"" + best + "\"?)";
}

std::string join(const std::vector<std::string>& names) {
  if (names.empty()) return "(none)";
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

std::string quoted(const std::string& s) { return Value(s).canonical(); }

std::string with_article(const std::string& noun) {
  bool vowel = !noun.empty() && std::string("aeiou").find(noun[0]) != std::string::npos;
  return (vowel ? "an " : "a ") + noun;
}

std::string short_text(std::string s) {
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

// "5000", or "\"abc\" (a string)" when the type is not the one expected.
std::string got(const Value& v, bool show_type) {
  std::string s = short_text(v.canonical());
  if (show_type) s += " (" + with_article(to_string(v.type())) + ")";
  return s;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : 99;
    if (n == 99 || i + n >= s.size() + (n ? 0 : 1)) return false;
    if (n == 0) {
      ++i;
      continue;
    }
    uint32_t cp = c & (0x3Fu >> n);
    for (size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 0x2) return false;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    static const uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

// ---------------------------------------------------------------- the merged tree

// A value as written, with where it was written.
struct Item {
  std::optional<Value> value;  // absent: a TOML type no parameter holds (see bad)
  std::string bad;             // e.g. "a table", "a date-time"
  Loc loc;                     // of the value
  Loc key_loc;                 // of the key
};

// A component table or [run], as merged so far.
struct Section {
  bool present = false;
  bool invalid = false;  // not a table: already reported
  Loc loc;  // of the table header (or of whatever created it)
  std::map<std::string, Item> items;
};

// A key path an override or a sweep can set.
struct Path {
  std::string table;  // task, architecture, optimizer, run or metrics
  size_t index = 0;   // metrics only
  std::string key;
  std::string str() const {
    return table == "metrics" ? table + "." + std::to_string(index) + "." + key : table + "." + key;
  }
};

// One swept key and its values.
struct Axis {
  Path path;
  Loc key_loc;
  std::vector<Item> values;
};

// One layer of configuration: a file (its includes merged in) or the result so far.
struct Layer {
  std::map<std::string, Section> tables;  // task, architecture, optimizer, run
  bool has_metrics = false;
  std::vector<Section> metrics;
  std::map<std::string, Axis> sweep;  // by Path::str(): sorted, which is the sweep order
};

// An assignment of a value to a key path (an override, or a sweep child's value).
struct Setting {
  Path path;
  Item item;
};

void merge_section(Section& base, const Section& top) {
  if (!base.present) {
    base = top;
    return;
  }
  auto tp = top.items.find("plugin");
  auto bp = base.items.find("plugin");
  if (tp != top.items.end() && bp != base.items.end() && tp->second.value && bp->second.value &&
      *tp->second.value != *bp->second.value) {
    base = top;  // another plugin: its parameters start afresh
    return;
  }
  base.loc = top.loc;
  for (const auto& [k, it] : top.items) base.items[k] = it;
}

void merge(Layer& base, const Layer& top) {
  for (const auto& [name, sec] : top.tables) merge_section(base.tables[name], sec);
  if (top.has_metrics) {
    base.has_metrics = true;
    base.metrics = top.metrics;
  }
  for (const auto& [k, axis] : top.sweep) base.sweep[k] = axis;
}

// ---------------------------------------------------------------- the work of one call

class Context {
 public:
  Context(const Registry& registry, const ComposerOptions& options)
      : registry_(registry), options_(options) {}

  void error(const Loc& loc, std::string key_path, std::string message) {
    ManifestError e{loc.file, loc.line, loc.column, std::move(key_path), std::move(message)};
    if (seen_.insert(e.to_string()).second) errors_.push_back(std::move(e));
  }
  bool failed() const { return !errors_.empty(); }
  bool fatal() const { return fatal_; }

  [[noreturn]] void throw_errors() {
    auto rank = [this](const std::string& file) {
      if (file == kCommandLine) return files_.size() + 1;
      auto it = std::find(files_.begin(), files_.end(), file);
      return static_cast<size_t>(it - files_.begin());
    };
    std::stable_sort(errors_.begin(), errors_.end(),
                     [&](const ManifestError& a, const ManifestError& b) {
                       return std::make_tuple(rank(a.file), a.line, a.column) <
                              std::make_tuple(rank(b.file), b.line, b.column);
                     });
    throw ManifestErrors(std::move(errors_));
  }

  // Loads a manifest (text, or read from path when text is null) and its includes.
  Layer load_main(const std::string* text, const std::string& path) {
    main_loc_ = Loc{path, 1, 1};
    std::vector<std::pair<std::string, std::string>> stack;
    return load(text, path, Loc{path, 1, 1}, "", stack);
  }

  // Parses overrides; plain ones go to settings, sweeps to axes.
  void parse_overrides(const std::vector<std::string>& args, std::vector<Setting>& settings,
                       std::vector<Axis>& axes);

  // Applies settings: every `plugin` first, then the rest in order.
  void apply(Layer& layer, const std::vector<Setting>& settings);

  // Validates a fully merged layer against the registry; returns the config
  // (meaningful only when no error was recorded).
  ResolvedConfig resolve(const Layer& layer);

  const Loc& main_loc() const { return main_loc_; }

 private:
  Loc loc_of(const toml::source_region& src, const std::string& file) const {
    return Loc{file, static_cast<int>(src.begin.line), static_cast<int>(src.begin.column)};
  }

  Layer load(const std::string* text, const std::string& display, const Loc& from,
             const std::string& from_key, std::vector<std::pair<std::string, std::string>>& stack);
  void load_includes(const toml::node& node, const std::string& display, const Loc& key_loc,
                     std::vector<std::pair<std::string, std::string>>& stack, Layer& acc);
  Layer layer_from(const toml::table& root, const std::string& file);
  Section section_from(const toml::table& table, const Loc& key_loc, const std::string& file);
  Item item_from(const toml::node& node, const Loc& key_loc, const std::string& file) const;
  void sweep_from(const toml::table& table, const std::string& prefix, const std::string& file,
                  Layer& layer);
  std::string parse_path(const std::string& text, Path& out) const;
  std::optional<Value> parse_value(const std::string& text, std::string& bad,
                                   std::string& err) const;
  Section* target(Layer& layer, const Path& path, const Loc& loc);
  std::optional<ComponentConfig> component(Kind kind, const Section* sec, const std::string& prefix);
  Params check_params(const Schema& schema, const Section& sec, const std::string& prefix,
                      const std::string& owner, const Loc& missing_loc, bool has_plugin);

  const Registry& registry_;
  const ComposerOptions& options_;
  std::vector<ManifestError> errors_;
  std::set<std::string> seen_;
  std::vector<std::string> files_;  // display names in load order
  size_t loaded_ = 0;
  bool fatal_ = false;  // a file could not be read or parsed: validation would mislead
  Loc main_loc_;
};

bool read_file(const std::string& path, std::string& contents, std::string& err) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec) {
    err = ec.message();
    return false;
  }
  if (!fs::is_regular_file(st)) {
    err = "not a regular file";
    return false;
  }
  auto size = fs::file_size(path, ec);
  if (!ec && size > kMaxFileBytes) {
    err = "larger than 16 MiB";
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    err = std::strerror(errno);
    return false;
  }
  std::ostringstream os;
  os << in.rdbuf();
  contents = os.str();
  return true;
}

std::string identity(const std::string& display) {
  try {
    return fs::absolute(fs::path(display)).lexically_normal().string();
  } catch (const std::exception&) {
    return fs::path(display).lexically_normal().string();
  }
}

Layer Context::load(const std::string* text, const std::string& display, const Loc& from,
                    const std::string& from_key,
                    std::vector<std::pair<std::string, std::string>>& stack) {
  std::string contents;
  if (++loaded_ > options_.max_files) {
    error(from, from_key, "more than " + std::to_string(options_.max_files) +
                               " manifest files; expected fewer includes");
    fatal_ = true;
    return {};
  }
  if (text) {
    contents = *text;
  } else {
    std::string err;
    bool ok = false;
    try {
      ok = options_.reader ? options_.reader(display, contents, err)
                           : read_file(display, contents, err);
    } catch (const std::exception& e) {
      err = e.what();
    }
    if (!ok) {
      error(from, from_key, "cannot read " + quoted(display) + ": " + err);
      fatal_ = true;
      return {};
    }
  }
  if (std::find(files_.begin(), files_.end(), display) == files_.end()) files_.push_back(display);

  toml::table root;
  try {
    root = toml::parse(std::string_view(contents), std::string_view(display));
  } catch (const toml::parse_error& e) {
    error(loc_of(e.source(), display), "", "invalid TOML: " + std::string(e.description()));
    fatal_ = true;
    return {};
  }

  stack.emplace_back(identity(display), display);
  Layer acc;
  for (auto&& [k, node] : root) {
    if (k.str() == "include") load_includes(node, display, loc_of(k.source(), display), stack, acc);
  }
  merge(acc, layer_from(root, display));
  stack.pop_back();
  return acc;
}

void Context::load_includes(const toml::node& node, const std::string& display,
                            const Loc& key_loc,
                            std::vector<std::pair<std::string, std::string>>& stack, Layer& acc) {
  std::vector<const toml::node*> names;
  if (node.is_string()) {
    names.push_back(&node);
  } else if (const toml::array* arr = node.as_array()) {
    for (const auto& n : *arr) names.push_back(&n);
  } else {
    Item it = item_from(node, key_loc, display);
    error(it.loc, "include",
          "expected a list of manifest file names, got " + (it.value ? got(*it.value, true) : it.bad));
    return;
  }
  for (size_t i = 0; i < names.size(); ++i) {
    const toml::node& n = *names[i];
    const Loc loc = loc_of(n.source(), display);
    const std::string key = node.is_array() ? "include." + std::to_string(i) : "include";
    if (!n.is_string() || n.as_string()->get().empty()) {
      Item it = item_from(n, key_loc, display);
      error(loc, key,
            "expected a manifest file name, got " + (it.value ? got(*it.value, true) : it.bad));
      continue;
    }
    const std::string name = n.as_string()->get();
    std::string child;
    try {
      child = (fs::path(display).parent_path() / fs::path(name)).lexically_normal().string();
    } catch (const std::exception& e) {
      error(loc, key, "cannot resolve " + quoted(name) + ": " + e.what());
      fatal_ = true;
      continue;
    }
    const std::string id = identity(child);
    auto cyc = std::find_if(stack.begin(), stack.end(), [&](const auto& s) { return s.first == id; });
    if (cyc != stack.end()) {
      std::string chain;
      for (auto it = cyc; it != stack.end(); ++it) chain += it->second + " -> ";
      error(loc, key, "include cycle: " + chain + child);
      fatal_ = true;
      continue;
    }
    if (stack.size() >= options_.max_include_depth) {
      error(loc, key, "includes nested deeper than " + std::to_string(options_.max_include_depth));
      fatal_ = true;
      continue;
    }
    merge(acc, load(nullptr, child, loc, key, stack));
  }
}

Item Context::item_from(const toml::node& node, const Loc& key_loc, const std::string& file) const {
  Item it;
  it.loc = loc_of(node.source(), file);
  if (it.loc.line == 0) it.loc = key_loc;
  it.key_loc = key_loc;
  // Converts a node, or says what it is when no parameter can hold it.
  std::function<std::optional<Value>(const toml::node&, std::string&)> convert =
      [&convert](const toml::node& n, std::string& bad) -> std::optional<Value> {
    switch (n.type()) {
      case toml::node_type::integer: return Value(n.as_integer()->get());
      case toml::node_type::floating_point: return Value(n.as_floating_point()->get());
      case toml::node_type::boolean: return Value(n.as_boolean()->get());
      case toml::node_type::string: return Value(n.as_string()->get());
      case toml::node_type::array: {
        Value::List list;
        for (const auto& e : *n.as_array()) {
          std::string inner;
          auto v = convert(e, inner);
          if (!v) {
            bad = "a list containing " + inner;
            return std::nullopt;
          }
          list.push_back(std::move(*v));
        }
        return Value(std::move(list));
      }
      case toml::node_type::table: bad = "a table"; return std::nullopt;
      case toml::node_type::date: bad = "a date"; return std::nullopt;
      case toml::node_type::time: bad = "a time"; return std::nullopt;
      case toml::node_type::date_time: bad = "a date-time"; return std::nullopt;
      default: bad = "an unsupported value"; return std::nullopt;
    }
  };
  it.value = convert(node, it.bad);
  return it;
}

Section Context::section_from(const toml::table& table, const Loc& key_loc,
                              const std::string& file) {
  Section sec;
  sec.present = true;
  sec.loc = loc_of(table.source(), file);
  if (sec.loc.line == 0) sec.loc = key_loc;
  for (auto&& [k, node] : table) sec.items[std::string(k.str())] = item_from(node, loc_of(k.source(), file), file);
  return sec;
}

Layer Context::layer_from(const toml::table& root, const std::string& file) {
  Layer layer;
  for (auto&& [k, node] : root) {
    const std::string key(k.str());
    const Loc key_loc = loc_of(k.source(), file);
    auto describe = [&](const toml::node& n) {
      Item it = item_from(n, key_loc, file);
      return std::make_pair(it.loc, it.value ? got(*it.value, true) : it.bad);
    };
    if (key == "include") continue;
    if (key == "task" || key == "architecture" || key == "optimizer" || key == "run") {
      if (const toml::table* t = node.as_table()) {
        layer.tables[key] = section_from(*t, key_loc, file);
      } else {
        auto [loc, what] = describe(node);
        error(loc, key, "expected a table ([" + key + "]), got " + what);
      }
    } else if (key == "metrics") {
      const toml::array* arr = node.as_array();
      if (!arr) {
        auto [loc, what] = describe(node);
        error(loc, key, "expected an array of tables ([[metrics]]), got " + what);
        continue;
      }
      layer.has_metrics = true;
      for (size_t i = 0; i < arr->size(); ++i) {
        const toml::node& e = *arr->get(i);
        if (const toml::table* t = e.as_table()) {
          layer.metrics.push_back(section_from(*t, loc_of(e.source(), file), file));
        } else {
          auto [loc, what] = describe(e);
          error(loc, "metrics." + std::to_string(i), "expected a table ([[metrics]]), got " + what);
          layer.metrics.emplace_back();  // keeps the indices of the others
          layer.metrics.back().present = true;
          layer.metrics.back().invalid = true;
          layer.metrics.back().loc = loc;
        }
      }
    } else if (key == "sweep") {
      if (const toml::table* t = node.as_table()) {
        sweep_from(*t, "", file, layer);
      } else {
        auto [loc, what] = describe(node);
        error(loc, key, "expected a table ([sweep]) of key paths to lists, got " + what);
      }
    } else {
      error(key_loc, key,
            "unknown table" + did_you_mean(key, kTopLevel) + "; expected one of: " + join(kTopLevel));
    }
  }
  return layer;
}

void Context::sweep_from(const toml::table& table, const std::string& prefix,
                         const std::string& file, Layer& layer) {
  for (auto&& [k, node] : table) {
    const std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    const Loc key_loc = loc_of(k.source(), file);
    const std::string key_path = "sweep." + quoted(key);
    if (const toml::table* t = node.as_table()) {
      sweep_from(*t, key, file, layer);
      continue;
    }
    Axis axis;
    axis.key_loc = key_loc;
    std::string why = parse_path(key, axis.path);
    if (!why.empty()) {
      error(key_loc, key_path, why);
      continue;
    }
    const toml::array* arr = node.as_array();
    if (!arr || arr->empty()) {
      Item it = item_from(node, key_loc, file);
      error(it.loc, key_path,
            "expected a non-empty list of values, got " + (it.value ? got(*it.value, true) : it.bad));
      continue;
    }
    for (const auto& e : *arr) axis.values.push_back(item_from(e, key_loc, file));
    layer.sweep[axis.path.str()] = std::move(axis);
  }
}

std::string Context::parse_path(const std::string& text, Path& out) const {
  std::vector<std::string> seg;
  size_t start = 0;
  for (;;) {
    size_t dot = text.find('.', start);
    seg.push_back(text.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  const std::string expected =
      "expected task.<key>, architecture.<key>, optimizer.<key>, run.<key> or "
      "metrics.<index>.<key>";
  for (const auto& s : seg)
    if (s.empty()) return "not a key path; " + expected;
  const std::string& t = seg[0];
  if (t == "task" || t == "architecture" || t == "optimizer" || t == "run") {
    if (seg.size() != 2) return "not a key path; expected " + t + ".<key>";
    out = Path{t, 0, seg[1]};
    return "";
  }
  if (t == "metrics") {
    bool digits = seg.size() == 3 && seg[1].size() <= 6 &&
                  std::all_of(seg[1].begin(), seg[1].end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits) return "not a key path; expected metrics.<index>.<key>";
    out = Path{t, static_cast<size_t>(std::stoul(seg[1])), seg[2]};
    return "";
  }
  return "unknown table " + quoted(t) + did_you_mean(t, kPathTables) + "; " + expected;
}

std::optional<Value> Context::parse_value(const std::string& text, std::string& bad,
                                          std::string& err) const {
  if (text.find_first_of("\r\n") != std::string::npos) {
    err = "a command-line value cannot contain a line break";
    return std::nullopt;
  }
  try {
    toml::table t = toml::parse("v = " + text, std::string_view(kCommandLine));
    const toml::node* n = t.get("v");
    if (t.size() == 1 && n) {
      Item it = item_from(*n, Loc{}, kCommandLine);
      bad = it.bad;
      return it.value;
    }
  } catch (const toml::parse_error& e) {
    if (!text.empty() && std::string("[{\"'").find(text[0]) != std::string::npos) {
      err = "invalid TOML value: " + std::string(e.description());
      return std::nullopt;
    }
  }
  if (!valid_utf8(text)) {
    err = "the value is not valid UTF-8";
    return std::nullopt;
  }
  return Value(text);  // a bare word is a string
}

void Context::parse_overrides(const std::vector<std::string>& args, std::vector<Setting>& settings,
                              std::vector<Axis>& axes) {
  for (size_t a = 0; a < args.size(); ++a) {
    const std::string& arg = args[a];
    const int pos = static_cast<int>(a + 1);
    const Loc key_loc{kCommandLine, pos, 1};
    const size_t eq = arg.find('=');
    if (eq == std::string::npos) {
      error(key_loc, "", "expected key=value (e.g. architecture.depth=4), got " + quoted(short_text(arg)));
      continue;
    }
    const std::string key = arg.substr(0, eq);
    Path path;
    std::string why = parse_path(key, path);
    if (!why.empty()) {
      error(key_loc, short_text(key), why);
      continue;
    }
    // Split the value at commas outside brackets, braces and quotes: a sweep.
    std::vector<std::pair<size_t, std::string>> parts;  // offset in arg, text
    size_t begin = eq + 1;
    int depth = 0;
    char quote = 0;
    for (size_t i = eq + 1; i <= arg.size(); ++i) {
      if (i == arg.size() || (arg[i] == ',' && depth == 0 && quote == 0)) {
        parts.emplace_back(begin, arg.substr(begin, i - begin));
        begin = i + 1;
        continue;
      }
      char c = arg[i];
      if (quote) {
        if (c == '\\' && quote == '"' && i + 1 < arg.size()) ++i;  // not past the end: the last part stays
        else if (c == quote) quote = 0;
      } else if (c == '"' || c == '\'') {
        quote = c;
      } else if (c == '[' || c == '{') {
        ++depth;
      } else if ((c == ']' || c == '}') && depth > 0) {
        --depth;
      }
    }
    Axis axis{path, key_loc, {}};
    bool ok = true;
    for (auto& [offset, text] : parts) {
      // Spaces around sweep values are not part of them.
      size_t lead = 0;
      if (parts.size() > 1) {
        while (lead < text.size() && (text[lead] == ' ' || text[lead] == '\t')) ++lead;
        size_t end = text.size();
        while (end > lead && (text[end - 1] == ' ' || text[end - 1] == '\t')) --end;
        text = text.substr(lead, end - lead);
      }
      const Loc loc{kCommandLine, pos, static_cast<int>(offset + lead + 1)};
      if (parts.size() > 1 && text.empty()) {
        error(loc, path.str(), "empty value in a sweep list; expected values separated by commas");
        ok = false;
        continue;
      }
      std::string err;
      Item it;
      it.loc = loc;
      it.key_loc = key_loc;
      it.value = parse_value(text, it.bad, err);
      if (!err.empty()) {
        error(loc, path.str(), err);
        ok = false;
        continue;
      }
      axis.values.push_back(std::move(it));
    }
    if (!ok) continue;
    if (axis.values.size() == 1) settings.push_back(Setting{path, axis.values.front()});
    else axes.push_back(std::move(axis));
  }
}

Section* Context::target(Layer& layer, const Path& path, const Loc& loc) {
  if (path.table != "metrics") {
    Section& sec = layer.tables[path.table];
    if (!sec.present) {
      sec.present = true;
      sec.loc = loc;
    }
    return &sec;
  }
  const size_t n = layer.metrics.size();
  if (path.index < n) return &layer.metrics[path.index];
  if (path.index == n) {  // appends a metric
    layer.has_metrics = true;
    layer.metrics.emplace_back();
    layer.metrics.back().present = true;
    layer.metrics.back().loc = loc;
    return &layer.metrics.back();
  }
  error(loc, path.str(),
        "there " + std::string(n == 1 ? "is 1 metric" : "are " + std::to_string(n) + " metrics") +
            "; expected an index in [0, " + std::to_string(n) + "] (" + std::to_string(n) +
            " adds one)");
  return nullptr;
}

void Context::apply(Layer& layer, const std::vector<Setting>& settings) {
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& s : settings) {
      const bool is_plugin = s.path.key == "plugin";
      if (is_plugin != (pass == 0)) continue;
      Section* sec = target(layer, s.path, s.item.key_loc);
      if (!sec) continue;
      if (is_plugin) {
        auto it = sec->items.find("plugin");
        if (it != sec->items.end() && it->second.value && s.item.value &&
            *it->second.value != *s.item.value)
          sec->items.clear();  // another plugin: its parameters start afresh
      }
      sec->items[s.path.key] = s.item;
    }
  }
}

// The value a component is built from: an int for a float parameter becomes a
// float, -0.0 becomes 0.0, ints in a list of floats become floats.
Value normalise(const ParamSpec& spec, const Value& v) {
  auto fix = [](const Value& x, bool to_float) -> Value {
    if (x.is_float() && x.as_float() == 0.0) return Value(0.0);
    if (to_float && x.is_int()) return Value(static_cast<double>(x.as_int()));
    return x;
  };
  if (spec.type == ParamType::List) {
    Value::List out;
    for (const auto& e : v.as_list())
      out.push_back(fix(e, spec.element && *spec.element == ParamType::Float));
    return Value(std::move(out));
  }
  return fix(v, spec.type == ParamType::Float);
}

// What a missing value should be, in Schema::check's words.
std::string expected_for(const ParamSpec& spec) {
  if (!spec.choices.empty()) {
    std::string s = "one of ";
    for (size_t i = 0; i < spec.choices.size(); ++i) s += (i ? ", " : "") + spec.choices[i].canonical();
    return s;
  }
  // A value of another type makes check() describe the type and range.
  return Schema::check(spec, spec.type == ParamType::Bool ? Value(std::string()) : Value(true));
}

Params Context::check_params(const Schema& schema, const Section& sec, const std::string& prefix,
                             const std::string& owner, const Loc& missing_loc, bool has_plugin) {
  std::vector<std::string> names;
  for (const auto& p : schema.params()) names.push_back(p.name);
  std::sort(names.begin(), names.end());
  for (const auto& [k, it] : sec.items) {
    if (has_plugin && k == "plugin") continue;
    if (schema.find(k)) continue;
    std::string msg = "unknown parameter of " + owner;
    if (names.empty()) msg += "; it has no parameters";
    else msg += did_you_mean(k, names) + "; expected one of: " + join(names);
    error(it.key_loc, prefix + "." + k, msg);
  }
  std::map<std::string, Value> values;
  for (const auto& spec : schema.params()) {
    const std::string path = prefix + "." + spec.name;
    auto it = sec.items.find(spec.name);
    if (it == sec.items.end()) {
      if (spec.default_value) values[spec.name] = normalise(spec, *spec.default_value);
      else error(missing_loc, path, "missing required value; expected " + expected_for(spec));
      continue;
    }
    const Item& item = it->second;
    if (!item.value) {
      error(item.loc, path, "expected " + expected_for(spec) + ", got " + item.bad);
      continue;
    }
    std::string why = Schema::check(spec, *item.value);
    if (!why.empty()) {
      bool type_ok = item.value->type() == spec.type ||
                     (spec.type == ParamType::Float && item.value->is_int());
      error(item.loc, path, "expected " + why + ", got " + got(*item.value, !type_ok));
      continue;
    }
    values[spec.name] = normalise(spec, *item.value);
  }
  return Params(std::move(values));
}

std::optional<ComponentConfig> Context::component(Kind kind, const Section* sec,
                                                  const std::string& prefix) {
  const std::string kind_name = to_string(kind);
  const std::vector<std::string> names = registry_.names(kind);
  if (sec && sec->invalid) return std::nullopt;
  if (!sec || !sec->present) {
    error(main_loc_, prefix,
          "missing table; expected [" + prefix + "] with plugin = one of: " + join(names));
    return std::nullopt;
  }
  auto pit = sec->items.find("plugin");
  if (pit == sec->items.end()) {
    error(sec->loc, prefix + ".plugin",
          "missing; expected the name of " + with_article(kind_name) + " plugin, one of: " + join(names));
    return std::nullopt;
  }
  const Item& p = pit->second;
  if (!p.value || !p.value->is_string()) {
    error(p.loc, prefix + ".plugin",
          "expected a string naming " + with_article(kind_name) + " plugin, got " +
              (p.value ? got(*p.value, true) : p.bad));
    return std::nullopt;
  }
  const std::string& name = p.value->as_string();
  const Component* comp = registry_.find(kind, name);
  if (!comp) {
    std::string hint = did_you_mean(name, names);
    for (const Component* other : registry_.find_all(name))
      hint += " (" + name + " is " + with_article(to_string(other->kind)) + ")";
    error(p.loc, prefix + ".plugin",
          "unknown " + kind_name + " plugin " + quoted(short_text(name)) + hint +
              "; expected one of: " + join(names));
    return std::nullopt;
  }
  ComponentConfig c;
  c.plugin = name;
  c.params = check_params(comp->schema, *sec, prefix, kind_name + " " + quoted(name), p.loc, true);
  return c;
}

// "cpu", "cuda" or "cuda:N".
bool valid_device(const std::string& d) {
  if (d == "cpu" || d == "cuda") return true;
  if (d.rfind("cuda:", 0) != 0 || d.size() == 5 || d.size() > 8) return false;
  return std::all_of(d.begin() + 5, d.end(), [](char c) { return c >= '0' && c <= '9'; });
}

ResolvedConfig Context::resolve(const Layer& layer) {
  ResolvedConfig cfg;
  auto table = [&](const char* name) -> const Section* {
    auto it = layer.tables.find(name);
    return it == layer.tables.end() ? nullptr : &it->second;
  };
  if (auto c = component(Kind::Task, table("task"), "task")) cfg.task = std::move(*c);
  if (auto c = component(Kind::Architecture, table("architecture"), "architecture"))
    cfg.architecture = std::move(*c);
  if (auto c = component(Kind::Optimizer, table("optimizer"), "optimizer")) cfg.optimizer = std::move(*c);
  for (size_t i = 0; i < layer.metrics.size(); ++i) {
    if (auto c = component(Kind::Metric, &layer.metrics[i], "metrics." + std::to_string(i)))
      cfg.metrics.push_back(std::move(*c));
  }
  const Section* run = table("run");
  Params rp = check_params(run_schema(), run ? *run : Section{}, "run", "[run]",
                           run && run->present ? run->loc : main_loc_, false);
  if (rp.values().size() == run_schema().params().size()) {
    cfg.run.seed = static_cast<uint64_t>(rp.get_int("seed"));
    cfg.run.steps = rp.get_int("steps");
    cfg.run.batch_size = rp.get_int("batch_size");
    cfg.run.eval_every = rp.get_int("eval_every");
    cfg.run.checkpoint_every = rp.get_int("checkpoint_every");
    cfg.run.threads = rp.get_int("threads");
    cfg.run.device = rp.get_string("device");
    cfg.run.seed_streams = rp.get_string("seed_streams");
    cfg.run.stop_metric = rp.get_string("stop_metric");
    cfg.run.stop_threshold = rp.get_float("stop_threshold");
    cfg.run.loss_dtype = rp.get_string("loss_dtype");
    cfg.run.ensemble = rp.get_int("ensemble");
  }
  if (rp.has("device") && !valid_device(rp.get_string("device"))) {
    const Item* item = nullptr;
    if (run) {
      auto it = run->items.find("device");
      if (it != run->items.end()) item = &it->second;
    }
    error(item ? item->loc : main_loc_, "run.device",
          std::string("expected \"cpu\", \"cuda\" or \"cuda:N\" (N a device index), got ") +
              groklab::quoted(rp.get_string("device")));
  }
  return cfg;
}

}  // namespace

Composer::Composer(const Registry& registry, ComposerOptions options)
    : registry_(registry), options_(std::move(options)) {}

std::vector<SweepChild> Composer::run(const std::string* text, const std::string& path,
                                      const std::vector<std::string>& overrides,
                                      bool single) const {
  Context ctx(registry_, options_);
  Layer base = ctx.load_main(text, path);
  std::vector<Setting> settings;
  std::vector<Axis> cli_axes;
  ctx.parse_overrides(overrides, settings, cli_axes);
  if (ctx.fatal()) ctx.throw_errors();

  for (const auto& s : settings) base.sweep.erase(s.path.str());  // an override fixes a swept key
  for (auto& a : cli_axes) base.sweep[a.path.str()] = std::move(a);

  std::vector<const Axis*> axes;
  for (const auto& [k, a] : base.sweep) axes.push_back(&a);
  const Loc sweep_loc = axes.empty() ? ctx.main_loc() : axes.front()->key_loc;
  size_t count = 1;
  bool too_many = false;
  const size_t max_children = std::max<size_t>(1, options_.max_sweep_children);
  for (const Axis* a : axes) {
    if (a->values.size() > max_children / count) too_many = true;
    else count *= a->values.size();
  }
  if (too_many) {
    ctx.error(sweep_loc, "sweep",
              "the sweep expands to more than " + std::to_string(max_children) +
                  " configurations; expected at most " + std::to_string(max_children));
    ctx.throw_errors();
  }
  if (single && count > 1) {
    ctx.error(sweep_loc, "sweep",
              "the sweep expands to " + std::to_string(count) +
                  " configurations; expected a single one (expand the sweep: groklab compose --sweep)");
    ctx.throw_errors();
  }

  std::vector<SweepChild> children;
  children.reserve(count);
  std::map<std::string, size_t> by_hash;
  for (size_t i = 0; i < count; ++i) {
    std::vector<Setting> chosen;
    size_t rest = i;
    for (size_t a = axes.size(); a-- > 0;) {  // the last axis varies fastest
      const auto& values = axes[a]->values;
      chosen.push_back(Setting{axes[a]->path, values[rest % values.size()]});
      rest /= values.size();
    }
    std::reverse(chosen.begin(), chosen.end());
    // Overrides and the child's values apply together: every `plugin` first.
    std::vector<Setting> all = settings;
    all.insert(all.end(), chosen.begin(), chosen.end());
    Layer layer = base;
    ctx.apply(layer, all);
    SweepChild child;
    child.config = ctx.resolve(layer);
    if (ctx.failed()) continue;  // keep collecting errors; children are not returned
    for (const auto& s : chosen) {
      auto v = child.config.get(s.path.str());
      child.varied.emplace_back(s.path.str(), v ? *v : *s.item.value);
    }
    auto [it, fresh] = by_hash.emplace(child.config.hash(), i);
    if (!fresh)
      ctx.error(sweep_loc, "sweep",
                "children " + std::to_string(it->second) + " and " + std::to_string(i) +
                    " resolve to the same configuration; expected distinct values");
    children.push_back(std::move(child));
  }
  if (ctx.failed()) ctx.throw_errors();
  return children;
}

ResolvedConfig Composer::compose(const std::string& path,
                                 const std::vector<std::string>& overrides) const {
  return std::move(run(nullptr, path, overrides, true).front().config);
}

ResolvedConfig Composer::compose_string(const std::string& toml_text, const std::string& source_name,
                                        const std::vector<std::string>& overrides) const {
  return std::move(run(&toml_text, source_name, overrides, true).front().config);
}

std::vector<SweepChild> Composer::expand(const std::string& path,
                                         const std::vector<std::string>& overrides) const {
  return run(nullptr, path, overrides, false);
}

std::vector<SweepChild> Composer::expand_string(const std::string& toml_text,
                                                const std::string& source_name,
                                                const std::vector<std::string>& overrides) const {
  return run(&toml_text, source_name, overrides, false);
}

}  // namespace groklab

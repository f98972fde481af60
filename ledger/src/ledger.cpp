#include "groklab/ledger/ledger.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <unordered_set>

#include "entry_check.h"
#include "fs.h"

namespace groklab::ledger {
namespace {

using detail::Fd;
using detail::SysError;
using nlohmann::json;

constexpr const char* kEntriesFile = "entries.jsonl";
constexpr const char* kLockFile = "lock";

// The end of entries.jsonl, read backwards.
struct Tail {
  off_t size = 0;          // file size
  off_t complete_end = 0;  // offset just past the last '\n' (== size unless torn)
  bool has_last = false;   // there is at least one complete line
  off_t last_start = 0;    // offset of the last complete line
  std::string last_line;   // that line, without '\n'
};

Tail read_tail(int fd, const std::string& path) {
  Tail t;
  t.size = detail::file_size(fd, path);
  if (t.size == 0) return t;
  off_t window = std::min<off_t>(t.size, 4096);  // doubled until two newlines are in it
  for (;;) {
    const off_t start = t.size - window;
    std::string buf = detail::pread_exact(fd, start, static_cast<std::size_t>(window), path);
    auto last_nl = buf.rfind('\n');
    if (last_nl == std::string::npos) {
      if (start == 0) return t;  // no complete line at all
      window = std::min<off_t>(t.size, window * 2);
      continue;
    }
    auto prev_nl = last_nl == 0 ? std::string::npos : buf.rfind('\n', last_nl - 1);
    if (prev_nl == std::string::npos && start > 0) {
      window = std::min<off_t>(t.size, window * 2);
      continue;
    }
    const std::size_t line_start = prev_nl == std::string::npos ? 0 : prev_nl + 1;
    t.complete_end = start + static_cast<off_t>(last_nl) + 1;
    t.has_last = true;
    t.last_start = start + static_cast<off_t>(line_start);
    t.last_line = buf.substr(line_start, last_nl - line_start);
    return t;
  }
}

// 1-based line number of the line starting at OFFSET (counts newlines before it).
std::size_t line_number_at(int fd, off_t offset, const std::string& path) {
  detail::LineReader reader(fd, offset, path);
  std::string_view line;
  bool complete = false;
  std::size_t n = 0;
  while (reader.next(line, complete)) ++n;
  return n + 1;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Throws LedgerError unless PREFIX is 4 to 32 hex digits (after lowercasing).
std::string normalise_prefix(const std::string& dir, const std::string& prefix) {
  std::string p = lower(prefix);
  bool hex = std::all_of(p.begin(), p.end(),
                         [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  if (!hex || p.size() > 32)
    throw LedgerError("ledger " + dir + ": '" + prefix + "' is not an entry id (want 4 to 32 hex digits, or HEAD)");
  if (p.size() < 4)
    throw LedgerError("ledger " + dir + ": entry id prefix '" + prefix + "' is too short (need at least 4 hex digits)");
  return p;
}

}  // namespace

std::string VerifyResult::summary() const {
  if (ok) {
    std::string s = "ok: " + std::to_string(entries) + " entries, " + std::to_string(objects) +
                    " objects, head " + (head.empty() ? std::string("(none: empty ledger)") : head);
    if (!extends.empty())
      s += "; extends " + extends + " (line " + std::to_string(extends_line) + ")";
    return s;
  }
  if (!problem) return "not ok";
  std::string s;
  if (problem->line > 0) {
    s = "line " + std::to_string(problem->line);
    if (!problem->id.empty()) s += " (entry " + problem->id + ")";
    s += ": ";
  }
  return s + problem->message;
}

Ledger::Ledger(std::string dir, LedgerOptions options)
    : dir_(std::move(dir)), options_(std::move(options)), objects_(dir_) {}

static std::string strip_trailing_slashes(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty()) dir = ".";
  return dir;
}

Ledger Ledger::open(const std::string& dir_in, LedgerOptions options) {
  std::string dir = strip_trailing_slashes(dir_in);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw LedgerError("ledger " + dir + ": no such directory", ENOENT);
  const std::string entries = dir + "/" + kEntriesFile;
  if (::stat(entries.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    throw LedgerError("ledger " + dir + ": not a ledger (no " + kEntriesFile + " in it)", ENOENT);
  return Ledger(dir, std::move(options));
}

Ledger Ledger::create(const std::string& dir_in, LedgerOptions options) {
  std::string dir = strip_trailing_slashes(dir_in);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    throw LedgerError("ledger " + dir + ": " + describe_errno(ec.value()) + " while creating the directory",
                      ec.value());
  const std::string entries = dir + "/" + kEntriesFile;
  int fd = ::open(entries.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd >= 0) {
    Fd owned(fd);
    try {
      detail::fsync_fd(owned.get(), entries);
      detail::fsync_dir(dir);
    } catch (const SysError& e) {
      throw LedgerError("ledger " + dir + ": " + describe_errno(e.err) + " while creating it (" + e.what + ")",
                        e.err);
    }
  } else if (errno != EEXIST) {
    int err = errno;
    throw LedgerError("ledger " + dir + ": " + describe_errno(err) + " while creating " + entries, err);
  }
  return open(dir, std::move(options));
}

std::string Ledger::entries_path() const { return dir_ + "/" + kEntriesFile; }

void Ledger::warn(const std::string& message) const {
  if (options_.warn) {
    options_.warn(message);
  } else {
    std::fprintf(stderr, "groklab ledger: warning: %s\n", message.c_str());
  }
}

// Under the exclusive lock: copies a torn tail to entries.torn-<time>-<pid>,
// truncates entries.jsonl to its last complete line, and warns. Returns the copy's path.
static std::string keep_torn_aside(const std::string& dir, int fd, Tail& t, const std::string& entries,
                                   std::string& created) {
  const std::size_t torn_size = static_cast<std::size_t>(t.size - t.complete_end);
  std::string torn = detail::pread_exact(fd, t.complete_end, torn_size, entries);
  const std::string base = dir + "/entries.torn-" + std::to_string(static_cast<long long>(std::time(nullptr))) +
                           "-" + std::to_string(static_cast<long>(::getpid()));
  Fd out;
  std::string path;
  for (int k = 0;; ++k) {
    path = k == 0 ? base : base + "-" + std::to_string(k);
    int ofd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (ofd >= 0) {
      out = Fd(ofd);
      break;
    }
    if (errno != EEXIST) throw SysError{errno, "create " + path};
  }
  created = path;  // removed by the caller if anything below fails
  detail::write_all(out.get(), torn.data(), torn.size(), path);
  detail::fsync_fd(out.get(), path);
  out.reset();
  detail::fsync_dir(dir);
  created.clear();  // the copy is durable: keep it whatever happens next
  while (::ftruncate(fd, t.complete_end) != 0) {
    if (errno != EINTR) throw SysError{errno, "truncate " + entries};
  }
  detail::fsync_fd(fd, entries);
  t.size = t.complete_end;
  return path;
}

// Under the lock: returns the id of the last complete line after checking it,
// or throws LedgerError if it is damaged (nothing is chained onto a bad entry).
static std::string checked_head(const std::string& dir, int fd, const Tail& t, const std::string& entries) {
  if (!t.has_last) return "";
  json entry;
  std::string claimed;
  if (auto problem = detail::check_line(t.last_line, entry, claimed)) {
    std::size_t line = line_number_at(fd, t.last_start, entries);
    throw LedgerError("ledger " + dir + ": the last entry (line " + std::to_string(line) +
                      (claimed.empty() ? "" : ", entry " + claimed) + ") is damaged: " + *problem +
                      "; refusing to append onto it (verify the ledger)");
  }
  return claimed;
}

std::string Ledger::append(const json& body) {
  if (!body.is_object()) throw std::invalid_argument("ledger entry: the body must be a JSON object");
  if (body.contains("id") || body.contains("prev"))
    throw std::invalid_argument("ledger entry: the body must not contain \"id\" or \"prev\"; append() sets them");
  std::vector<std::pair<std::string, std::string>> listed;
  if (auto bad = detail::listed_objects(body, listed)) throw std::invalid_argument("ledger entry: " + *bad);
  for (const auto& [name, hash] : listed) {
    if (!objects_.exists(hash))
      throw std::invalid_argument("ledger entry: object " + hash + " (" + name +
                                  ") listed in \"objects\" is not in the store; put() it first");
  }
  // Serialise the body once, before taking the lock (this also rejects NaN,
  // binary values and bad UTF-8); under the lock only "prev" and "id" change.
  detail::CanonicalMembers members = detail::canonical_members(body);

  const std::string entries = entries_path();
  const char* stage = "appending an entry";
  std::string consequence = "the ledger is unchanged";
  std::string torn_copy;  // a partial torn copy to remove on failure
  std::string notice;     // a warning, given once the lock is released
  std::string id;
  try {
    detail::LockGuard lock(dir_ + "/" + kLockFile, /*exclusive=*/true, /*best_effort=*/false);
    Fd fd = detail::open_file(entries, O_RDWR);
    Tail t = read_tail(fd.get(), entries);
    if (t.complete_end < t.size) {
      stage = "keeping aside a torn last line";
      const off_t torn_bytes = t.size - t.complete_end;
      std::string kept = keep_torn_aside(dir_, fd.get(), t, entries, torn_copy);
      stage = "appending an entry";
      notice = "ledger " + dir_ + ": " + kEntriesFile + " ended in an incomplete line (" +
               std::to_string(static_cast<long long>(torn_bytes)) +
               " bytes: a write torn by a crash); moved it to " + kept +
               " and appended after the last complete entry";
    }
    members.set_string("prev", checked_head(dir_, fd.get(), t, entries));
    id = hash_bytes(members.join());
    std::string line = members.join_with("id", id);
    line += '\n';
    try {
      detail::pwrite_all(fd.get(), line.data(), line.size(), t.size, entries);
      detail::fsync_fd(fd.get(), entries);
    } catch (const SysError&) {
      // Take back whatever part of the line reached the file.
      int rc;
      do {
        rc = ::ftruncate(fd.get(), t.size);
      } while (rc != 0 && errno == EINTR);
      if (rc != 0 || ::fsync(fd.get()) != 0)
        consequence = "the ledger may now end in a torn line, which the next append moves aside";
      throw;
    }
  } catch (const SysError& e) {
    if (!torn_copy.empty()) ::unlink(torn_copy.c_str());
    if (!notice.empty()) warn(notice);
    throw LedgerError("ledger " + dir_ + ": " + describe_errno(e.err) + " while " + stage + " (" + e.what +
                          "); " + consequence,
                      e.err);
  } catch (const LedgerError&) {
    if (!notice.empty()) warn(notice);
    throw;
  }
  if (!notice.empty()) warn(notice);  // outside the lock: the sink may use the ledger
  return id;
}

std::optional<std::string> Ledger::repair() {
  const std::string entries = entries_path();
  std::string torn_copy;
  std::string kept;
  off_t torn_bytes = 0;
  try {
    detail::LockGuard lock(dir_ + "/" + kLockFile, true, false);
    Fd fd = detail::open_file(entries, O_RDWR);
    Tail t = read_tail(fd.get(), entries);
    if (t.complete_end == t.size) return std::nullopt;
    torn_bytes = t.size - t.complete_end;
    kept = keep_torn_aside(dir_, fd.get(), t, entries, torn_copy);
  } catch (const SysError& e) {
    if (!torn_copy.empty()) ::unlink(torn_copy.c_str());
    throw LedgerError("ledger " + dir_ + ": " + describe_errno(e.err) + " while keeping aside a torn last line (" +
                          e.what + "); the ledger is unchanged",
                      e.err);
  }
  warn("ledger " + dir_ + ": " + kEntriesFile + " ended in an incomplete line (" +
       std::to_string(static_cast<long long>(torn_bytes)) + " bytes: a write torn by a crash); moved it to " +
       kept);
  return kept;
}

// Opens entries.jsonl for reading and returns the size to read up to, taken
// under a shared lock so no append is half-way through it.
static off_t snapshot(const std::string& dir, Fd& fd, const std::string& entries) {
  try {
    fd = detail::open_file(entries, O_RDONLY);
    detail::LockGuard lock(dir + "/" + kLockFile, /*exclusive=*/false, /*best_effort=*/true);
    return detail::file_size(fd.get(), entries);
  } catch (const SysError& e) {
    throw LedgerError("ledger " + dir + ": " + describe_errno(e.err) + " while reading (" + e.what + ")", e.err);
  }
}

std::string Ledger::head() const {
  const std::string entries = entries_path();
  try {
    Fd fd = detail::open_file(entries, O_RDONLY);
    Tail t = read_tail(fd.get(), entries);
    if (!t.has_last) return "";
    json entry;
    std::string claimed;
    if (auto problem = detail::check_line(t.last_line, entry, claimed))
      throw LedgerError("ledger " + dir_ + ": the last entry (line " +
                        std::to_string(line_number_at(fd.get(), t.last_start, entries)) + ") is damaged: " +
                        *problem);
    return claimed;
  } catch (const SysError& e) {
    throw LedgerError("ledger " + dir_ + ": " + describe_errno(e.err) + " while reading (" + e.what + ")", e.err);
  }
}

// Parses a line into an Entry without checking its hash (verify does that).
static Entry parse_entry(const std::string& dir, std::string_view line, std::size_t line_no) {
  Entry e;
  e.line = line_no;
  try {
    e.json = json::parse(line.begin(), line.end());
  } catch (const json::exception&) {
    throw LedgerError("ledger " + dir + ": line " + std::to_string(line_no) +
                      " of entries.jsonl is not valid JSON (verify reports the details)");
  }
  auto id = e.json.find("id");
  auto prev = e.json.find("prev");
  if (!e.json.is_object() || id == e.json.end() || !id->is_string() || prev == e.json.end() || !prev->is_string())
    throw LedgerError("ledger " + dir + ": line " + std::to_string(line_no) +
                      " of entries.jsonl is not a ledger entry (verify reports the details)");
  e.id = id->get<std::string>();
  e.prev = prev->get<std::string>();
  return e;
}

void Ledger::for_each_entry(const std::function<bool(const Entry&)>& fn) const {
  const std::string entries = entries_path();
  Fd fd;
  const off_t limit = snapshot(dir_, fd, entries);
  try {
    detail::LineReader reader(fd.get(), limit, entries);
    std::string_view line;
    bool complete = false;
    while (reader.next(line, complete)) {
      if (!complete) {
        warn("ledger " + dir_ + ": skipping an incomplete last line (" + std::to_string(line.size()) +
             " bytes: a write torn by a crash); the next append moves it aside");
        break;
      }
      if (!fn(parse_entry(dir_, line, reader.line_number()))) break;
    }
  } catch (const SysError& e) {
    throw LedgerError("ledger " + dir_ + ": " + describe_errno(e.err) + " while reading (" + e.what + ")", e.err);
  }
}

std::vector<Entry> Ledger::entries() const {
  std::vector<Entry> out;
  for_each_entry([&out](const Entry& e) {
    out.push_back(e);
    return true;
  });
  return out;
}

// The entries whose id starts with PREFIX (already normalised).
static std::vector<Entry> find_by_prefix(const std::string& dir, const std::string& entries,
                                         const std::string& prefix) {
  Fd fd;
  const off_t limit = snapshot(dir, fd, entries);
  std::vector<Entry> found;
  const std::string needle = "\"id\":\"" + prefix;
  try {
    detail::LineReader reader(fd.get(), limit, entries);
    std::string_view line;
    bool complete = false;
    while (reader.next(line, complete) && complete) {
      if (line.find(needle) == std::string_view::npos) continue;  // cheap filter before parsing
      Entry e = parse_entry(dir, line, reader.line_number());
      if (e.id.compare(0, prefix.size(), prefix) == 0) found.push_back(std::move(e));
    }
  } catch (const SysError& e) {
    throw LedgerError("ledger " + dir + ": " + describe_errno(e.err) + " while reading (" + e.what + ")", e.err);
  }
  return found;
}

Entry Ledger::get(const std::string& id_or_prefix) const {
  if (id_or_prefix == "HEAD" || id_or_prefix == "head") {
    std::string h = head();
    if (h.empty()) throw LedgerError("ledger " + dir_ + ": HEAD: the ledger is empty");
    return get(h);
  }
  const std::string prefix = normalise_prefix(dir_, id_or_prefix);
  std::vector<Entry> found = find_by_prefix(dir_, entries_path(), prefix);
  if (found.empty()) throw LedgerError("ledger " + dir_ + ": no entry id starts with '" + prefix + "'");
  if (found.size() > 1) {
    std::string msg = "ledger " + dir_ + ": entry id prefix '" + prefix + "' is ambiguous; it matches " +
                      std::to_string(found.size()) + " entries:";
    const std::size_t shown = std::min<std::size_t>(found.size(), 10);
    for (std::size_t i = 0; i < shown; ++i) {
      const Entry& e = found[i];
      msg += "\n  " + e.id + " (line " + std::to_string(e.line);
      auto kind = e.json.find("kind");
      if (kind != e.json.end() && kind->is_string()) msg += ", " + kind->get<std::string>();
      msg += ")";
    }
    if (found.size() > shown) msg += "\n  ... and " + std::to_string(found.size() - shown) + " more";
    throw LedgerError(msg);
  }
  return std::move(found.front());
}

std::string Ledger::resolve(const std::string& prefix) const { return get(prefix).id; }

VerifyResult Ledger::verify(const std::string& earlier_head) const {
  VerifyResult r;
  auto fail = [&r](std::size_t line, std::string id, std::string message) {
    r.ok = false;
    r.problem = VerifyProblem{line, std::move(id), std::move(message)};
    return r;
  };
  std::string want;
  if (!earlier_head.empty()) {
    try {
      want = normalise_prefix(dir_, earlier_head);
    } catch (const LedgerError& e) {
      return fail(0, "", std::string("earlier head: ") + e.what());
    }
  }
  std::vector<std::pair<std::string, std::size_t>> head_matches;

  const std::string entries = entries_path();
  Fd fd;
  const off_t limit = snapshot(dir_, fd, entries);
  std::unordered_set<std::string> good_objects;
  std::vector<std::pair<std::string, std::string>> listed;
  std::string prev_id;
  try {
    detail::LineReader reader(fd.get(), limit, entries);
    std::string_view line;
    bool complete = false;
    json entry;
    std::string claimed;
    while (reader.next(line, complete)) {
      const std::size_t n = reader.line_number();
      if (!complete) {
        detail::check_line(line, entry, claimed);
        return fail(n, claimed,
                    "incomplete last line (" + std::to_string(line.size()) +
                        " bytes, no trailing newline): a write torn by a crash, or a damaged final "
                        "byte; the next append (or repair) moves it aside");
      }
      if (auto problem = detail::check_line(line, entry, claimed)) return fail(n, claimed, *problem);
      const auto& prev = entry["prev"].get_ref<const std::string&>();
      if (prev != prev_id) {
        if (n == 1)
          return fail(n, claimed, "the first entry has prev " + prev +
                                      " but must have an empty prev: entries before it were removed");
        return fail(n, claimed,
                    "prev is " + (prev.empty() ? std::string("empty") : prev) + " but line " +
                        std::to_string(n - 1) + " is entry " + prev_id +
                        ": the chain is broken (an entry was removed, inserted or reordered)");
      }
      if (auto bad = detail::listed_objects(entry, listed)) return fail(n, claimed, *bad);
      for (const auto& [name, hash] : listed) {
        if (good_objects.count(hash)) continue;
        if (auto problem = objects_.check(hash))
          return fail(n, claimed, "references object " + hash + " (" + name + "), which is " + *problem);
        good_objects.insert(hash);
      }
      ++r.entries;
      r.objects = good_objects.size();
      r.head = claimed;
      prev_id = claimed;
      if (!want.empty() && claimed.compare(0, want.size(), want) == 0) head_matches.emplace_back(claimed, n);
    }
  } catch (const SysError& e) {
    throw LedgerError("ledger " + dir_ + ": " + describe_errno(e.err) + " while reading (" + e.what + ")", e.err);
  }
  if (!want.empty()) {
    if (head_matches.empty())
      return fail(0, "", "the earlier head " + want + " is not on the chain (" + std::to_string(r.entries) +
                             " entries checked): the history it pinned was rewritten, or this is another ledger");
    if (head_matches.size() > 1) {
      std::string msg = "the earlier head prefix " + want + " is ambiguous; it matches";
      for (const auto& [id, line] : head_matches) msg += " " + id + " (line " + std::to_string(line) + ")";
      return fail(0, "", msg);
    }
    r.extends = head_matches.front().first;
    r.extends_line = head_matches.front().second;
  }
  r.ok = true;
  return r;
}

std::string utc_timestamp() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm {};
  ::gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06ldZ", static_cast<long>(ts.tv_nsec / 1000));
  return buf;
}

}  // namespace groklab::ledger

// The ledger: an append-only, hash-chained file of JSON entries plus an object
// store. Layout of a ledger directory LEDGER:
//   LEDGER/entries.jsonl          one canonical JSON object per line, never rewritten
//   LEDGER/objects/ab/cdef…       content-addressed objects (see object_store.h)
//   LEDGER/lock                   fcntl record lock taken by appenders
//   LEDGER/entries.torn-T-PID     torn last lines moved aside (kept for inspection)
// Each entry is the caller's JSON object plus "prev" (the previous entry's id,
// "" for the first) and "id" (XXH3-128 hex of the canonical form without "id").
// An entry references objects only through a top-level "objects" field: an
// array of hashes or a map name -> hash; verify() re-hashes exactly those.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "groklab/ledger/canonical.h"
#include "groklab/ledger/error.h"
#include "groklab/ledger/hash.h"
#include "groklab/ledger/object_store.h"

namespace groklab::ledger {

// One entry as read back from entries.jsonl.
struct Entry {
  std::size_t line = 0;  // 1-based line number in entries.jsonl
  std::string id;        // 32 hex digits
  std::string prev;      // the previous entry's id, "" for the first entry
  nlohmann::json json;   // the whole entry, "id" and "prev" included
};

// The first thing verify() found wrong.
struct VerifyProblem {
  std::size_t line = 0;  // 1-based line in entries.jsonl (0: not tied to a line)
  std::string id;        // the id the bad line claims, "" if it has none
  std::string message;   // what is wrong, e.g. "content does not match its id"
};

// What verify() checked and found.
struct VerifyResult {
  bool ok = false;              // true if every check passed
  std::size_t entries = 0;      // entries that passed before the first problem
  std::size_t objects = 0;      // distinct objects re-hashed and found intact
  std::string head;             // id of the last entry that passed ("" if none)
  std::string extends;          // full id of the earlier head, when one was given and found
  std::size_t extends_line = 0; // its line number
  std::optional<VerifyProblem> problem;  // set iff !ok

  // Returns one line: "ok: N entries, M objects, head ID" or
  // "line L (entry ID): MESSAGE".
  std::string summary() const;
};

// Receives warnings the caller should see (a torn line was moved aside, ...).
using WarningSink = std::function<void(const std::string&)>;

// Options for opening a ledger.
struct LedgerOptions {
  WarningSink warn;  // where warnings go; default: stderr, "groklab ledger: warning: …"
};

// A ledger directory. Appends are safe across threads, processes and (NFS)
// hosts; readers never block appenders for long. Cheap to create and move.
//   auto ledger = Ledger::create("groklab-ledger");
//   std::string h = ledger.objects().put(config_text);
//   std::string id = ledger.append({{"kind", "run.start"}, {"objects", {{"config", h}}}});
class Ledger {
 public:
  // Opens an existing ledger; throws LedgerError if DIR has no entries.jsonl.
  static Ledger open(const std::string& dir, LedgerOptions options = {});

  // Opens the ledger in DIR, creating the directory and an empty ledger if needed.
  static Ledger create(const std::string& dir, LedgerOptions options = {});

  // The ledger directory, as given.
  const std::string& dir() const { return dir_; }

  // The path of entries.jsonl.
  std::string entries_path() const;

  // The object store of this ledger.
  ObjectStore& objects() { return objects_; }
  const ObjectStore& objects() const { return objects_; }

  // Appends an entry and returns its id. BODY must be a JSON object without
  // "id" or "prev"; if it has "objects", each listed hash must already be in
  // the store. Takes the exclusive lock, chains onto the current head, writes
  // the line with one write() and fsyncs. A torn last line is moved aside first
  // (with a warning). Throws std::invalid_argument for a bad body and
  // LedgerError for I/O failures (the ledger is then left valid and unchanged).
  std::string append(const nlohmann::json& body);

  // Returns the id of the last complete entry, or "" for an empty ledger.
  std::string head() const;

  // Returns every complete entry in order (a torn last line is skipped with a
  // warning). Throws LedgerError if a line is not a JSON entry; use verify()
  // for a full check.
  std::vector<Entry> entries() const;

  // Calls FN for each complete entry in order, one at a time (for large
  // ledgers); stops early when FN returns false. Same errors as entries().
  //   ledger.for_each_entry([](const Entry& e) { puts(e.id.c_str()); return true; });
  void for_each_entry(const std::function<bool(const Entry&)>& fn) const;

  // Returns the full id of the entry whose id starts with PREFIX (at least 4
  // hex digits, like git), or of the head for "HEAD". Throws LedgerError for
  // an unknown or ambiguous prefix, listing the candidates.
  std::string resolve(const std::string& prefix) const;

  // Returns the entry named by a full id, a unique prefix or "HEAD".
  Entry get(const std::string& id_or_prefix) const;

  // Checks every line parses and is canonical, every id matches its content,
  // every "prev" names the line before (the first is ""), and every object
  // listed in "objects" exists and re-hashes to its name. With EARLIER_HEAD
  // (an id or unique prefix) also proves the chain still passes through it.
  // I/O failures reading entries.jsonl throw LedgerError; data problems are reported.
  VerifyResult verify(const std::string& earlier_head = {}) const;

  // Moves a torn last line aside under the lock (as append does); returns the
  // path it was kept at, or std::nullopt if the ledger had no torn line.
  std::optional<std::string> repair();

 private:
  Ledger(std::string dir, LedgerOptions options);
  void warn(const std::string& message) const;

  std::string dir_;
  LedgerOptions options_;
  ObjectStore objects_;
};

// Returns the current UTC time as ISO 8601 with microseconds, e.g.
// "2024-05-01T12:34:56.123456Z", for an entry's "time" field.
std::string utc_timestamp();

}  // namespace groklab::ledger

// The ledger's content-addressed object store: LEDGER/objects/ab/cdef… where
// "abcdef…" is the XXH3-128 hex of the file's bytes.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace groklab::ledger {

// Stores immutable blobs (resolved configs, metric series, checkpoints) by
// content hash. Writes go to objects/tmp/, are fsynced, renamed into place and
// the directory fsynced, so an object either exists whole or not at all.
// Safe to use from several threads and processes at once (puts are idempotent).
//   ObjectStore store("/data/ledger");
//   std::string h = store.put(bytes);  // h == hash_bytes(bytes)
class ObjectStore {
 public:
  // A store rooted at LEDGER_DIR/objects; nothing is created until the first put.
  explicit ObjectStore(std::string ledger_dir);

  // Stores the bytes and returns their hash; storing the same bytes again is a
  // no-op. Throws LedgerError (ENOSPC, EROFS, ...) leaving no partial object.
  std::string put(const void* data, std::size_t size);
  std::string put(std::string_view bytes) { return put(bytes.data(), bytes.size()); }

  // Stores a file's contents (streamed, for large files) and returns its hash.
  // Throws LedgerError if the file cannot be read or changes while being copied.
  std::string put_file(const std::string& file);

  // Returns the object's bytes after checking they still hash to its name;
  // throws LedgerError if it is missing or corrupt.
  std::string get(const std::string& hash) const;

  // Returns where the object lives (or would live): LEDGER/objects/ab/cdef….
  std::string path(const std::string& hash) const;

  // Returns true if an object with this hash is stored (its content is not checked).
  bool exists(const std::string& hash) const;

  // Re-hashes a stored object; returns std::nullopt if it is intact, else what
  // is wrong ("missing", "corrupt: its content hashes to …", "unreadable: …").
  std::optional<std::string> check(const std::string& hash) const;

  // The objects directory, LEDGER/objects.
  const std::string& dir() const { return dir_; }

 private:
  std::string ledger_dir_;
  std::string dir_;
};

}  // namespace groklab::ledger

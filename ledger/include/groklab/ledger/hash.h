// Content hashes: XXH3-128, written as 32 lowercase hex digits.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace groklab::ledger {

// Returns the XXH3-128 of the bytes as 32 lowercase hex digits.
std::string hash_bytes(const void* data, std::size_t size);
inline std::string hash_bytes(std::string_view s) { return hash_bytes(s.data(), s.size()); }

// Returns the XXH3-128 of a file's contents; throws std::runtime_error naming
// the file and the OS error if it cannot be read.
std::string hash_file(const std::string& path);

// Incremental XXH3-128 for data that arrives in pieces.
class Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void update(const void* data, std::size_t size);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // The hash of everything so far, as 32 hex digits.
  std::string hex() const;

 private:
  void* state_;
};

}  // namespace groklab::ledger

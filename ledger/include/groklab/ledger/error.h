// The one exception type the ledger throws for I/O failures and bad data.
#pragma once

#include <stdexcept>
#include <string>

namespace groklab::ledger {

// A ledger operation failed; what() names the ledger, the cause and what state
// the ledger was left in, e.g. "ledger /x: disk full (ENOSPC) while appending
// an entry to /x/entries.jsonl; the ledger is unchanged".
class LedgerError : public std::runtime_error {
 public:
  explicit LedgerError(const std::string& message, int error_code = 0)
      : std::runtime_error(message), error_code_(error_code) {}
  // The errno behind the failure (ENOSPC, EROFS, ...), or 0 if it was not an OS error.
  int error_code() const noexcept { return error_code_; }

 private:
  int error_code_;
};

// Returns a short phrase for an errno, naming it: "disk full (ENOSPC)".
std::string describe_errno(int error_code);

}  // namespace groklab::ledger

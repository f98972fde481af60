#include "groklab/ledger/canonical.h"

#include <cmath>
#include <stdexcept>

#include "groklab/ledger/hash.h"

namespace groklab::ledger {
namespace {

// Throws std::invalid_argument for values whose dump() is not a faithful,
// re-parsable text: NaN and infinities (dumped as null), binary, discarded.
void check_representable(const nlohmann::json& v, const std::string& where) {
  using T = nlohmann::json::value_t;
  switch (v.type()) {
    case T::number_float:
      if (!std::isfinite(v.get<double>()))
        throw std::invalid_argument("ledger entry: " + where + " is not a finite number (" +
                                    std::to_string(v.get<double>()) +
                                    "); JSON cannot represent it faithfully");
      return;
    case T::binary:
      throw std::invalid_argument("ledger entry: " + where +
                                  " is a binary value; store bytes as an object and reference its hash");
    case T::discarded:
      throw std::invalid_argument("ledger entry: " + where + " is a discarded value");
    case T::object:
      for (const auto& [key, child] : v.items()) check_representable(child, where + "." + key);
      return;
    case T::array: {
      std::size_t i = 0;
      for (const auto& child : v) check_representable(child, where + "[" + std::to_string(i++) + "]");
      return;
    }
    default:
      return;
  }
}

}  // namespace

std::string canonical(const nlohmann::json& value) {
  check_representable(value, "$");
  try {
    // Default object type is std::map: keys come out sorted. Strict UTF-8.
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::type_error& e) {
    throw std::invalid_argument(std::string("ledger entry: cannot serialise: ") + e.what());
  }
}

std::string entry_id(const nlohmann::json& entry) {
  if (!entry.is_object()) throw std::invalid_argument("ledger entry: not a JSON object");
  if (!entry.contains("id")) return hash_bytes(canonical(entry));
  nlohmann::json copy = entry;
  copy.erase("id");
  return hash_bytes(canonical(copy));
}

bool is_hash(std::string_view s) {
  if (s.size() != 32) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace groklab::ledger

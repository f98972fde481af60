// The canonical JSON form that entry ids are computed from.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace groklab::ledger {

// Returns the canonical text of a JSON value: keys sorted (byte order), no
// whitespace, UTF-8 kept as is, doubles in nlohmann's shortest round-trip form
// (locale-independent, so equal values always print the same).
// Throws std::invalid_argument for NaN/infinite numbers, binary values or
// invalid UTF-8, which have no faithful canonical text.
//   std::string text = canonical(nlohmann::json{{"b", 1}, {"a", 0.1}});  // {"a":0.1,"b":1}
std::string canonical(const nlohmann::json& value);

// Returns the id an entry must have: the XXH3-128 hex of canonical(entry)
// with any top-level "id" field left out.
//   bool good = entry_id(line_json) == line_json.at("id");
std::string entry_id(const nlohmann::json& entry);

// Returns true if s is 32 lowercase hex digits, the form of ids and object hashes.
bool is_hash(std::string_view s);

}  // namespace groklab::ledger

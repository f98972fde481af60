// Internal checks shared by append (on the current head) and verify (on every line).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace groklab::ledger::detail {

// The canonical text of a JSON object's top-level members, each serialised
// once as "key":value in key order, so the forms with and without "id" (or
// with a different "prev") are joined without serialising the object again.
// join() is byte-identical to canonical(object).
struct CanonicalMembers {
  std::vector<std::pair<std::string, std::string>> members;  // key, "key":value

  // The object's canonical text, leaving out member SKIP if given.
  std::string join(std::string_view skip = {}) const;
  // The canonical text with a string member KEY = VALUE (plain, unescaped
  // text such as a hash) inserted or replaced in key order.
  std::string join_with(const std::string& key, const std::string& value) const;
  // Sets member KEY to the string VALUE (plain text such as a hash).
  void set_string(const std::string& key, const std::string& value);
};

// Serialises OBJECT's members; throws std::invalid_argument like canonical().
CanonicalMembers canonical_members(const nlohmann::json& object);

// Checks one line on its own: valid JSON object, canonical text, an "id" of 32
// hex digits matching the content, a "prev" that is "" or a hash. Sets ENTRY
// to the parsed line and CLAIMED_ID to the id it claims (best effort, even for
// an unparsable line). Returns what is wrong, or std::nullopt.
std::optional<std::string> check_line(std::string_view line, nlohmann::json& entry,
                                      std::string& claimed_id);

// Collects the (name, hash) pairs of an entry's top-level "objects" field (an
// array of hashes, or a map name -> hash). Returns what is wrong with the
// field, or std::nullopt (also when there is no "objects" field).
std::optional<std::string> listed_objects(const nlohmann::json& entry,
                                          std::vector<std::pair<std::string, std::string>>& out);

}  // namespace groklab::ledger::detail

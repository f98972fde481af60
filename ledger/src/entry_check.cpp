#include "entry_check.h"

#include <algorithm>
#include <stdexcept>

#include "groklab/ledger/canonical.h"
#include "groklab/ledger/hash.h"

namespace groklab::ledger::detail {
namespace {

// The id a damaged line claims, found textually: the first "id":"<32 hex>".
std::string claimed_id_in_text(std::string_view line) {
  static constexpr std::string_view key = "\"id\":\"";
  for (auto pos = line.find(key); pos != std::string_view::npos; pos = line.find(key, pos + 1)) {
    auto candidate = line.substr(pos + key.size(), 32);
    if (is_hash(candidate)) return std::string(candidate);
  }
  return {};
}

// nlohmann's messages start with "[json.exception.parse_error.101] "; drop that.
std::string short_json_error(const char* what) {
  std::string s = what;
  if (!s.empty() && s[0] == '[') {
    auto close = s.find("] ");
    if (close != std::string::npos) s.erase(0, close + 2);
  }
  return s;
}

std::string member_text(const std::string& key, const std::string& plain_value) {
  return "\"" + key + "\":\"" + plain_value + "\"";
}

}  // namespace

CanonicalMembers canonical_members(const nlohmann::json& object) {
  if (!object.is_object()) throw std::invalid_argument("ledger entry: not a JSON object");
  CanonicalMembers out;
  out.members.reserve(object.size());
  for (auto it = object.begin(); it != object.end(); ++it) {
    // nlohmann writes an object member exactly as the key's string text, ':', the value's text.
    std::string text = canonical(nlohmann::json(it.key()));
    text += ':';
    text += canonical(it.value());
    out.members.emplace_back(it.key(), std::move(text));
  }
  return out;
}

std::string CanonicalMembers::join(std::string_view skip) const {
  std::size_t size = 2;
  for (const auto& m : members) size += m.second.size() + 1;
  std::string text;
  text.reserve(size);
  text += '{';
  bool first = true;
  for (const auto& [key, member] : members) {
    if (!skip.empty() && key == skip) continue;
    if (!first) text += ',';
    first = false;
    text += member;
  }
  text += '}';
  return text;
}

void CanonicalMembers::set_string(const std::string& key, const std::string& value) {
  // std::map's order (std::less<std::string>) is the canonical key order.
  auto it = std::lower_bound(members.begin(), members.end(), key,
                             [](const auto& m, const std::string& k) { return m.first < k; });
  if (it != members.end() && it->first == key) {
    it->second = member_text(key, value);
  } else {
    members.insert(it, {key, member_text(key, value)});
  }
}

std::string CanonicalMembers::join_with(const std::string& key, const std::string& value) const {
  CanonicalMembers copy = *this;
  copy.set_string(key, value);
  return copy.join();
}

std::optional<std::string> check_line(std::string_view line, nlohmann::json& entry,
                                      std::string& claimed_id) {
  claimed_id.clear();
  if (line.empty()) return "empty line";
  try {
    entry = nlohmann::json::parse(line.begin(), line.end());
  } catch (const nlohmann::json::exception& e) {
    claimed_id = claimed_id_in_text(line);
    return "not valid JSON: " + short_json_error(e.what());
  }
  if (!entry.is_object()) return "not a JSON object";
  auto id_it = entry.find("id");
  if (id_it == entry.end() || !id_it->is_string() || !is_hash(id_it->get_ref<const std::string&>())) {
    claimed_id = claimed_id_in_text(line);
    return "has no \"id\" of 32 lowercase hex digits";
  }
  claimed_id = id_it->get<std::string>();
  auto prev_it = entry.find("prev");
  if (prev_it == entry.end() || !prev_it->is_string())
    return "has no \"prev\" string (the previous entry's id, or \"\" for the first)";
  const auto& prev = prev_it->get_ref<const std::string&>();
  if (!prev.empty() && !is_hash(prev)) return "\"prev\" is not an entry id: '" + prev + "'";

  CanonicalMembers members;
  try {
    members = canonical_members(entry);
  } catch (const std::invalid_argument& e) {
    return std::string("has no canonical form: ") + e.what();
  }
  if (members.join() != line)
    return "is not in canonical form (its bytes differ from the ledger's own serialisation: "
           "edited by hand or damaged)";
  std::string actual = hash_bytes(members.join("id"));
  if (actual != claimed_id)
    return "content does not match its id (the content hashes to " + actual +
           "): the entry was modified";
  return std::nullopt;
}

std::optional<std::string> listed_objects(const nlohmann::json& entry,
                                          std::vector<std::pair<std::string, std::string>>& out) {
  out.clear();
  auto it = entry.find("objects");
  if (it == entry.end()) return std::nullopt;
  auto take = [&](const std::string& name, const nlohmann::json& v) -> std::optional<std::string> {
    if (!v.is_string() || !is_hash(v.get_ref<const std::string&>()))
      return "\"objects\" entry " + name + " is not an object hash (32 lowercase hex digits): " +
             v.dump();
    out.emplace_back(name, v.get<std::string>());
    return std::nullopt;
  };
  if (it->is_array()) {
    std::size_t i = 0;
    for (const auto& v : *it) {
      if (auto bad = take("[" + std::to_string(i++) + "]", v)) return bad;
    }
    return std::nullopt;
  }
  if (it->is_object()) {
    for (const auto& [name, v] : it->items()) {
      if (auto bad = take("'" + name + "'", v)) return bad;
    }
    return std::nullopt;
  }
  return "\"objects\" must be an array of hashes or a map name -> hash";
}

}  // namespace groklab::ledger::detail

// Appending, the hash chain, reopening and id resolution.
#include <catch2/catch.hpp>

#include <limits>
#include <map>

#include "groklab/ledger/ledger.h"
#include "ledger_test_util.h"

using namespace groklab::ledger;
using namespace groklab::ledger::test;
using nlohmann::json;

namespace {

// Splits a file into its lines (without '\n').
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
    out.push_back(text.substr(start, nl - start));
  return out;
}

}  // namespace

TEST_CASE("append chains entries and writes canonical lines", "[ledger][append]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp / "L");
  CHECK(ledger.head().empty());
  CHECK(ledger.entries().empty());
  CHECK(ledger.verify().ok);

  const std::string cfg = ledger.objects().put("[task]\nmodulus = 97\n");
  const std::string a = ledger.append({{"kind", "run.start"}, {"time", "2024-01-01T00:00:00Z"},
                                       {"lr", 0.001}, {"objects", {{"config", cfg}}}});
  const std::string b = ledger.append({{"kind", "run.end"}, {"status", "finished"}, {"acc", 0.99}});
  CHECK(is_hash(a));
  CHECK(is_hash(b));
  CHECK(a != b);
  CHECK(ledger.head() == b);

  auto lines = lines_of(read_file(ledger.entries_path()));
  REQUIRE(lines.size() == 2);
  json first = json::parse(lines[0]);
  CHECK(first["prev"] == "");
  CHECK(first["id"] == a);
  CHECK(canonical(first) == lines[0]);
  CHECK(entry_id(first) == a);
  json second = json::parse(lines[1]);
  CHECK(second["prev"] == a);
  CHECK(entry_id(second) == b);

  auto entries = ledger.entries();
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].line == 1);
  CHECK(entries[0].id == a);
  CHECK(entries[0].prev.empty());
  CHECK(entries[1].prev == a);
  CHECK(entries[1].json["status"] == "finished");

  std::vector<std::string> streamed;
  ledger.for_each_entry([&](const Entry& e) {
    streamed.push_back(e.id);
    return false;  // stop after the first
  });
  CHECK(streamed == std::vector<std::string>{a});

  VerifyResult r = ledger.verify();
  CHECK(r.ok);
  CHECK(r.entries == 2);
  CHECK(r.objects == 1);
  CHECK(r.head == b);
  CHECK(r.summary() == "ok: 2 entries, 1 objects, head " + b);
}

TEST_CASE("the same body appended twice gets different ids (prev differs)", "[ledger][append]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path());
  json body = {{"kind", "tick"}};
  std::string a = ledger.append(body);
  std::string b = ledger.append(body);
  CHECK(a != b);
  CHECK(ledger.verify().entries == 2);
}

TEST_CASE("bad bodies are refused and leave the ledger unchanged", "[ledger][append]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path());
  ledger.append({{"kind", "ok"}});
  const std::string before = read_file(ledger.entries_path());
  CHECK_THROWS_AS(ledger.append(json::array({1, 2})), std::invalid_argument);
  CHECK_THROWS_AS(ledger.append({{"id", "x"}}), std::invalid_argument);
  CHECK_THROWS_AS(ledger.append({{"prev", ""}}), std::invalid_argument);
  CHECK_THROWS_AS(ledger.append({{"loss", std::numeric_limits<double>::quiet_NaN()}}), std::invalid_argument);
  CHECK_THROWS_AS(ledger.append({{"objects", {"not-a-hash"}}}), std::invalid_argument);
  CHECK_THROWS_WITH(ledger.append({{"objects", {std::string(32, 'e')}}}), Catch::Contains("not in the store"));
  CHECK(read_file(ledger.entries_path()) == before);
}

TEST_CASE("a reopened ledger continues the same chain", "[ledger][append]") {
  TempDir tmp;
  std::string first;
  {
    Ledger ledger = Ledger::create(tmp / "deep/er/ledger/");
    first = ledger.append({{"kind", "a"}});
  }
  CHECK_THROWS_WITH(Ledger::open(tmp / "nowhere"), Catch::Contains("no such directory"));
  CHECK_THROWS_WITH(Ledger::open(tmp.path()), Catch::Contains("not a ledger"));
  Ledger again = Ledger::open(tmp / "deep/er/ledger");
  CHECK(again.head() == first);
  std::string second = again.append({{"kind", "b"}});
  CHECK(again.get(second).prev == first);
  Ledger created_again = Ledger::create(tmp / "deep/er/ledger");  // create is idempotent
  CHECK(created_again.head() == second);
  CHECK(created_again.verify().entries == 2);
}

TEST_CASE("ids resolve by unique prefix like git", "[ledger][resolve]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path());
  // Append until two ids share their first 4 hex digits (deterministic: same
  // bodies give the same ids every run; a few hundred appends at most).
  std::map<std::string, std::string> by_prefix;
  std::string clash_a, clash_b;
  for (int i = 0; i < 5000 && clash_a.empty(); ++i) {
    std::string id = ledger.append({{"kind", "probe"}, {"i", i}});
    auto [it, inserted] = by_prefix.emplace(id.substr(0, 4), id);
    if (!inserted) {
      clash_a = it->second;
      clash_b = id;
    }
  }
  REQUIRE_FALSE(clash_a.empty());
  const std::string some = by_prefix.begin()->second == clash_a ? std::next(by_prefix.begin())->second
                                                                : by_prefix.begin()->second;

  CHECK(ledger.resolve(some) == some);
  CHECK(ledger.resolve(some.substr(0, 4)) == some);
  CHECK(ledger.resolve(some.substr(0, 9)) == some);
  std::string upper = some.substr(0, 8);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  CHECK(ledger.resolve(upper) == some);
  CHECK(ledger.resolve("HEAD") == ledger.head());
  CHECK(ledger.get(some).json["kind"] == "probe");

  try {
    ledger.resolve(clash_a.substr(0, 4));
    FAIL("an ambiguous prefix resolved");
  } catch (const LedgerError& e) {
    std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("ambiguous"));
    CHECK_THAT(msg, Catch::Contains(clash_a));
    CHECK_THAT(msg, Catch::Contains(clash_b));
  }
  // One more digit (where they differ) disambiguates.
  std::size_t d = 4;
  while (clash_a[d] == clash_b[d]) ++d;
  CHECK(ledger.resolve(clash_a.substr(0, d + 1)) == clash_a);

  CHECK_THROWS_WITH(ledger.resolve(some.substr(0, 3)), Catch::Contains("too short"));
  CHECK_THROWS_WITH(ledger.resolve("xyz123"), Catch::Contains("not an entry id"));
  std::string unknown = some;
  unknown[5] = unknown[5] == '0' ? '1' : '0';
  CHECK_THROWS_WITH(ledger.resolve(unknown), Catch::Contains("no entry id starts with"));
  CHECK_THROWS_WITH(ledger.resolve(some + "0"), Catch::Contains("not an entry id"));
}

TEST_CASE("utc_timestamp is ISO 8601 with microseconds", "[ledger]") {
  std::string t = utc_timestamp();
  REQUIRE(t.size() == 27);
  CHECK(t[4] == '-');
  CHECK(t[10] == 'T');
  CHECK(t[19] == '.');
  CHECK(t.back() == 'Z');
}

TEST_CASE("long lines across read-buffer boundaries", "[ledger][append]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path());
  std::string last;
  // 45 lines of ~30 KB: past the 4 KiB tail window and the 1 MiB read chunk.
  for (int i = 0; i < 45; ++i) last = ledger.append({{"kind", "big"}, {"i", i}, {"pad", std::string(30000, static_cast<char>('a' + i % 26))}});
  CHECK(ledger.head() == last);
  CHECK(ledger.entries().size() == 45);
  VerifyResult r = ledger.verify();
  INFO(r.summary());
  CHECK(r.ok);
  CHECK(r.entries == 45);
  CHECK(ledger.get(last.substr(0, 8)).json["i"] == 44);
}

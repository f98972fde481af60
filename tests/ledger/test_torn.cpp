// A torn last line (crash mid-write) is detected, never chained onto, and kept aside.
#include <catch2/catch.hpp>

#include "groklab/ledger/ledger.h"
#include "ledger_test_util.h"

using namespace groklab::ledger;
using namespace groklab::ledger::test;
using nlohmann::json;

namespace {

// The entries.torn-* files in DIR.
std::vector<std::string> torn_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& name : list_dir(dir))
    if (name.rfind("entries.torn-", 0) == 0) out.push_back(dir + "/" + name);
  return out;
}

}  // namespace

TEST_CASE("a torn last line is moved aside and the chain continues from the last complete entry",
          "[ledger][torn]") {
  TempDir tmp;
  std::vector<std::string> warnings;
  LedgerOptions options;
  options.warn = [&](const std::string& m) { warnings.push_back(m); };
  Ledger ledger = Ledger::create(tmp.path(), options);
  ledger.append({{"kind", "a"}});
  ledger.append({{"kind", "b"}});
  const std::string h3 = ledger.append({{"kind", "c"}});
  const std::string complete = read_file(ledger.entries_path());

  const std::string torn = R"({"id":"0123","kind":"half-writ)";
  append_file(ledger.entries_path(), torn);

  // Readers see the three complete entries; verify reports the torn line.
  CHECK(ledger.head() == h3);
  CHECK(ledger.entries().size() == 3);
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("incomplete last line"));
  VerifyResult r = ledger.verify();
  CHECK_FALSE(r.ok);
  REQUIRE(r.problem);
  CHECK(r.problem->line == 4);
  CHECK_THAT(r.problem->message, Catch::Contains("incomplete last line"));
  CHECK(r.entries == 3);
  CHECK(r.head == h3);

  // The next append keeps the torn piece aside and chains onto entry 3.
  warnings.clear();
  const std::string h4 = ledger.append({{"kind", "d"}});
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("incomplete line") && Catch::Contains("entries.torn-"));
  CHECK(ledger.get(h4).prev == h3);
  auto kept = torn_files(tmp.path());
  REQUIRE(kept.size() == 1);
  CHECK(read_file(kept[0]) == torn);
  CHECK(read_file(ledger.entries_path()).compare(0, complete.size(), complete) == 0);
  r = ledger.verify();
  INFO(r.summary());
  CHECK(r.ok);
  CHECK(r.entries == 4);
}

TEST_CASE("a whole entry missing only its newline is still treated as torn", "[ledger][torn]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path(), {[](const std::string&) {}});
  const std::string h1 = ledger.append({{"kind", "a"}});
  const std::string h2 = ledger.append({{"kind", "b"}});
  // Drop the final '\n': the last entry was never acknowledged, so it is set aside.
  std::string text = read_file(ledger.entries_path());
  write_file(ledger.entries_path(), text.substr(0, text.size() - 1));
  CHECK(ledger.head() == h1);
  const std::string h3 = ledger.append({{"kind", "c"}});
  CHECK(ledger.get(h3).prev == h1);
  CHECK_THROWS_WITH(ledger.resolve(h2), Catch::Contains("no entry id starts with"));
  CHECK(ledger.verify().ok);
  REQUIRE(torn_files(tmp.path()).size() == 1);
}

TEST_CASE("a ledger that is only a torn line restarts the chain", "[ledger][torn]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path(), {[](const std::string&) {}});
  write_file(ledger.entries_path(), "{\"ki");
  CHECK(ledger.head().empty());
  const std::string h = ledger.append({{"kind", "first"}});
  CHECK(ledger.get(h).prev.empty());
  CHECK(ledger.verify().ok);
}

TEST_CASE("repair moves a torn line aside without appending", "[ledger][torn]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path(), {[](const std::string&) {}});
  const std::string h = ledger.append({{"kind", "a"}});
  CHECK_FALSE(ledger.repair().has_value());
  append_file(ledger.entries_path(), "{\"kind\":\"b\"");
  auto kept = ledger.repair();
  REQUIRE(kept.has_value());
  CHECK(read_file(*kept) == "{\"kind\":\"b\"");
  CHECK_FALSE(ledger.repair().has_value());
  CHECK(ledger.verify().ok);
  CHECK(ledger.head() == h);
}

TEST_CASE("a damaged last complete entry is never chained onto", "[ledger][torn]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path());
  ledger.append({{"kind", "a"}});
  ledger.append({{"kind", "b"}});
  const std::string path = ledger.entries_path();
  std::string text = read_file(path);
  const auto pos = text.find("\"b\"");
  xor_byte(path, pos + 1, 0x01);  // "b" -> "c"
  const std::string before = read_file(path);
  CHECK_THROWS_WITH(ledger.append({{"kind", "c"}}),
                    Catch::Contains("line 2") && Catch::Contains("damaged") && Catch::Contains("refusing"));
  CHECK(read_file(path) == before);
}

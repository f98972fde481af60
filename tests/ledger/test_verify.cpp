// verify: any single flipped byte in entries.jsonl or a referenced object is
// found and the first bad entry named; verify --head pins history.
#include <catch2/catch.hpp>

#include <unistd.h>

#include "groklab/ledger/ledger.h"
#include "ledger_test_util.h"

using namespace groklab::ledger;
using namespace groklab::ledger::test;
using nlohmann::json;

namespace {

struct Small {
  std::vector<std::string> ids;
  std::string obj_a, obj_b;
};

// A small ledger exercising strings, unicode, doubles, nesting and both forms of "objects".
Small make_small(Ledger& ledger) {
  Small s;
  s.obj_a = ledger.objects().put("resolved config: modulus=97 lr=1e-3");
  s.obj_b = ledger.objects().put(std::string("\x00\x01\x02 binary checkpoint bytes \xff", 31));
  s.ids.push_back(ledger.append({{"kind", "run.start"}, {"time", "2024-05-01T12:00:00Z"}, {"seed", 42},
                                 {"objects", {{"config", s.obj_a}}}}));
  s.ids.push_back(ledger.append({{"kind", "checkpoint"}, {"step", 1000}, {"loss", 0.125},
                                 {"env", {{"cpu", "Ryzen µ"}, {"threads", 1}}}, {"objects", {s.obj_b}}}));
  s.ids.push_back(ledger.append({{"kind", "run.end"}, {"status", "finished"}, {"acc", -1.5e-7},
                                 {"objects", {{"config", s.obj_a}, {"final", s.obj_b}}}}));
  return s;
}

}  // namespace

TEST_CASE("every single flipped byte in entries.jsonl is detected at its line", "[ledger][verify]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path());
  Small s = make_small(ledger);
  REQUIRE(ledger.verify().ok);
  const std::string path = ledger.entries_path();
  const std::string text = read_file(path);

  std::size_t checked = 0;
  for (unsigned char mask : {0x01, 0x02, 0x20, 0x80}) {
    std::size_t line = 1;
    for (std::size_t pos = 0; pos < text.size(); ++pos) {
      xor_byte(path, pos, mask);
      VerifyResult r = ledger.verify();
      xor_byte(path, pos, mask);
      INFO("byte " << pos << " ^ " << int(mask) << " (line " << line << "): " << r.summary());
      REQUIRE_FALSE(r.ok);
      REQUIRE(r.problem);
      CHECK(r.problem->line == line);
      CHECK(r.entries == line - 1);
      if (text[pos] == '\n') ++line;
      ++checked;
    }
  }
  CHECK(checked == 4 * text.size());
  CHECK(ledger.verify().ok);
}

TEST_CASE("every single flipped byte in a referenced object is detected", "[ledger][verify]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path());
  Small s = make_small(ledger);
  // obj_a is first referenced by line 1, obj_b by line 2.
  for (const auto& [hash, first_line] : {std::pair{s.obj_a, 1u}, std::pair{s.obj_b, 2u}}) {
    const std::string path = ledger.objects().path(hash);
    const std::size_t size = read_file(path).size();
    for (std::size_t pos = 0; pos < size; ++pos) {
      xor_byte(path, pos, 0x01);
      VerifyResult r = ledger.verify();
      xor_byte(path, pos, 0x01);
      REQUIRE_FALSE(r.ok);
      REQUIRE(r.problem);
      CHECK(r.problem->line == first_line);
      CHECK(r.problem->id == s.ids[first_line - 1]);
      CHECK_THAT(r.problem->message, Catch::Contains(hash) && Catch::Contains("corrupt"));
    }
  }
  VerifyResult r = ledger.verify();
  CHECK(r.ok);
  CHECK(r.objects == 2);
}

TEST_CASE("a missing object, a removed or reordered line are named", "[ledger][verify]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path());
  Small s = make_small(ledger);
  const std::string path = ledger.entries_path();
  const std::string text = read_file(path);
  const auto nl1 = text.find('\n');
  const auto nl2 = text.find('\n', nl1 + 1);
  const std::string l1 = text.substr(0, nl1 + 1), l2 = text.substr(nl1 + 1, nl2 - nl1),
                    l3 = text.substr(nl2 + 1);

  SECTION("missing object") {
    REQUIRE(::unlink(ledger.objects().path(s.obj_b).c_str()) == 0);
    VerifyResult r = ledger.verify();
    REQUIRE(r.problem);
    CHECK(r.problem->line == 2);
    CHECK_THAT(r.problem->message, Catch::Contains("missing"));
    CHECK(r.entries == 1);
    CHECK(r.head == s.ids[0]);
  }
  SECTION("a middle line removed") {
    write_file(path, l1 + l3);
    VerifyResult r = ledger.verify();
    REQUIRE(r.problem);
    CHECK(r.problem->line == 2);
    CHECK(r.problem->id == s.ids[2]);
    CHECK_THAT(r.problem->message, Catch::Contains("chain is broken"));
  }
  SECTION("the first line removed") {
    write_file(path, l2 + l3);
    VerifyResult r = ledger.verify();
    REQUIRE(r.problem);
    CHECK(r.problem->line == 1);
    CHECK_THAT(r.problem->message, Catch::Contains("empty prev"));
  }
  SECTION("lines reordered") {
    write_file(path, l1 + l3 + l2);
    VerifyResult r = ledger.verify();
    REQUIRE(r.problem);
    CHECK(r.problem->line == 2);
  }
  SECTION("a line re-serialised with whitespace") {
    json j = json::parse(l2);
    write_file(path, l1 + j.dump(1) + "\n" + l3);
    VerifyResult r = ledger.verify();
    REQUIRE(r.problem);
    CHECK(r.problem->line == 2);
  }
  SECTION("an edited entry with a recomputed id still breaks the chain after it") {
    json j = json::parse(l2);
    j["loss"] = 0.0625;
    j.erase("id");
    j["id"] = entry_id(j);
    write_file(path, l1 + canonical(j) + "\n" + l3);
    VerifyResult r = ledger.verify();
    REQUIRE(r.problem);
    CHECK(r.problem->line == 3);
    CHECK_THAT(r.problem->message, Catch::Contains("chain is broken"));
  }
}

TEST_CASE("verify --head proves the ledger still extends an earlier head", "[ledger][verify]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path());
  Small s = make_small(ledger);
  const std::string pinned = ledger.head();
  REQUIRE(pinned == s.ids[2]);
  ledger.append({{"kind", "later"}});
  ledger.append({{"kind", "later still"}});

  VerifyResult r = ledger.verify(pinned);
  CHECK(r.ok);
  CHECK(r.extends == pinned);
  CHECK(r.extends_line == 3);
  CHECK_THAT(r.summary(), Catch::Contains("extends " + pinned + " (line 3)"));
  CHECK(ledger.verify(pinned.substr(0, 7)).extends == pinned);
  CHECK(ledger.verify(s.ids[0]).extends_line == 1);

  r = ledger.verify(std::string(32, '0'));
  CHECK_FALSE(r.ok);
  REQUIRE(r.problem);
  CHECK_THAT(r.problem->message, Catch::Contains("not on the chain"));
  CHECK_FALSE(ledger.verify("xyz").ok);
  CHECK_FALSE(ledger.verify("abc").ok);

  SECTION("history truncated after the pinned head: plain verify passes, --head fails") {
    std::string text = read_file(ledger.entries_path());
    std::size_t cut = 0;
    for (int i = 0; i < 2; ++i) cut = text.find('\n', cut) + 1;
    write_file(ledger.entries_path(), text.substr(0, cut));
    CHECK(ledger.verify().ok);
    VerifyResult t = ledger.verify(pinned);
    CHECK_FALSE(t.ok);
    REQUIRE(t.problem);
    CHECK_THAT(t.problem->message, Catch::Contains("not on the chain"));
  }
  SECTION("history rewritten (a different ledger with the same later bodies)") {
    TempDir other;
    Ledger forged = Ledger::create(other.path());
    forged.append({{"kind", "run.start"}, {"seed", 43}});
    forged.append({{"kind", "later"}});
    CHECK_FALSE(forged.verify(pinned).ok);
  }
}

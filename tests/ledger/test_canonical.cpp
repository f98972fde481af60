// Canonical JSON: the form entry ids are computed from.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "groklab/ledger/canonical.h"
#include "groklab/ledger/hash.h"

using groklab::ledger::canonical;
using groklab::ledger::entry_id;
using groklab::ledger::hash_bytes;
using groklab::ledger::is_hash;
using nlohmann::json;

TEST_CASE("canonical form sorts keys and has no whitespace", "[ledger][canonical]") {
  json j = json::parse(R"({ "b": [1, 2, {"z": null, "a": true}], "a": "x", "µ": "é" })");
  CHECK(canonical(j) == R"({"a":"x","b":[1,2,{"a":true,"z":null}],"µ":"é"})");
}

TEST_CASE("doubles serialise deterministically and round-trip bit-exactly", "[ledger][canonical]") {
  CHECK(canonical(json(0.1)) == "0.1");
  CHECK(canonical(json(1.0)) == "1.0");
  CHECK(canonical(json(-0.0)) == "-0.0");
  CHECK(canonical(json(1e300)) == "1e+300");
  CHECK(canonical(json(5)) == "5");

  std::mt19937_64 rng(12345);
  std::uniform_int_distribution<std::uint64_t> bits;
  for (int i = 0; i < 2000; ++i) {
    std::uint64_t b = bits(rng);
    double d;
    std::memcpy(&d, &b, sizeof d);
    if (!std::isfinite(d)) continue;
    std::string text = canonical(json(d));
    double back = json::parse(text).get<double>();
    std::uint64_t b2;
    std::memcpy(&b2, &back, sizeof b2);
    REQUIRE(b2 == b);
    REQUIRE(canonical(json::parse(text)) == text);
  }
}

TEST_CASE("values without a faithful canonical text are rejected", "[ledger][canonical]") {
  CHECK_THROWS_AS(canonical(json{{"loss", std::numeric_limits<double>::quiet_NaN()}}), std::invalid_argument);
  CHECK_THROWS_AS(canonical(json{{"x", {1.0, std::numeric_limits<double>::infinity()}}}), std::invalid_argument);
  CHECK_THROWS_AS(canonical(json{{"b", json::binary({1, 2, 3})}}), std::invalid_argument);
  CHECK_THROWS_AS(canonical(json("\xff\xfe")), std::invalid_argument);
}

TEST_CASE("entry_id hashes the canonical form without the id field", "[ledger][canonical]") {
  json e = {{"kind", "k"}, {"prev", ""}, {"n", 1}};
  std::string id = entry_id(e);
  CHECK(id == hash_bytes(R"({"kind":"k","n":1,"prev":""})"));
  e["id"] = id;
  CHECK(entry_id(e) == id);
  CHECK(is_hash(id));
  CHECK_FALSE(is_hash(id.substr(1)));
  CHECK_FALSE(is_hash("ABCDEF0123456789abcdef0123456789"));
}

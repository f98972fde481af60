// The content-addressed object store.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include "groklab/ledger/ledger.h"
#include "ledger_test_util.h"

using namespace groklab::ledger;
using namespace groklab::ledger::test;

TEST_CASE("put stores bytes under their hash, idempotently", "[ledger][objects]") {
  TempDir tmp;
  ObjectStore store(tmp.path());
  const std::string bytes = "resolved config\n[task]\nmodulus = 97\n";
  const std::string h = store.put(bytes);
  CHECK(h == hash_bytes(bytes));
  CHECK(store.path(h) == tmp.path() + "/objects/" + h.substr(0, 2) + "/" + h.substr(2));
  CHECK(store.exists(h));
  CHECK(read_file(store.path(h)) == bytes);
  CHECK(store.get(h) == bytes);
  CHECK_FALSE(store.check(h).has_value());
  CHECK(store.put(bytes) == h);  // again: no-op
  CHECK(list_dir(tmp / "objects/tmp").empty());
  struct stat st {};
  REQUIRE(::stat(store.path(h).c_str(), &st) == 0);
  CHECK((st.st_mode & 0222) == 0);  // objects are read-only

  const std::string empty_hash = store.put("");
  CHECK(store.get(empty_hash).empty());
}

TEST_CASE("put_file streams a file into the store", "[ledger][objects]") {
  TempDir tmp;
  ObjectStore store(tmp.path());
  std::string big(3 * 1024 * 1024 + 17, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  write_file(tmp / "checkpoint.pt", big);
  const std::string h = store.put_file(tmp / "checkpoint.pt");
  CHECK(h == hash_bytes(big));
  CHECK(store.get(h) == big);
  CHECK(store.put(big) == h);
  CHECK_THROWS_AS(store.put_file(tmp / "no-such-file"), LedgerError);
}

TEST_CASE("a damaged or missing object is reported", "[ledger][objects]") {
  TempDir tmp;
  ObjectStore store(tmp.path());
  const std::string h = store.put("metric series 0.1 0.2 0.3");
  xor_byte(store.path(h), 3, 0x01);
  auto problem = store.check(h);
  REQUIRE(problem.has_value());
  CHECK_THAT(*problem, Catch::Contains("corrupt"));
  CHECK_THROWS_WITH(store.get(h), Catch::Contains("corrupt"));
  // Storing the right bytes again does not repair a same-size damaged file
  // (put is idempotent by name and size), but a wrong-size one is replaced.
  ::chmod(store.path(h).c_str(), 0644);
  write_file(store.path(h), "short");
  CHECK(store.put("metric series 0.1 0.2 0.3") == h);
  CHECK_FALSE(store.check(h).has_value());

  const std::string missing(32, 'a');
  CHECK_FALSE(store.exists(missing));
  REQUIRE(store.check(missing).has_value());
  CHECK_THAT(*store.check(missing), Catch::StartsWith("missing"));
  CHECK_THROWS_WITH(store.get(missing), Catch::Contains("not found"));
  CHECK_THROWS_AS(store.path("xyz"), std::invalid_argument);
}

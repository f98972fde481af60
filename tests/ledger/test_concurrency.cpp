// Several processes (and threads) appending at once lose nothing and keep one chain.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "groklab/ledger/ledger.h"
#include "ledger_test_util.h"

using namespace groklab::ledger;
using namespace groklab::ledger::test;
using nlohmann::json;

TEST_CASE("concurrent appending processes lose nothing and keep the chain linear",
          "[ledger][concurrency]") {
  constexpr int kProcs = 6;
  constexpr int kEach = 60;
  TempDir tmp;
  Ledger::create(tmp.path());

  // All children block on the pipe until the parent closes it: a common start.
  int gate[2];
  REQUIRE(::pipe(gate) == 0);
  std::vector<pid_t> kids;
  std::fflush(stdout);
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(gate[1]);
      char c;
      while (::read(gate[0], &c, 1) > 0) {
      }
      int code = 0;
      try {
        Ledger ledger = Ledger::open(tmp.path(), {[](const std::string&) {}});
        const std::string shared = ledger.objects().put("the same bytes from every process");
        for (int i = 0; i < kEach; ++i) {
          json body = {{"kind", "stress"}, {"proc", p}, {"i", i}, {"pad", std::string(200, 'x')}};
          if (i % 10 == 0) {
            std::string own = ledger.objects().put("object of " + std::to_string(p) + "/" + std::to_string(i));
            body["objects"] = {shared, own};
          }
          ledger.append(body);
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", p, e.what());
        code = 1;
      }
      ::_exit(code);
    }
    kids.push_back(pid);
  }
  ::close(gate[0]);
  ::close(gate[1]);  // go
  for (pid_t pid : kids) {
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
  }

  Ledger ledger = Ledger::open(tmp.path());
  auto entries = ledger.entries();
  REQUIRE(entries.size() == static_cast<std::size_t>(kProcs * kEach));
  std::vector<int> next(kProcs, 0);  // each process's entries appear in its own order
  for (const auto& e : entries) {
    int p = e.json["proc"].get<int>();
    REQUIRE(e.json["i"].get<int>() == next[p]);
    ++next[p];
  }
  VerifyResult r = ledger.verify();
  INFO(r.summary());
  CHECK(r.ok);
  CHECK(r.entries == static_cast<std::size_t>(kProcs * kEach));
  CHECK(r.objects == static_cast<std::size_t>(1 + kProcs * kEach / 10));
  CHECK(list_dir(tmp / "objects/tmp").empty());
}

TEST_CASE("concurrent appending threads in one process keep the chain linear", "[ledger][concurrency]") {
  constexpr int kThreads = 4;
  constexpr int kEach = 40;
  TempDir tmp;
  Ledger::create(tmp.path());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        Ledger ledger = Ledger::open(tmp.path());  // one Ledger per thread, same directory
        for (int i = 0; i < kEach; ++i) ledger.append({{"kind", "thread"}, {"t", t}, {"i", i}});
      } catch (...) {
        ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == 0);
  VerifyResult r = Ledger::open(tmp.path()).verify();
  INFO(r.summary());
  CHECK(r.ok);
  CHECK(r.entries == static_cast<std::size_t>(kThreads * kEach));
}

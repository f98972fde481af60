// Disk full, file-size limits, read-only and permission failures: a clear
// error naming the ledger and the cause, and a ledger that still verifies.
// Each case runs in a forked child so limits, mounts and uids stay there.
#include <catch2/catch.hpp>

#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "groklab/ledger/ledger.h"
#include "ledger_test_util.h"

using namespace groklab::ledger;
using namespace groklab::ledger::test;
using nlohmann::json;

namespace {

// Caps the size of any file this process writes; writes past it fail with
// EFBIG (SIGXFSZ ignored) after a short write up to the limit.
void limit_file_size(off_t bytes) {
  ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit rl {};
  rl.rlim_cur = rl.rlim_max = static_cast<rlim_t>(bytes);
  if (::setrlimit(RLIMIT_FSIZE, &rl) != 0) throw std::runtime_error("setrlimit failed");
}

// In a child: enters a private mount namespace (as root, else via a user
// namespace). Returns false if this environment does not allow it.
bool private_mounts() {
  if (::unshare(CLONE_NEWNS) != 0 && ::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return false;
  return ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0;
}

json body_of(int i) {
  return {{"kind", "metric"}, {"i", i}, {"pad", std::string(400, 'p')}, {"time", "2024-05-01T12:00:00Z"}};
}

}  // namespace

TEST_CASE("EFBIG while appending (RLIMIT_FSIZE) leaves the ledger unchanged", "[ledger][failures]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path());
  for (int i = 0; i < 3; ++i) ledger.append(body_of(i));
  const std::string before = read_file(ledger.entries_path());

  // The limit lets 100 bytes of the next line through: a short write, then EFBIG.
  ChildResult child = run_in_child([&](std::string& report) {
    limit_file_size(static_cast<off_t>(before.size()) + 100);
    try {
      ledger.append(body_of(3));
    } catch (const LedgerError& e) {
      report = e.what();
      return e.error_code() == EFBIG ? 0 : 1;
    }
    report = "append succeeded past the file size limit";
    return 2;
  });
  INFO(child.output);
  CHECK(child.status == 0);
  CHECK_THAT(child.output, Catch::StartsWith("ledger " + tmp.path() + ": "));
  CHECK_THAT(child.output, Catch::Contains("(EFBIG)") && Catch::Contains("while appending an entry") &&
                               Catch::Contains("the ledger is unchanged"));
  CHECK(read_file(ledger.entries_path()) == before);
  VerifyResult r = ledger.verify();
  CHECK(r.ok);
  CHECK(r.entries == 3);
  ledger.append(body_of(3));  // without the limit appends work again
  CHECK(ledger.verify().entries == 4);
}

TEST_CASE("EFBIG while storing an object leaves no partial object", "[ledger][failures]") {
  TempDir tmp;
  Ledger ledger = Ledger::create(tmp.path());
  const std::string big(64 * 1024, 'x');
  ChildResult child = run_in_child([&](std::string& report) {
    limit_file_size(1000);
    try {
      ledger.objects().put(big);
    } catch (const LedgerError& e) {
      report = e.what();
      return e.error_code() == EFBIG ? 0 : 1;
    }
    return 2;
  });
  INFO(child.output);
  CHECK(child.status == 0);
  CHECK_THAT(child.output, Catch::Contains("(EFBIG)") && Catch::Contains("no partial object"));
  CHECK_FALSE(ledger.objects().exists(hash_bytes(big)));
  CHECK(list_dir(tmp / "objects/tmp").empty());
  CHECK(ledger.verify().ok);
}

TEST_CASE("ENOSPC on a small tmpfs: clear errors, the ledger still verifies", "[ledger][failures]") {
  TempDir tmp;
  ChildResult child = run_in_child([&](std::string& report) {
    if (!private_mounts()) return kSkipped;
    const std::string mnt = tmp / "tiny";
    ::mkdir(mnt.c_str(), 0755);
    if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=64k") != 0) return kSkipped;
    Ledger ledger = Ledger::create(mnt + "/ledger");
    int appended = 0;
    std::string append_error;
    for (int i = 0; i < 10000; ++i) {
      try {
        ledger.append(body_of(i));
        ++appended;
      } catch (const LedgerError& e) {
        if (e.error_code() != ENOSPC) throw;
        append_error = e.what();
        break;
      }
    }
    if (append_error.empty()) return 3;
    // The partial line was taken back: every acknowledged entry is there, no more.
    VerifyResult r = ledger.verify();
    if (!r.ok || r.entries != static_cast<std::size_t>(appended)) {
      report = "after ENOSPC: " + r.summary();
      return 4;
    }
    std::string object_error;
    try {
      ledger.objects().put(std::string(128 * 1024, 'o'));
    } catch (const LedgerError& e) {
      object_error = e.what();
    }
    if (!list_dir(mnt + "/ledger/objects/tmp").empty()) return 5;
    report = append_error + "\n" + object_error;
    return 0;
  });
  if (child.status == kSkipped) {
    WARN("skipped: cannot mount a tmpfs here (needs root or user namespaces)");
    return;
  }
  INFO(child.output);
  REQUIRE(child.status == 0);
  CHECK_THAT(child.output, Catch::Contains("disk full (ENOSPC) while appending an entry") &&
                               Catch::Contains("the ledger is unchanged"));
  CHECK_THAT(child.output, Catch::Contains("disk full (ENOSPC) while storing"));
}

TEST_CASE("a read-only ledger (EROFS) refuses appends clearly and still verifies", "[ledger][failures]") {
  TempDir tmp;
  {
    Ledger ledger = Ledger::create(tmp.path());
    ledger.append(body_of(0));
  }
  ChildResult child = run_in_child([&](std::string& report) {
    // A read-only bind mount of the ledger directory: real EROFS, even for root.
    if (!private_mounts()) return kSkipped;
    if (::mount(tmp.path().c_str(), tmp.path().c_str(), nullptr, MS_BIND, nullptr) != 0) return kSkipped;
    if (::mount(nullptr, tmp.path().c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0)
      return kSkipped;
    Ledger ledger = Ledger::open(tmp.path());
    VerifyResult r = ledger.verify();
    if (!r.ok || r.entries != 1) {
      report = "verify on a read-only ledger: " + r.summary();
      return 3;
    }
    if (ledger.entries().size() != 1) return 4;
    try {
      ledger.append(body_of(1));
      return 5;
    } catch (const LedgerError& e) {
      if (e.error_code() != EROFS) {
        report = e.what();
        return 6;
      }
      report = e.what();
    }
    try {
      ledger.objects().put("x");
      return 7;
    } catch (const LedgerError& e) {
      report += std::string("\n") + e.what();
    }
    return 0;
  });
  if (child.status == kSkipped) {
    WARN("skipped: cannot make a read-only bind mount here (needs root or user namespaces)");
    return;
  }
  INFO(child.output);
  REQUIRE(child.status == 0);
  CHECK_THAT(child.output, Catch::Contains("ledger " + tmp.path() + ": read-only file system (EROFS) while appending") &&
                               Catch::Contains("the ledger is unchanged"));
  CHECK_THAT(child.output, Catch::Contains("(EROFS) while storing"));
  CHECK(Ledger::open(tmp.path()).verify().ok);
}

TEST_CASE("a ledger the user may not write (EACCES) refuses appends clearly", "[ledger][failures]") {
  TempDir tmp;
  {
    Ledger ledger = Ledger::create(tmp.path());
    ledger.append(body_of(0));
  }
  ::chmod(tmp.path().c_str(), 0755);  // others may read it
  ChildResult child = run_in_child([&](std::string& report) {
    // chmod does not stop root: as root, become nobody; otherwise drop write permission.
    if (::geteuid() == 0) {
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) return kSkipped;
    } else {
      ::chmod(tmp.path().c_str(), 0555);
      ::chmod((tmp / "entries.jsonl").c_str(), 0444);
      ::chmod((tmp / "lock").c_str(), 0444);
    }
    Ledger ledger = Ledger::open(tmp.path());
    if (!ledger.verify().ok) return 3;
    try {
      ledger.append(body_of(1));
      return 4;
    } catch (const LedgerError& e) {
      report = e.what();
      return e.error_code() == EACCES ? 0 : 5;
    }
  });
  ::chmod(tmp.path().c_str(), 0700);
  ::chmod((tmp / "entries.jsonl").c_str(), 0644);
  ::chmod((tmp / "lock").c_str(), 0644);
  if (child.status == kSkipped) {
    WARN("skipped: cannot drop privileges here");
    return;
  }
  INFO(child.output);
  REQUIRE(child.status == 0);
  CHECK_THAT(child.output, Catch::Contains("permission denied (EACCES) while appending an entry") &&
                               Catch::Contains("the ledger is unchanged"));
  CHECK(Ledger::open(tmp.path()).verify().entries == 1);
}

// ledger_bench: append rate and verify time of the ledger, against a raw
// baseline in the same run. Not a test: run it by hand and quote the output.
//   ledger_bench [--entries N] [--objects M] [--dir PARENT] [--keep]
// Appends N entries (~500-byte checkpoint-like bodies, each listing two of M
// small objects) to a fresh ledger under PARENT (default $TMPDIR or /tmp),
// then verifies it. Baselines: the same lines written with write()+fsync() and
// no hashing/locking (interleaved with the appends in 10 rounds, so both see
// the same load); and the same file read and JSON-parsed without checks (best
// of 3, alternating with verify). Prints a table and one JSON line.
#include <fcntl.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "groklab/ledger/ledger.h"

namespace gl = groklab::ledger;
using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fs_type(const std::string& dir) {
  struct statfs st {};
  if (::statfs(dir.c_str(), &st) != 0) return "unknown";
  switch (static_cast<unsigned long>(st.f_type)) {
    case 0xEF53: return "ext4";
    case 0x01021994: return "tmpfs";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x6969: return "nfs";
    case 0x794C7630: return "overlayfs";
    case 0x65735546: return "fuse";
    default: break;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(st.f_type));
  return buf;
}

// A checkpoint-like entry body of about 500 bytes once "id" and "prev" are added.
json body_of(std::size_t i, const std::vector<std::string>& objects) {
  const double step = static_cast<double>(i);
  return {
      {"kind", "checkpoint"},
      {"time", "2024-05-01T12:34:56.123456Z"},
      {"run", "5f1c0e3a9b7d24c68e0f1a2b3c4d5e6f"},
      {"step", i * 100},
      {"seed", 1234},
      {"metrics",
       {{"train_loss", 1.0 / (1.0 + step)},
        {"test_loss", 2.0 / (1.0 + step * 0.5)},
        {"train_acc", step / (step + 10.0)},
        {"test_acc", step / (step + 1000.0)}}},
      {"env",
       {{"host", "node-17"},
        {"cpu", "AMD EPYC 7763 64-Core Processor"},
        {"threads", 1},
        {"torch", "2.1.2"},
        {"blas", "OpenBLAS 0.3.21 (Haswell)"}}},
      {"objects",
       {{"params", objects[i % objects.size()]}, {"optimizer", objects[(i * 7 + 3) % objects.size()]}}},
  };
}

[[noreturn]] void usage() {
  std::fprintf(stderr, "usage: ledger_bench [--entries N] [--objects M] [--dir PARENT] [--keep]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t n = 100000;
  std::size_t n_objects = 1000;
  const char* tmp_env = std::getenv("TMPDIR");
  std::string parent = tmp_env && *tmp_env ? tmp_env : "/tmp";
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--entries" && i + 1 < argc) {
      n = std::stoul(argv[++i]);
    } else if (a == "--objects" && i + 1 < argc) {
      n_objects = std::stoul(argv[++i]);
    } else if (a == "--dir" && i + 1 < argc) {
      parent = argv[++i];
    } else if (a == "--keep") {
      keep = true;
    } else {
      usage();
    }
  }
  if (n == 0 || n_objects == 0) usage();

  std::string tmpl = parent + "/ledger-bench-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string root = buf.data();
  const std::string ledger_dir = root + "/ledger";
  int status = 0;
  try {
    gl::Ledger ledger = gl::Ledger::create(ledger_dir);

    std::vector<std::string> objects;
    for (std::size_t i = 0; i < n_objects; ++i)
      objects.push_back(ledger.objects().put(std::string(1024, static_cast<char>('a' + i % 26)) +
                                             std::to_string(i)));

    // Appends are timed in interleaved rounds with the baseline so both see the
    // same machine load (a shared machine's fsync latency drifts).
    //  a. Ledger appends: lock, tail check, canonical JSON, hash, one write, fsync.
    //  b. Baseline: the same lines, write() + fsync() each, no hashing or locking.
    const std::string raw_path = root + "/raw.jsonl";
    int fd = ::open(raw_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("open " + raw_path + ": " + std::strerror(errno));
    const std::size_t rounds = std::min<std::size_t>(10, n);
    double append_s = 0, raw_append_s = 0;
    std::size_t done = 0;
    for (std::size_t round = 0; round < rounds; ++round) {
      const std::size_t upto = n * (round + 1) / rounds;
      const auto offset = std::filesystem::file_size(ledger.entries_path());
      auto t0 = Clock::now();
      for (; done < upto; ++done) ledger.append(body_of(done, objects));
      append_s += seconds_since(t0);

      std::vector<std::string> lines;
      {
        std::ifstream in(ledger.entries_path(), std::ios::binary);
        in.seekg(static_cast<std::streamoff>(offset));
        for (std::string line; std::getline(in, line);) lines.push_back(line + "\n");
      }
      t0 = Clock::now();
      for (const auto& line : lines) {
        if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size()) || ::fsync(fd) != 0)
          throw std::runtime_error("baseline write failed: " + std::string(std::strerror(errno)));
      }
      raw_append_s += seconds_since(t0);
    }
    ::close(fd);
    const auto file_bytes = std::filesystem::file_size(ledger.entries_path());

    // Verify against a read+parse baseline, alternating, best of 3 each.
    //  c. Verify: every line parsed, canonical, re-hashed, chained; objects re-hashed.
    //  d. Baseline: read the same file and parse each line, no checks.
    double verify_s = 1e300, parse_only_s = 1e300;
    for (int rep = 0; rep < 3; ++rep) {
      auto t0 = Clock::now();
      gl::VerifyResult r = ledger.verify();
      verify_s = std::min(verify_s, seconds_since(t0));
      if (!r.ok || r.entries != n) throw std::runtime_error("verify failed: " + r.summary());

      t0 = Clock::now();
      std::size_t parsed = 0;
      std::ifstream in(raw_path, std::ios::binary);
      for (std::string line; std::getline(in, line);) parsed += json::parse(line).size() > 0;
      parse_only_s = std::min(parse_only_s, seconds_since(t0));
      if (parsed != n) throw std::runtime_error("baseline parse count mismatch");
    }

    const double avg_line = static_cast<double>(file_bytes) / static_cast<double>(n);
    const std::string fs = fs_type(root);
    std::printf("ledger_bench: %zu entries (avg %.0f bytes/line), %zu objects, %s file system at %s\n", n,
                avg_line, n_objects, fs.c_str(), root.c_str());
    std::printf("%-34s %10s %14s\n", "phase", "seconds", "entries/s");
    std::printf("%-34s %10.3f %14.0f\n", "ledger append (lock+hash+fsync)", append_s, n / append_s);
    std::printf("%-34s %10.3f %14.0f\n", "baseline write+fsync", raw_append_s, n / raw_append_s);
    std::printf("%-34s %10.2fx\n", "append cost vs baseline", append_s / raw_append_s);
    std::printf("%-34s %10.3f %14.0f\n", "ledger verify (all checks)", verify_s, n / verify_s);
    std::printf("%-34s %10.3f %14.0f\n", "baseline read+parse", parse_only_s, n / parse_only_s);
    std::printf("%-34s %10.2fx\n", "verify cost vs baseline", verify_s / parse_only_s);
    json out = {{"bench", "ledger"},
                {"entries", n},
                {"objects", n_objects},
                {"avg_line_bytes", avg_line},
                {"fs", fs},
                {"append_s", append_s},
                {"append_per_s", n / append_s},
                {"baseline_append_s", raw_append_s},
                {"baseline_append_per_s", n / raw_append_s},
                {"append_ratio", append_s / raw_append_s},
                {"verify_s", verify_s},
                {"verify_per_s", n / verify_s},
                {"baseline_parse_s", parse_only_s},
                {"verify_ratio", verify_s / parse_only_s}};
    std::printf("%s\n", out.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ledger_bench: %s\n", e.what());
    status = 1;
  }
  if (!keep) {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  } else {
    std::printf("kept %s\n", root.c_str());
  }
  return status;
}

// Helpers for the ledger tests: a temp directory per test, file byte access,
// and running code in a forked child (for rlimits, mounts and uid changes that
// must not touch the test process).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace groklab::ledger::test {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/groklab-ledger-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

inline void append_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out << bytes;
}

// XORs one byte of a file in place (chmods it writable first, restoring the mode).
inline void xor_byte(const std::string& path, std::size_t pos, unsigned char mask) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  ::chmod(path.c_str(), 0644);
  int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  unsigned char c = 0;
  if (::pread(fd, &c, 1, static_cast<off_t>(pos)) != 1) throw std::runtime_error("pread " + path);
  c ^= mask;
  if (::pwrite(fd, &c, 1, static_cast<off_t>(pos)) != 1) throw std::runtime_error("pwrite " + path);
  ::close(fd);
  ::chmod(path.c_str(), st.st_mode & 07777);
}

// What a forked child reported.
struct ChildResult {
  int status = -1;     // exit status, or 128+signal
  std::string output;  // what the child wrote to its report string
};

// Runs FN in a forked child; FN returns the exit status and may fill REPORT,
// which comes back through a pipe. Exceptions become status 99 with what().
inline ChildResult run_in_child(const std::function<int(std::string& report)>& fn) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    std::string report;
    int code = 0;
    try {
      code = fn(report);
    } catch (const std::exception& e) {
      report += std::string("exception: ") + e.what();
      code = 99;
    } catch (...) {
      report += "unknown exception";
      code = 99;
    }
    const char* p = report.data();
    std::size_t left = report.size();
    while (left > 0) {
      ssize_t n = ::write(fds[1], p, left);
      if (n <= 0) break;
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    ::close(fds[1]);
    ::_exit(code);
  }
  ::close(fds[1]);
  ChildResult r;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    r.output.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

// Files in DIR (non-recursive); empty if DIR does not exist.
inline std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) out.push_back(e.path().filename());
  return out;
}

// Status a child uses to say "this environment cannot run the sub-case".
constexpr int kSkipped = 77;

}  // namespace groklab::ledger::test

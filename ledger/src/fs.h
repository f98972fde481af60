// Internal POSIX helpers for the ledger: RAII fds, whole writes, fsync of
// directories, the cross-process append lock, and chunked line reading.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>

namespace groklab::ledger::detail {

// An OS call failed with errno ERR; converted to LedgerError by the caller,
// which knows which ledger and which operation it was.
struct SysError {
  int err;           // errno
  std::string what;  // e.g. "write /x/entries.jsonl"
};

// An owned file descriptor, closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset();

 private:
  int fd_ = -1;
};

// Opens PATH with FLAGS (O_CLOEXEC added); throws SysError on failure.
Fd open_file(const std::string& path, int flags, unsigned mode = 0644);

// Writes all of DATA at OFFSET, retrying short writes and EINTR; throws SysError.
void pwrite_all(int fd, const char* data, std::size_t size, off_t offset, const std::string& path);

// Writes all of DATA at the current position; throws SysError.
void write_all(int fd, const char* data, std::size_t size, const std::string& path);

// Reads exactly SIZE bytes at OFFSET into a string; throws SysError (EIO on early EOF).
std::string pread_exact(int fd, off_t offset, std::size_t size, const std::string& path);

// fsyncs FD; throws SysError.
void fsync_fd(int fd, const std::string& path);

// fsyncs the directory DIR so renames/creations in it are durable; throws SysError.
void fsync_dir(const std::string& dir);

// Creates directory DIR if missing (parent must exist); returns true if it was
// created (the caller then fsyncs the parent). Throws SysError.
bool make_dir(const std::string& dir);

// Returns the size of the open file; throws SysError.
off_t file_size(int fd, const std::string& path);

// Returns the directory part of PATH ("." if none).
std::string parent_dir(const std::string& path);

// The process-wide mutex that serialises every open/close/lock of ledger lock
// files: fcntl record locks are per process (threads would share them) and
// closing any fd of the file drops them, so all of that happens under it.
std::mutex& lock_file_mutex();

// Holds the ledger's fcntl record lock (exclusive or shared) and the process
// mutex. Exclusive: opens/creates the lock file read-write and blocks in
// F_SETLKW. Shared with best_effort: if the lock file cannot be opened or
// created (read-only ledger), proceeds without a lock. Throws SysError.
class LockGuard {
 public:
  LockGuard(const std::string& lock_path, bool exclusive, bool best_effort);
  ~LockGuard();
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;

 private:
  std::unique_lock<std::mutex> process_lock_;
  Fd fd_;
};

// Reads lines of [0, limit) of an fd in chunks. next() returns false at the
// end; a final piece without '\n' is returned with complete == false.
class LineReader {
 public:
  LineReader(int fd, off_t limit, std::string path);
  // Sets LINE to the next line (without the newline; valid until the next
  // call); returns false when done.
  bool next(std::string_view& line, bool& complete);
  // 1-based number of the line last returned.
  std::size_t line_number() const { return line_no_; }
  // Offset of the start of the line last returned.
  off_t line_offset() const { return line_off_; }

 private:
  bool fill();
  int fd_;
  off_t limit_;
  off_t file_pos_ = 0;   // offset of buf_[0]
  std::string path_;
  std::string buf_;
  std::size_t pos_ = 0;  // read position in buf_
  std::size_t line_no_ = 0;
  off_t line_off_ = 0;
};

}  // namespace groklab::ledger::detail

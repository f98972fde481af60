#include "fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "groklab/ledger/error.h"

namespace groklab::ledger {

std::string describe_errno(int error_code) {
  switch (error_code) {
    case ENOSPC: return "disk full (ENOSPC)";
    case EFBIG: return "file size limit exceeded (EFBIG)";
    case EDQUOT: return "disk quota exceeded (EDQUOT)";
    case EROFS: return "read-only file system (EROFS)";
    case EACCES: return "permission denied (EACCES)";
    case EPERM: return "operation not permitted (EPERM)";
    case EIO: return "I/O error (EIO)";
    case ENOENT: return "no such file or directory (ENOENT)";
    case ENOTDIR: return "not a directory (ENOTDIR)";
    case ENOLCK: return "no locks available (ENOLCK)";
    default: break;
  }
  std::string out = std::strerror(error_code);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* name = strerrorname_np(error_code)) return out + " (" + name + ")";
#endif
  return out + " (errno " + std::to_string(error_code) + ")";
}

namespace detail {

void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Fd open_file(const std::string& path, int flags, unsigned mode) {
  for (;;) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC, static_cast<mode_t>(mode));
    if (fd >= 0) return Fd(fd);
    if (errno != EINTR) throw SysError{errno, "open " + path};
  }
}

void pwrite_all(int fd, const char* data, std::size_t size, off_t offset, const std::string& path) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SysError{errno, "write " + path};
    }
    if (n == 0) throw SysError{EIO, "write " + path};
    data += n;
    size -= static_cast<std::size_t>(n);
    offset += n;
  }
}

void write_all(int fd, const char* data, std::size_t size, const std::string& path) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SysError{errno, "write " + path};
    }
    if (n == 0) throw SysError{EIO, "write " + path};
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

std::string pread_exact(int fd, off_t offset, std::size_t size, const std::string& path) {
  std::string out(size, '\0');
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out.data() + done, size - done, offset + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SysError{errno, "read " + path};
    }
    if (n == 0) throw SysError{EIO, "read " + path + " (file shrank while reading)"};
    done += static_cast<std::size_t>(n);
  }
  return out;
}

void fsync_fd(int fd, const std::string& path) {
  while (::fsync(fd) != 0) {
    if (errno != EINTR) throw SysError{errno, "fsync " + path};
  }
}

void fsync_dir(const std::string& dir) {
  Fd fd = open_file(dir, O_RDONLY | O_DIRECTORY);
  // Some file systems refuse fsync on directories (EINVAL); nothing more can be done there.
  while (::fsync(fd.get()) != 0) {
    if (errno == EINTR) continue;
    if (errno == EINVAL) return;
    throw SysError{errno, "fsync " + dir};
  }
}

bool make_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) == 0) return true;
  if (errno == EEXIST) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return false;
    throw SysError{ENOTDIR, "mkdir " + dir};
  }
  throw SysError{errno, "mkdir " + dir};
}

off_t file_size(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw SysError{errno, "stat " + path};
  return st.st_size;
}

std::string parent_dir(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::mutex& lock_file_mutex() {
  static std::mutex m;
  return m;
}

LockGuard::LockGuard(const std::string& lock_path, bool exclusive, bool best_effort)
    : process_lock_(lock_file_mutex()) {
  try {
    fd_ = open_file(lock_path, (exclusive ? O_RDWR : O_RDONLY) | O_CREAT, 0644);
  } catch (const SysError& e) {
    if (!exclusive && best_effort) {
      // A read-only ledger nobody can append to: no lock is needed to read it.
      if (e.err == EROFS || e.err == EACCES || e.err == EPERM) return;
    }
    throw;
  }
  struct flock fl {};
  fl.l_type = exclusive ? F_WRLCK : F_RDLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 0;  // the whole file
  while (::fcntl(fd_.get(), F_SETLKW, &fl) != 0) {
    if (errno == EINTR) continue;
    int err = errno;
    if (!exclusive && best_effort && (err == ENOLCK || err == EOPNOTSUPP)) {
      fd_.reset();
      return;
    }
    throw SysError{err, "lock " + lock_path};
  }
}

LockGuard::~LockGuard() {
  // Closing the fd releases the record lock; still under the process mutex.
  fd_.reset();
}

LineReader::LineReader(int fd, off_t limit, std::string path)
    : fd_(fd), limit_(limit), path_(std::move(path)) {}

bool LineReader::fill() {
  off_t end = file_pos_ + static_cast<off_t>(buf_.size());
  if (end >= limit_) return false;
  if (pos_ > 0) {
    buf_.erase(0, pos_);
    file_pos_ += static_cast<off_t>(pos_);
    pos_ = 0;
  }
  constexpr off_t chunk = 1 << 20;
  off_t want = std::min(chunk, limit_ - end);
  buf_ += pread_exact(fd_, end, static_cast<std::size_t>(want), path_);
  return true;
}

bool LineReader::next(std::string_view& line, bool& complete) {
  for (;;) {
    auto nl = buf_.find('\n', pos_);
    if (nl != std::string::npos) {
      line = std::string_view(buf_).substr(pos_, nl - pos_);
      line_off_ = file_pos_ + static_cast<off_t>(pos_);
      pos_ = nl + 1;
      ++line_no_;
      complete = true;
      return true;
    }
    if (!fill()) {
      if (pos_ >= buf_.size()) return false;
      line = std::string_view(buf_).substr(pos_);
      line_off_ = file_pos_ + static_cast<off_t>(pos_);
      pos_ = buf_.size();
      ++line_no_;
      complete = false;
      return true;
    }
  }
}

}  // namespace detail
}  // namespace groklab::ledger

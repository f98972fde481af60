#include "groklab/ledger/object_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <random>
#include <stdexcept>
#include <vector>

#include "fs.h"
#include "groklab/ledger/canonical.h"
#include "groklab/ledger/error.h"
#include "groklab/ledger/hash.h"

namespace groklab::ledger {
namespace {

using detail::Fd;
using detail::SysError;

void require_hash(const std::string& hash) {
  if (!is_hash(hash))
    throw std::invalid_argument("not an object hash (want 32 lowercase hex digits): '" + hash + "'");
}

std::string human_size(std::size_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

// A unique temp file name in objects/tmp.
std::string temp_name(const std::string& tmp_dir) {
  static std::atomic<unsigned> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[64];
  std::snprintf(buf, sizeof buf, "/%ld-%u-%016llx.tmp", static_cast<long>(::getpid()),
                counter.fetch_add(1), static_cast<unsigned long long>(rng()));
  return tmp_dir + buf;
}

// A temp object file that is unlinked unless committed.
class TempFile {
 public:
  explicit TempFile(const std::string& tmp_dir) : path_(temp_name(tmp_dir)) {
    fd_ = detail::open_file(path_, O_WRONLY | O_CREAT | O_EXCL, 0444);
  }
  ~TempFile() {
    if (!committed_) {
      fd_.reset();
      ::unlink(path_.c_str());
    }
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  // fsyncs, closes and renames the file to FINAL.
  void commit(const std::string& final_path) {
    detail::fsync_fd(fd_.get(), path_);
    int fd = fd_.release();
    if (::close(fd) != 0 && errno != EINTR) throw SysError{errno, "close " + path_};
    if (::rename(path_.c_str(), final_path.c_str()) != 0) throw SysError{errno, "rename " + path_};
    committed_ = true;
  }

 private:
  std::string path_;
  Fd fd_;
  bool committed_ = false;
};

// Regular file size, or -1 if it does not exist.
long long stat_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<long long>(st.st_size);
}

}  // namespace

ObjectStore::ObjectStore(std::string ledger_dir)
    : ledger_dir_(std::move(ledger_dir)), dir_(ledger_dir_ + "/objects") {}

std::string ObjectStore::path(const std::string& hash) const {
  require_hash(hash);
  return dir_ + "/" + hash.substr(0, 2) + "/" + hash.substr(2);
}

bool ObjectStore::exists(const std::string& hash) const { return stat_size(path(hash)) >= 0; }

// Writes an object through a temp file. WRITE(fd, tmp_path) fills the temp
// file and returns the hash of what it wrote.
template <typename WriteFn>
static std::string store_object(const std::string& ledger_dir, const std::string& objects_dir,
                                const std::string& hash, const std::string& what, WriteFn write) {
  const std::string fan = objects_dir + "/" + hash.substr(0, 2);
  const std::string final_path = fan + "/" + hash.substr(2);
  try {
    if (detail::make_dir(objects_dir)) detail::fsync_dir(ledger_dir);
    const std::string tmp_dir = objects_dir + "/tmp";
    if (detail::make_dir(tmp_dir)) detail::fsync_dir(objects_dir);
    bool new_fan = detail::make_dir(fan);
    if (new_fan) detail::fsync_dir(objects_dir);
    TempFile tmp(tmp_dir);
    std::string written = write(tmp.fd(), tmp.path());
    if (written != hash)
      throw LedgerError("ledger " + ledger_dir + ": " + what +
                        " changed while being stored (hashed " + hash + ", then read " + written +
                        "); nothing was stored");
    tmp.commit(final_path);
    detail::fsync_dir(fan);
  } catch (const SysError& e) {
    throw LedgerError("ledger " + ledger_dir + ": " + describe_errno(e.err) + " while storing " +
                          what + " as object " + hash + " (" + e.what +
                          "); the ledger is unchanged, no partial object was left",
                      e.err);
  }
  return hash;
}

std::string ObjectStore::put(const void* data, std::size_t size) {
  std::string hash = hash_bytes(data, size);
  const std::string final_path = path(hash);
  // Idempotent; a same-named file of the wrong size (damaged) is replaced.
  if (stat_size(final_path) == static_cast<long long>(size)) return hash;
  return store_object(ledger_dir_, dir_, hash, human_size(size) + " of bytes",
                      [&](int fd, const std::string& tmp) {
                        detail::write_all(fd, static_cast<const char*>(data), size, tmp);
                        return hash;
                      });
}

std::string ObjectStore::put_file(const std::string& file) {
  std::string hash;
  try {
    hash = hash_file(file);
  } catch (const std::runtime_error& e) {
    throw LedgerError("ledger " + ledger_dir_ + ": cannot store file: " + e.what());
  }
  long long size = stat_size(file);
  if (size >= 0 && stat_size(path(hash)) == size) return hash;
  return store_object(
      ledger_dir_, dir_, hash, "file " + file, [&](int out, const std::string& tmp) {
        Fd in = detail::open_file(file, O_RDONLY);
        Hasher h;
        std::vector<char> buf(1 << 20);
        for (;;) {
          ssize_t n = ::read(in.get(), buf.data(), buf.size());
          if (n < 0) {
            if (errno == EINTR) continue;
            throw SysError{errno, "read " + file};
          }
          if (n == 0) break;
          h.update(buf.data(), static_cast<std::size_t>(n));
          detail::write_all(out, buf.data(), static_cast<std::size_t>(n), tmp);
        }
        return h.hex();
      });
}

std::optional<std::string> ObjectStore::check(const std::string& hash) const {
  const std::string p = path(hash);
  std::string actual;
  try {
    actual = hash_file(p);
  } catch (const std::runtime_error& e) {
    if (stat_size(p) < 0 && errno == ENOENT) return "missing (" + p + ")";
    return std::string("unreadable: ") + e.what();
  }
  if (actual != hash) return "corrupt: its content hashes to " + actual + " (" + p + ")";
  return std::nullopt;
}

std::string ObjectStore::get(const std::string& hash) const {
  const std::string p = path(hash);
  std::string bytes;
  try {
    Fd fd = detail::open_file(p, O_RDONLY);
    off_t size = detail::file_size(fd.get(), p);
    bytes = detail::pread_exact(fd.get(), 0, static_cast<std::size_t>(size), p);
  } catch (const SysError& e) {
    if (e.err == ENOENT) throw LedgerError("ledger " + ledger_dir_ + ": object " + hash + " not found", e.err);
    throw LedgerError("ledger " + ledger_dir_ + ": " + describe_errno(e.err) + " reading object " +
                          hash + " (" + e.what + ")",
                      e.err);
  }
  std::string actual = hash_bytes(bytes);
  if (actual != hash)
    throw LedgerError("ledger " + ledger_dir_ + ": object " + hash +
                      " is corrupt: its content hashes to " + actual + " (" + p + ")");
  return bytes;
}

}  // namespace groklab::ledger

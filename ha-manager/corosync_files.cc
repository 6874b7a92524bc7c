// The files of a Corosync setup: the authkey (fresh random bytes) and corosync.conf, each
// written atomically (corosync_conf.h).
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string_view>

#include "ferry/base/unique_fd.h"
#include "ferry/ha/corosync_conf.h"

namespace ferry::ha {
namespace {

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

Status FillRandom(unsigned char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::getrandom(buf + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return ErrnoError("getrandom");
    got += static_cast<size_t>(r);
  }
  return Status::Ok();
}

Status WriteAll(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    const ssize_t w = ::write(fd, data.data(), data.size());
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return ErrnoError("write " + what);
    data.remove_prefix(static_cast<size_t>(w));
  }
  return Status::Ok();
}

Status SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("open " + dir);
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + dir);
  return Status::Ok();
}

// A file beside `path` (same directory, so link/rename stay atomic) holding `data`, created
// with `mode`, synced. Returns its name; on failure nothing is left behind.
Result<std::string> WriteTemporary(const std::string& path, std::string_view data, mode_t mode) {
  std::string tmp = path + ".tmp.XXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("create a temporary file beside " + path);
  Status st;
  // mkostemp creates 0600; narrow or widen to `mode` before a byte is written.
  if (::fchmod(fd.get(), mode) != 0) st = ErrnoError("chmod " + tmp);
  if (st.ok()) st = WriteAll(fd.get(), data, tmp);
  if (st.ok() && ::fsync(fd.get()) != 0) st = ErrnoError("fsync " + tmp);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  return tmp;
}

}  // namespace

Status WriteCorosyncAuthkey(const std::string& path, const AuthkeyOptions& options) {
  if (path.empty()) return InvalidArgument("authkey: the path is empty");
  if (options.mode != 0400 && options.mode != 0600) {
    return InvalidArgument("authkey: mode must be 0400 or 0600 (a key readable by others is no key)");
  }
  struct stat existing;
  if (!options.overwrite && ::lstat(path.c_str(), &existing) == 0) {
    return Refused("authkey: " + path + " exists; replacing it needs overwrite (and the new key on every host)");
  }
  std::array<unsigned char, kCorosyncAuthkeyBytes> key;
  FERRY_RETURN_IF_ERROR(FillRandom(key.data(), key.size()));
  auto tmp = WriteTemporary(path, std::string_view(reinterpret_cast<const char*>(key.data()), key.size()), options.mode);
  ::explicit_bzero(key.data(), key.size());
  if (!tmp.ok()) return tmp.status().Annotate("authkey");
  Status st;
  if (options.overwrite) {
    if (::rename(tmp->c_str(), path.c_str()) != 0) {
      st = ErrnoError("authkey: rename to " + path);
      ::unlink(tmp->c_str());
    }
  } else {
    // link() never replaces: a key that appeared since the check above is still refused.
    if (::link(tmp->c_str(), path.c_str()) != 0) {
      st = errno == EEXIST ? Refused("authkey: " + path + " exists; replacing it needs overwrite")
                           : ErrnoError("authkey: link to " + path);
    }
    ::unlink(tmp->c_str());  // the key keeps its other name (or was refused)
  }
  if (!st.ok()) return st;
  return SyncDir(DirOf(path)).Annotate("authkey");
}

Status CheckCorosyncAuthkey(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoError("authkey: " + path);
  if (!S_ISREG(st.st_mode)) return InvalidArgument("authkey: " + path + " is not a regular file");
  if (st.st_size < 128 || st.st_size > 4096) {
    return InvalidArgument("authkey: " + path + " has " + std::to_string(st.st_size) +
                           " bytes; corosync takes 128..4096");
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return InvalidArgument("authkey: " + path + " has mode " + mode + "; group and others must not read it (chmod 0400)");
  }
  return Status::Ok();
}

Status WriteCorosyncConf(const std::string& path, const std::string& text) {
  if (path.empty()) return InvalidArgument("corosync.conf: the path is empty");
  auto tmp = WriteTemporary(path, text, 0644);
  if (!tmp.ok()) return tmp.status().Annotate("corosync.conf");
  if (::rename(tmp->c_str(), path.c_str()) != 0) {
    Status st = ErrnoError("corosync.conf: rename to " + path);
    ::unlink(tmp->c_str());
    return st;
  }
  return SyncDir(DirOf(path)).Annotate("corosync.conf");
}

}  // namespace ferry::ha

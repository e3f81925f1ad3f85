// Small filesystem helpers: RAII file descriptors, whole-file reads and atomic writes.
#pragma once

#include <string>

#include "common/status.h"

namespace stas {

// Owns a POSIX file descriptor; closes it on destruction.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd = -1) : fd_(fd) {}
  ~FileDescriptor();
  FileDescriptor(FileDescriptor&& o) noexcept : fd_(o.release()) {}
  FileDescriptor& operator=(FileDescriptor&& o) noexcept;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

Result<std::string> ReadFile(const std::string& path);

// Writes `contents` to a temporary file beside `path`, fsyncs it and renames it over `path`, so a
// reader sees either the old file or the whole new one, never a part.
Status WriteFileAtomically(const std::string& path, const std::string& contents);

// Renames `from` to `to` only if `to` does not exist yet (link + unlink). AlreadyExists is reported
// as kAborted so callers can tell "someone else committed first" from an I/O error.
Status RenameNoReplace(const std::string& from, const std::string& to);

}  // namespace stas

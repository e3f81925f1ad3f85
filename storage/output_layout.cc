#include "storage/output_layout.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <regex>

#include "common/fs.h"
#include "common/json.h"
#include "common/log.h"
#include "common/text.h"
#include "storage/mp4_writer.h"

namespace stas::storage {

namespace fs = std::filesystem;

Status ValidateOutputComponent(const std::string& name, const std::string& what) {
  if (name.empty()) return InvalidArgument(what + " is empty");
  if (name.size() > 200) return InvalidArgument(what + " is longer than 200 bytes");
  if (name == "." || name == "..") return InvalidArgument(what + " must not be '.' or '..'");
  if (name[0] == '.') return InvalidArgument(what + " must not start with '.' (reserved for temporary files)");
  for (char c : name) {
    if (c == '/' || c == '\\') return InvalidArgument(what + " '" + name + "' must not contain path separators");
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return InvalidArgument(what + " must not contain control characters");
  }
  if (!IsValidUtf8(name)) return InvalidArgument(what + " must be valid UTF-8");
  return Status::Ok();
}

bool LooksLikeJobId(const std::string& name) {
  return name.size() == 32 && name.find_first_not_of("0123456789abcdef") == std::string::npos;
}

OutputLayout::OutputLayout(std::string storage_root) : root_(std::move(storage_root)) {}

Result<OutputPaths> OutputLayout::PathsFor(const std::string& job_id, const std::string& dataset,
                                           const std::string& output_name) const {
  if (root_.empty()) return InvalidArgument("storage folder is not set");
  STAS_RETURN_IF_ERROR(ValidateOutputComponent(job_id, "job id"));
  const std::string group = dataset.empty() ? "single" : dataset;
  const std::string stem = output_name.empty() ? job_id : output_name;
  STAS_RETURN_IF_ERROR(ValidateOutputComponent(group, "dataset name"));
  STAS_RETURN_IF_ERROR(ValidateOutputComponent(stem, "output name"));
  OutputPaths p;
  p.folder = (fs::path(root_) / group).string();
  p.video = (fs::path(p.folder) / (stem + ".mp4")).string();
  p.manifest = (fs::path(p.folder) / (stem + ".json")).string();
  return p;
}

Status OutputLayout::EnsureFolder(const OutputPaths& paths) {
  const fs::path folder(paths.folder);
  const std::string root = folder.parent_path().string();
  const std::string name = folder.filename().string();
  std::error_code ec;
  fs::create_directories(root, ec);  // the root itself is the operator's choice (it may be a link)
  if (ec) return IoError("cannot create " + root + ": " + ec.message());
  FileDescriptor root_fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (root_fd.get() < 0) return IoError("cannot open " + root + ": " + std::strerror(errno));
  if (::mkdirat(root_fd.get(), name.c_str(), 0755) != 0 && errno != EEXIST)
    return IoError("cannot create " + paths.folder + ": " + std::strerror(errno));
  FileDescriptor folder_fd(::openat(root_fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (folder_fd.get() < 0)
    return InvalidArgument("output folder " + paths.folder + " is not a plain folder (" + std::strerror(errno) +
                           "): symbolic links are not followed");
  return Status::Ok();
}

const char* CommitOutcomeName(CommitOutcome outcome) {
  return outcome == CommitOutcome::kCommitted ? "committed" : "already committed";
}

bool IsCommitted(const OutputPaths& paths) {
  struct stat st{};
  return ::stat(paths.video.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

Result<CommitOutcome> CommitOutput(const OutputPaths& paths, const std::string& temp_video, const Manifest& manifest) {
  Manifest m = manifest;
  m.video_file = fs::path(paths.video).filename().string();
  const Status renamed = RenameNoReplace(temp_video, paths.video);
  if (!renamed.ok()) {
    ::unlink(temp_video.c_str());
    if (renamed.code() != StatusCode::kAborted) return renamed.WithContext("commit of " + paths.video);
    // Someone else's video is in place. Repair a missing manifest (their process may have died
    // between the two renames); never overwrite theirs.
    std::error_code ec;
    if (!fs::exists(paths.manifest, ec)) {
      const std::string temp_manifest = TemporaryPathFor(paths.manifest);
      STAS_RETURN_IF_ERROR(WriteFileAtomically(temp_manifest, ManifestText(m)));
      const Status st = RenameNoReplace(temp_manifest, paths.manifest);
      if (!st.ok()) ::unlink(temp_manifest.c_str());
      if (!st.ok() && st.code() != StatusCode::kAborted) return st;
    }
    STAS_LOG_INFO("commit: {} was already committed by another run; discarded this run's copy", paths.video);
    return CommitOutcome::kAlreadyCommitted;
  }
  STAS_RETURN_IF_ERROR(WriteManifest(paths.manifest, m).WithContext("video committed, manifest failed"));
  return CommitOutcome::kCommitted;
}

Result<int> RemoveStaleTemporaryFiles(const std::string& folder, double min_age_s) {
  // Hidden temporaries of Mp4Writer (".name.tmp.PID.RAND") and WriteFileAtomically's
  // ("name.json.tmp.PID.RAND"); never a committed output name.
  static const std::regex kTemp(R"(^(\..+\.tmp\.\d+\.\d+|.+\.(json|mp4|safetensors)\.tmp\.\d+\.\d+)$)");
  std::error_code ec;
  fs::directory_iterator it(folder, ec);
  if (ec) return IoError("cannot list " + folder + ": " + ec.message());
  const auto now = fs::file_time_type::clock::now();
  int removed = 0;
  for (const auto& entry : it) {
    const std::string name = entry.path().filename().string();
    if (!std::regex_match(name, kTemp) || !entry.is_regular_file(ec)) continue;
    const auto mtime = fs::last_write_time(entry.path(), ec);
    if (ec) continue;
    const double age = std::chrono::duration<double>(now - mtime).count();
    if (age < min_age_s) continue;
    if (fs::remove(entry.path(), ec)) ++removed;
  }
  return removed;
}

}  // namespace stas::storage

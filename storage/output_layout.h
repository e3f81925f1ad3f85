// Where finished videos live, and the commit that puts them there exactly once.
//
//   <storage>/<dataset or "single">/<output_name or job id>.mp4
//   <storage>/<dataset or "single">/<output_name or job id>.json   (the manifest)
//
// A job may run twice (a lease expired while its first group was still working). Both runs write to
// private temporary files and then CommitOutput: the first to rename its MP4 into place wins; the
// second sees kAlreadyCommitted and its temporary files are removed, so there is never a duplicate
// or a half-written output. The MP4 is the commit marker; the manifest follows it.
#pragma once

#include <string>

#include "common/status.h"
#include "storage/manifest.h"

namespace stas::storage {

struct OutputPaths {
  std::string folder;    // <storage>/<dataset or "single">
  std::string video;     // <folder>/<stem>.mp4
  std::string manifest;  // <folder>/<stem>.json
};

// Checks a dataset or output name: non-empty, at most 200 bytes, no path separators, no control
// characters, not "." or "..", not starting with '.' (hidden names are reserved for temporary files).
// The one name check of the project: the coordinator (job specs), the worker and the layout use it.
// Names must also be valid UTF-8.
Status ValidateOutputComponent(const std::string& name, const std::string& what);
// True for names of the job-id form (32 lower-case hex characters): an output name must not be one.
bool LooksLikeJobId(const std::string& name);

class OutputLayout {
 public:
  explicit OutputLayout(std::string storage_root);
  const std::string& root() const { return root_; }

  // Paths of a job's outputs. `dataset` and `output_name` may be empty (-> "single", the job id).
  // InvalidArgument for names that would escape the folder.
  Result<OutputPaths> PathsFor(const std::string& job_id, const std::string& dataset,
                               const std::string& output_name) const;
  // Creates the job's folder (and the root) when missing. The dataset folder is made and opened
  // relative to the root without following symbolic links: a link planted there is refused instead of
  // leading the worker's writes out of the storage folder.
  static Status EnsureFolder(const OutputPaths& paths);

 private:
  std::string root_;
};

enum class CommitOutcome {
  kCommitted,         // this call put the video (and manifest) in place
  kAlreadyCommitted,  // another run committed first; this run's files were discarded
};
const char* CommitOutcomeName(CommitOutcome outcome);

// Publishes a finished video: `temp_video` (a file in paths.folder, e.g. from
// Mp4Writer::FinishToTemp) is renamed to paths.video only if no video is there yet; then the manifest
// is written atomically beside it. When a video already exists, `temp_video` is removed and the
// existing manifest is kept (it is written only if missing, e.g. after a crash between the two
// renames). On an I/O error `temp_video` is removed too: the function never leaves temporary files.
Result<CommitOutcome> CommitOutput(const OutputPaths& paths, const std::string& temp_video, const Manifest& manifest);

// True when the job's video exists (the commit marker).
bool IsCommitted(const OutputPaths& paths);

// Removes temporary files (hidden ".<name>.tmp.*") older than `min_age_s` seconds from `folder`, left
// by processes that died mid-write. Returns how many were removed.
Result<int> RemoveStaleTemporaryFiles(const std::string& folder, double min_age_s);

}  // namespace stas::storage

// Latent checkpoints: the denoising state of a running job, saved every few steps so a job that is
// re-dispatched (its worker group died or lost its lease) resumes instead of starting over.
//
//   <storage>/.checkpoints/<job id>.safetensors
//     tensors:  "latents", "scheduler.<name>" for each scheduler state tensor
//     metadata: format, job_id, step (steps completed), num_steps
//
// Saves are atomic (temp + rename): a reader sees the previous checkpoint or the new one. The job id is
// a content hash of everything that changes the video, so a checkpoint can only resume its own job.
// Thread-safe as far as the file system is: distinct jobs never share a file.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>

#include "common/status.h"

namespace stas::storage {

struct LatentCheckpoint {
  std::string job_id;
  int step = 0;       // denoising steps completed; the next step to run
  int num_steps = 0;  // total steps of the run
  at::Tensor latents;
  std::map<std::string, at::Tensor> scheduler_state;  // the sampler's history, by name
};

class LatentCheckpointStore {
 public:
  explicit LatentCheckpointStore(std::string storage_root);

  std::string folder() const;
  std::string PathFor(const std::string& job_id) const;

  // Writes (or replaces) the job's checkpoint; tensors are copied to the CPU.
  Status Save(const LatentCheckpoint& checkpoint) const;
  // NotFound when the job has no checkpoint; InvalidArgument when the file is damaged or belongs to
  // another job or format.
  Result<LatentCheckpoint> Load(const std::string& job_id) const;
  bool Exists(const std::string& job_id) const;
  // Deletes the job's checkpoint (after its output is committed). OK when there is none.
  Status Remove(const std::string& job_id) const;

 private:
  std::string root_;
};

}  // namespace stas::storage

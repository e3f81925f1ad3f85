// The JobExecutor of `stas worker`: a Renderer (worker/renderer.h) loaded once per rank, with the
// rank's share of the group's parallelism (parallel::ParallelRuntime: Ulysses sequence parallelism
// and CFG-parallel) when the group has more than one rank.
//
// Per job: the spec is checked against the loaded model (Renderer::Check), rendered with latent
// checkpoints under the storage root (resumed when one exists for the job), and the finished MP4 is
// left staged at a temporary name in the job's output folder for the worker to commit.
#pragma once

#include <memory>

#include "common/status.h"
#include "worker/worker_process.h"

namespace stas::worker {

// Loads the model named by options.model on this rank's device. Collective over the group when
// `groups` is not null (every rank calls it). InvalidArgument / NotFound for a bad model or a
// sequence-parallel degree the model's heads do not divide by.
Result<std::unique_ptr<JobExecutor>> MakeRendererExecutor(const WorkerOptions& options,
                                                          const parallel::ProcessGroups* groups);

// True when a job for `job_model` can run on a group that loaded `worker_model`: the same string, or
// the same final path component ("/a/Wan2.1-T2V-1.3B" and "/b/Wan2.1-T2V-1.3B/"), which is how the
// coordinator matches them too.
bool SameModel(const std::string& job_model, const std::string& worker_model);

}  // namespace stas::worker

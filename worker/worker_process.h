// The `stas worker` process: one MPI rank of a rendering group.
//
// An MPI world of N ranks is cut into N / G groups of G = sp x cfg consecutive ranks
// (parallel::ProcessGroups). Rank 0 of each group is its leader: it alone talks to the coordinator
// (CoordinatorLink), receives a job, and broadcasts it (JSON, MPI_Ibcast on a private duplicate of
// the group communicator) to the other ranks. Every rank then renders with the JobExecutor, in
// lockstep. Between denoising steps the ranks agree on whether to stop (the leader's cancel flag is
// broadcast, so every rank stops at the same step). After the render the ranks agree on success;
// the leader then asks the coordinator for permission to commit, publishes the staged MP4 with
// storage::CommitOutput only when granted (else discards it) and reports done or failed.
//
// Failure handling:
//   - Bad input (InvalidArgument: malformed spec, wrong model) is reported as not retryable; every
//     other failure is retryable (the coordinator retries until max attempts, then dead-letters).
//   - Exceptions from the executor are caught on the rank that threw them and become a Status; they
//     never cross a thread or rank boundary.
//   - A rank that fails while its peers wait in a collective leaves the group unable to agree: after
//     group_timeout_ms the leader reports the job failed (retryable) and the process ends with
//     MPI_Abort, because a hung collective cannot be recovered (the job's lease then lapses anyway).
//   - A group of one rank needs no MPI at all: without an MPI launcher `stas worker` runs plain.
//
// Idle ranks wait for the leader's broadcast by polling with short sleeps, so a waiting group does
// not spin a CPU core per rank.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "jobspec/render_spec.h"
#include "storage/manifest.h"
#include "storage/output_layout.h"
#include "worker/coordinator_link.h"
#include "worker/renderer.h"

namespace stas::parallel {
class ProcessGroups;
}

namespace stas::worker {

struct WorkerOptions {
  std::string coordinator;        // HOST:PORT of the coordinator's worker port
  std::string model = "tiny";     // "tiny" or a diffusers-format checkpoint folder
  RendererFlags renderer;         // --text-encoder-device, --vae-dtype, --attention, --fp8 (worker/renderer.h)
  int sp = 1;                     // sequence-parallel degree
  bool cfg_parallel = false;      // CFG branches on two halves of the group
  std::string storage;            // storage root; empty = the one the coordinator's welcome names
  std::string name;               // worker name prefix; empty = the host name
  std::string token;              // the coordinator's token, sent in hello (empty: none)
  int checkpoint_every = 4;       // denoising steps between latent checkpoints; 0 = none
  int commit_timeout_ms = 120000; // how long the leader waits for a commit answer (across reconnects)
  int group_timeout_ms = 600000;  // how long ranks wait for each other at the end of a job
  int max_jobs = 0;               // leave after this many jobs; 0 = serve until stopped
  LinkOptions link;               // reconnect/backoff settings; coordinator and hello are filled in

  // Fault injection for the reliability and security tests (docs/RELIABILITY.md); off by default.
  int fault_step_delay_ms = 0;    // sleep this long after each completed step (slows jobs down)
  int fault_block_delay_ms = 0;   // sleep this long after each transformer block (one slow step)
  std::string fault_fail_prompt;  // jobs whose prompt contains this text fail (retryably) every time
};

// One job as every rank of the group sees it.
struct JobContext {
  std::string job_id;
  int attempt = 1;
  jobspec::RenderSpec spec;  // validated
  Json resume;           // the coordinator's resume hint (null: none); checkpoints are looked up by job id
  std::string storage;   // storage root
  storage::OutputPaths output;  // where the video goes: the coordinator's assignment, checked
  int checkpoint_every = 0;
  std::vector<std::string> upcoming_prompts;  // the coordinator's hint: prompts of the jobs queued next
};

// The paths of the output a job message assigns: `relative_video` is "<folder>/<name>.mp4" relative to
// `storage_root`, each part a valid output name (storage::ValidateOutputComponent: no separators, no
// "..", no leading dot, ...). InvalidArgument for anything else (an empty, absolute or escaping path):
// the worker writes only where the coordinator said, and only under its storage folder.
Result<storage::OutputPaths> AssignedOutputPaths(const std::string& storage_root, const std::string& job_id,
                                                 const std::string& relative_video);

struct RenderCallbacks {
  // Progress, called by the executor on every rank (only the leader's goes to the coordinator).
  std::function<void(const JobProgress&)> progress;
  // Called between denoising steps and after every transformer block, on every rank at the same
  // points. Collective: every rank of the group gets the same answer. True = stop now and return
  // Aborted.
  std::function<bool()> should_stop;
};

// A finished but unpublished video (leader only): a complete MP4 at a temporary name in
// paths.folder plus its manifest. Publishing is the worker's decision, not the executor's.
struct StagedOutput {
  storage::OutputPaths paths;
  std::string temp_video;
  storage::Manifest manifest;
};

// Renders jobs. Called on every rank of the group with the same job, in lockstep; an implementation
// makes the same collective calls on every rank. Need not be thread-safe (one job at a time).
class JobExecutor {
 public:
  virtual ~JobExecutor() = default;
  // The leader returns the staged output; other ranks return nullopt. A stop requested through
  // should_stop ends the render with Aborted. InvalidArgument means bad input (not retried).
  virtual Result<std::optional<StagedOutput>> Render(const JobContext& job, const RenderCallbacks& callbacks) = 0;
};

// Makes this rank's executor once the groups exist (loads the model).
using ExecutorFactory =
    std::function<Result<std::unique_ptr<JobExecutor>>(const WorkerOptions&, const parallel::ProcessGroups* groups)>;

// Counters of one rank, for logs and tests.
struct WorkerStats {
  int jobs = 0;         // jobs this rank took part in
  int done = 0;         // leader: reported done
  int failed = 0;       // leader: reported failed
  int discarded = 0;    // leader: commit denied or unconfirmed, output thrown away
};

class WorkerProcess {
 public:
  // `groups` null = a group of one without MPI. Neither pointer is owned; both outlive Run().
  WorkerProcess(WorkerOptions options, const parallel::ProcessGroups* groups, JobExecutor* executor);
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  // Serves jobs until stopped (RequestStop, max_jobs, a stop signal) and returns the process exit code
  // (0 = clean). Never throws.
  int Run();
  // Thread-safe. First request: finish the running job, then leave. cancel_running: stop the running
  // job between steps too (it is reported failed, retryable, so another group takes it).
  void RequestStop(bool cancel_running);

  const WorkerStats& stats() const { return stats_; }

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  WorkerStats stats_;
};

// Signal handlers for `stas worker`, polled by WorkerProcess::Run:
//   SIGUSR1            drain: finish the running job, then leave
//   SIGUSR2            stop: end the running job between two steps (handed back, retryable), leave
//   SIGTERM / SIGINT   the first drains, the second stops
// mpirun forwards SIGUSR1/SIGUSR2 to every rank and lets them run on, while it follows a forwarded
// SIGTERM with a kill shortly after, so drain an mpirun launch with `kill -USR1 <mpirun pid>`.
void InstallStopSignalHandlers();

// The whole `stas worker` command: initializes MPI when launched by an MPI launcher or when G > 1,
// creates the process groups, builds the executor with `factory` (on every rank), and runs.
// Returns the exit code.
int RunWorkerMain(const WorkerOptions& options, const ExecutorFactory& factory);

}  // namespace stas::worker

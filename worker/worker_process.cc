#include "worker/worker_process.h"

#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>
#include <vector>

#include "common/check.h"
#include "common/log.h"
#include "common/text.h"
#include "parallel/mpi_environment.h"
#include "parallel/process_groups.h"
#include "storage/latent_checkpoint.h"

namespace stas::worker {

namespace {

// 0 = serve, 1 = drain (finish the running job, then leave), 2 = stop the running job and leave.
std::atomic<int> g_stop_signals{0};

void RaiseStopLevel(int level) {
  int have = g_stop_signals.load();
  while (have < level && !g_stop_signals.compare_exchange_weak(have, level)) {
  }
}

void OnStopSignal(int signal) {
  if (signal == SIGUSR1) RaiseStopLevel(1);
  else if (signal == SIGUSR2) RaiseStopLevel(2);
  else RaiseStopLevel(std::min(2, g_stop_signals.load() + 1));  // SIGTERM/SIGINT: drain, then stop
}

using Clock = std::chrono::steady_clock;

// Waits for a non-blocking MPI request by polling with growing sleeps (an idle rank must not spin a
// core). Timeout leaves the request pending: the caller cannot recover and ends the process.
Status WaitForRequest(MPI_Request* request, int timeout_ms, const char* what) {
  const auto start = Clock::now();
  for (int polls = 0;; ++polls) {
    int done = 0;
    const int rc = MPI_Test(request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return Unavailable(std::string("MPI ") + what + " failed: " + parallel::MpiErrorString(rc));
    if (done) return Status::Ok();
    if (timeout_ms >= 0 &&
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count() > timeout_ms)
      return Timeout(std::string("MPI ") + what + " did not complete within " + std::to_string(timeout_ms) + " ms");
    std::this_thread::sleep_for(std::chrono::microseconds(polls < 100 ? 20 : polls < 1000 ? 200 : 2000));
  }
}

Status MpiStatus(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return Status::Ok();
  return Unavailable(std::string("MPI ") + what + " failed: " + parallel::MpiErrorString(rc));
}

// The worker's control messages inside one group, on a private duplicate of the group communicator
// (so they never interleave with the renderer's collectives). A group of one needs no MPI.
class GroupChannel {
 public:
  explicit GroupChannel(MPI_Comm group) {
    if (group != MPI_COMM_NULL) {
      comm_ = parallel::MpiComm::Duplicate(group);
      rank_ = comm_.rank();
      size_ = comm_.size();
    }
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool leader() const { return rank_ == 0; }

  // The leader's message reaches every rank (`message` is read on the leader, written elsewhere).
  Status Broadcast(Json& message, int timeout_ms) {
    if (size_ == 1) return Status::Ok();
    std::string bytes = leader() ? message.dump() : std::string();
    int64_t length = static_cast<int64_t>(bytes.size());
    MPI_Request req;
    STAS_RETURN_IF_ERROR(MpiStatus(MPI_Ibcast(&length, 1, MPI_INT64_T, 0, comm_.get(), &req), "Ibcast"));
    STAS_RETURN_IF_ERROR(WaitForRequest(&req, timeout_ms, "broadcast of a job"));
    bytes.resize(static_cast<size_t>(length));
    STAS_RETURN_IF_ERROR(MpiStatus(MPI_Ibcast(bytes.data(), static_cast<int>(length), MPI_CHAR, 0, comm_.get(), &req), "Ibcast"));
    STAS_RETURN_IF_ERROR(WaitForRequest(&req, timeout_ms, "broadcast of a job"));
    if (!leader()) {
      auto parsed = ParseJson(bytes, "group control message");
      if (!parsed.ok()) return Internal(parsed.status().message());
      message = std::move(*parsed);
    }
    return Status::Ok();
  }

  // The leader's flag on every rank.
  Result<bool> BroadcastFlag(bool flag, int timeout_ms) {
    if (size_ == 1) return flag;
    int value = flag ? 1 : 0;
    MPI_Request req;
    STAS_RETURN_IF_ERROR(MpiStatus(MPI_Ibcast(&value, 1, MPI_INT, 0, comm_.get(), &req), "Ibcast"));
    STAS_RETURN_IF_ERROR(WaitForRequest(&req, timeout_ms, "stop-flag broadcast"));
    return value != 0;
  }

  // True when every rank passed true.
  Result<bool> AllTrue(bool mine, int timeout_ms) {
    if (size_ == 1) return mine;
    int in = mine ? 1 : 0;
    int out = 0;
    MPI_Request req;
    STAS_RETURN_IF_ERROR(MpiStatus(MPI_Iallreduce(&in, &out, 1, MPI_INT, MPI_MIN, comm_.get(), &req), "Iallreduce"));
    STAS_RETURN_IF_ERROR(WaitForRequest(&req, timeout_ms, "end-of-job agreement"));
    return out != 0;
  }

  // Every rank's string, on the leader (empty elsewhere).
  Result<std::vector<std::string>> GatherToLeader(const std::string& mine, int timeout_ms) {
    if (size_ == 1) return std::vector<std::string>{mine};
    int length = static_cast<int>(mine.size());
    std::vector<int> lengths(leader() ? size_ : 0);
    MPI_Request req;
    STAS_RETURN_IF_ERROR(MpiStatus(MPI_Igather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, comm_.get(), &req), "Igather"));
    STAS_RETURN_IF_ERROR(WaitForRequest(&req, timeout_ms, "error gather"));
    std::vector<int> offsets(lengths.size(), 0);
    int total = 0;
    for (size_t i = 0; i < lengths.size(); ++i) {
      offsets[i] = total;
      total += lengths[i];
    }
    std::string all(static_cast<size_t>(total), '\0');
    STAS_RETURN_IF_ERROR(MpiStatus(MPI_Igatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(),
                                                MPI_CHAR, 0, comm_.get(), &req), "Igatherv"));
    STAS_RETURN_IF_ERROR(WaitForRequest(&req, timeout_ms, "error gather"));
    std::vector<std::string> out;
    for (size_t i = 0; i < lengths.size(); ++i) out.push_back(all.substr(offsets[i], lengths[i]));
    return out;
  }

 private:
  parallel::MpiComm comm_;
  int rank_ = 0;
  int size_ = 1;
};

std::string HostName() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

// Path of `path` relative to `root` when it lies under it (what done.output carries).
std::string RelativeToRoot(const std::string& path, const std::string& root) {
  const auto rel = std::filesystem::path(path).lexically_relative(std::filesystem::path(root));
  if (rel.empty() || *rel.begin() == "..") return path;
  return rel.string();
}

// Bad input is not worth retrying; everything else (I/O, a lost peer, an internal error) may pass.
bool IsRetryable(const Status& status) { return status.code() != StatusCode::kInvalidArgument; }

enum class StopReason { kNone, kCancelled, kShutdown };

}  // namespace

Result<storage::OutputPaths> AssignedOutputPaths(const std::string& storage_root, const std::string& job_id,
                                                 const std::string& relative_video) {
  const std::string shown = "'" + TruncateUtf8(relative_video, 256) + "'";
  if (relative_video.empty()) return InvalidArgument("the job message assigns no output path");
  const size_t slash = relative_video.find('/');
  const std::string file = slash == std::string::npos ? "" : relative_video.substr(slash + 1);
  if (slash == std::string::npos || file.find('/') != std::string::npos || file.size() <= 4 ||
      file.compare(file.size() - 4, 4, ".mp4") != 0)
    return InvalidArgument("output path " + shown + " is not of the form <folder>/<name>.mp4");
  // PathsFor checks both parts with the project's one name rule and joins them under the root.
  auto paths = storage::OutputLayout(storage_root)
                   .PathsFor(job_id, relative_video.substr(0, slash), file.substr(0, file.size() - 4));
  if (!paths.ok()) return InvalidArgument("output path " + shown + ": " + paths.status().message());
  return paths;
}

class WorkerProcess::Impl {
 public:
  Impl(WorkerOptions options, const parallel::ProcessGroups* groups, JobExecutor* executor, WorkerStats* stats)
      : options_(std::move(options)),
        groups_(groups),
        executor_(executor),
        stats_(stats),
        channel_(groups ? groups->group() : MPI_COMM_NULL) {}

  int Run();
  void RequestStop(bool cancel_running) {
    int want = cancel_running ? 2 : 1;
    int have = requested_.load();
    while (have < want && !requested_.compare_exchange_weak(have, want)) {
    }
  }

 private:
  int StopLevel() const { return std::max(requested_.load(), std::min(2, g_stop_signals.load())); }
  std::string WorkerName() const;
  // Runs one job on this rank. A non-OK Status means the group can no longer agree (fatal).
  Status RunJob(const Json& message);
  void FinishOnLeader(const JobContext& job, Result<std::optional<StagedOutput>>& result, bool all_ok,
                      const std::vector<std::string>& peer_errors, StopReason stop_reason);
  int Fatal(const Status& status);

  WorkerOptions options_;
  const parallel::ProcessGroups* groups_;
  JobExecutor* executor_;
  WorkerStats* stats_;
  GroupChannel channel_;
  std::unique_ptr<CoordinatorLink> link_;
  std::atomic<int> requested_{0};
  std::set<std::string> swept_folders_;
};

std::string WorkerProcess::Impl::WorkerName() const {
  const std::string prefix = options_.name.empty() ? HostName() : options_.name;
  const int group = groups_ ? groups_->layout().group_index() : 0;
  return prefix + "-g" + std::to_string(group) + "-" + std::to_string(::getpid());
}

int WorkerProcess::Impl::Run() {
  if (channel_.leader()) {
    auto address = ParseHostPort(options_.coordinator);
    if (!address.ok()) {
      STAS_LOG_ERROR("--coordinator: {}", address.status().message());
      return 2;
    }
    LinkOptions link = options_.link;
    link.coordinator = *address;
    link.hello = {{"worker", WorkerName()},
                  {"group_size", channel_.size()},
                  {"model", options_.model},
                  {"host", HostName()},
                  {"pid", static_cast<int64_t>(::getpid())}};
    if (!options_.token.empty()) link.hello["token"] = options_.token;
    link_ = std::make_unique<CoordinatorLink>(link);
    link_->Start();
    STAS_LOG_INFO("worker {} (group of {}) serving model '{}' for coordinator {}", WorkerName(), channel_.size(),
                  options_.model, options_.coordinator);
  }
  int jobs = 0;
  while (true) {
    Json message;
    if (channel_.leader()) {
      if (StopLevel() >= 1 || (options_.max_jobs > 0 && jobs >= options_.max_jobs)) {
        message = {{"type", "shutdown"}};
      } else {
        auto job = link_->WaitForJob(500);
        if (!job.ok() && job.status().code() == StatusCode::kTimeout) continue;
        if (!job.ok()) {
          message = {{"type", "shutdown"}};
        } else {
          std::string storage = options_.storage;
          if (storage.empty()) {
            if (auto w = link_->welcome()) storage = w->storage;
          }
          message = {{"type", "job"},     {"job_id", job->job_id}, {"attempt", job->attempt},
                     {"spec", job->spec}, {"resume", job->resume}, {"storage", storage},
                     {"output", job->output}, {"upcoming_prompts", job->upcoming_prompts}};
        }
      }
    }
    Status st = channel_.Broadcast(message, -1);
    if (!st.ok()) return Fatal(st);
    if (message.value("type", "") != "job") break;
    ++jobs;
    st = RunJob(message);
    if (!st.ok()) return Fatal(st);
  }
  if (link_) {
    link_->FlushResult(5000);
    link_->Stop();
  }
  STAS_LOG_INFO("worker leaving after {} jobs", jobs);
  return 0;
}

int WorkerProcess::Impl::Fatal(const Status& status) {
  STAS_LOG_ERROR("worker group is broken: {}", status.ToString());
  if (link_) {
    link_->ReportFailed("worker group failed: " + status.message(), /*retryable=*/true);
    link_->FlushResult(5000);
    link_->Stop();
  }
  if (channel_.size() > 1) {
    // A collective that never completes cannot be cancelled; end every rank so the launcher notices.
    STAS_LOG_ERROR("aborting the MPI job: the group cannot recover from a hung or failed collective");
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  return 3;
}

Status WorkerProcess::Impl::RunJob(const Json& message) {
  ++stats_->jobs;
  JobContext job;
  job.job_id = message.value("job_id", "");
  job.attempt = message.value("attempt", 1);
  job.resume = message.value("resume", Json());
  job.storage = message.value("storage", "");
  job.checkpoint_every = options_.checkpoint_every;
  if (message.contains("upcoming_prompts") && message["upcoming_prompts"].is_array())
    job.upcoming_prompts = message["upcoming_prompts"].get<std::vector<std::string>>();
  Status prepared = Status::Ok();
  {
    auto spec = jobspec::RenderSpec::FromJson(message.value("spec", Json()));
    if (!spec.ok()) {
      prepared = InvalidArgument("bad job spec: " + spec.status().message());
    } else {
      job.spec = std::move(*spec);
      prepared = job.spec.Validate();
      if (!prepared.ok()) prepared = InvalidArgument("bad job spec: " + prepared.message());
    }
    if (prepared.ok() && !options_.fault_fail_prompt.empty() &&
        job.spec.prompt.find(options_.fault_fail_prompt) != std::string::npos)
      prepared = Internal("injected failure: the prompt contains '" + options_.fault_fail_prompt +
                          "' (--fault-fail-prompt)");
    if (prepared.ok() && job.storage.empty())
      prepared = Unavailable("no storage folder: the coordinator's welcome named none and --storage is not set");
    if (prepared.ok()) {
      auto output = AssignedOutputPaths(job.storage, job.job_id, message.value("output", ""));
      if (output.ok()) job.output = std::move(*output);
      else prepared = InvalidArgument("refusing the job's output path: " + output.status().message());
    }
  }
  const auto started = Clock::now();
  if (channel_.leader()) {
    STAS_LOG_INFO("job {} (attempt {}): {}", job.job_id, job.attempt,
                  prepared.ok() ? "'" + job.spec.prompt.substr(0, 60) + "'" : prepared.message());
    link_->UpdateProgress({0, job.spec.steps.value_or(0), "start"});
  }

  StopReason stop_reason = StopReason::kNone;
  RenderCallbacks callbacks;
  int last_step = 0;
  callbacks.progress = [&](const JobProgress& p) {
    if (link_) link_->UpdateProgress(p);
    if (options_.fault_step_delay_ms > 0 && p.step > last_step)
      std::this_thread::sleep_for(std::chrono::milliseconds(options_.fault_step_delay_ms));
    last_step = std::max(last_step, p.step);
  };
  callbacks.should_stop = [&]() -> bool {
    bool stop = false;
    if (channel_.leader()) {
      if (link_->cancel_requested()) {
        stop = true;
        stop_reason = StopReason::kCancelled;
      } else if (StopLevel() >= 2) {
        stop = true;
        stop_reason = StopReason::kShutdown;
      }
    }
    auto agreed = channel_.BroadcastFlag(stop, options_.group_timeout_ms);
    STAS_CHECK(agreed.ok()) << agreed.status().ToString();  // caught below: the group is then broken
    return *agreed;
  };

  Result<std::optional<StagedOutput>> result = prepared;
  if (prepared.ok()) {
    try {
      result = executor_->Render(job, callbacks);
    } catch (const std::exception& e) {
      result = Internal(std::string("render failed with an exception: ") + e.what());
    }
  }
  if (!result.ok()) {
    STAS_LOG_WARN("job {} on group rank {}: {}", job.job_id, channel_.rank(), result.status().ToString());
  }
  auto all_ok = channel_.AllTrue(result.ok(), options_.group_timeout_ms);
  if (!all_ok.ok()) return all_ok.status();
  std::vector<std::string> peer_errors;
  if (!*all_ok) {
    const std::string mine = result.ok() ? "" : result.status().ToString();
    auto gathered = channel_.GatherToLeader(mine, options_.group_timeout_ms);
    if (!gathered.ok()) return gathered.status();
    for (size_t r = 0; r < gathered->size(); ++r) {
      if (!(*gathered)[r].empty()) peer_errors.push_back("rank " + std::to_string(r) + ": " + (*gathered)[r]);
    }
  }
  if (channel_.leader()) {
    FinishOnLeader(job, result, *all_ok, peer_errors, stop_reason);
    STAS_LOG_INFO("job {} finished on this group in {:.2f} s", job.job_id,
                  std::chrono::duration<double>(Clock::now() - started).count());
  }
  return Status::Ok();
}

void WorkerProcess::Impl::FinishOnLeader(const JobContext& job, Result<std::optional<StagedOutput>>& result,
                                         bool all_ok, const std::vector<std::string>& peer_errors,
                                         StopReason stop_reason) {
  auto discard = [&] {
    if (result.ok() && result->has_value()) std::remove((*result)->temp_video.c_str());
  };
  // A group that lost its job may have written a latent checkpoint after the new owner committed and
  // removed it; once the video exists nobody needs one, so do not leave it behind.
  auto drop_stale_checkpoint = [&] {
    if (!job.output.video.empty() && storage::IsCommitted(job.output)) {
      Status removed = storage::LatentCheckpointStore(job.storage).Remove(job.job_id);
      if (!removed.ok()) STAS_LOG_WARN("job {}: {}", job.job_id, removed.message());
    }
  };
  if (!all_ok) {
    discard();
    ++stats_->failed;
    if (stop_reason == StopReason::kCancelled) {
      drop_stale_checkpoint();
      link_->ReportFailed("cancelled", /*retryable=*/false);
      return;
    }
    if (stop_reason == StopReason::kShutdown) {
      link_->ReportFailed("worker shutting down; the job can run elsewhere", /*retryable=*/true);
      return;
    }
    const Status& first = result.ok() ? Internal(peer_errors.empty() ? "a rank failed" : peer_errors.front())
                                      : result.status();
    bool retryable = IsRetryable(first);
    std::string error = first.ToString();
    if (channel_.size() > 1 && !peer_errors.empty()) {
      error.clear();
      for (const auto& e : peer_errors) error += (error.empty() ? "" : "; ") + e;
    }
    link_->ReportFailed(error, retryable);
    return;
  }
  if (!result->has_value()) {
    ++stats_->failed;
    link_->ReportFailed("internal error: the executor returned no output on the group leader", true);
    return;
  }
  StagedOutput& staged = **result;
  const int steps = job.spec.steps.value_or(0);
  link_->UpdateProgress({steps, steps, "commit"});
  auto granted = link_->RequestCommit(options_.commit_timeout_ms);
  if (!granted.ok() || !*granted) {
    discard();
    ++stats_->discarded;
    if (!granted.ok()) {
      STAS_LOG_WARN("job {}: no commit answer ({}); output discarded", job.job_id, granted.status().message());
      link_->ReportFailed("could not confirm the commit with the coordinator: " + granted.status().message(), true);
    } else {
      STAS_LOG_WARN("job {}: commit denied (the lease moved to another group); output discarded", job.job_id);
      drop_stale_checkpoint();
      link_->Abandon();
    }
    return;
  }
  auto outcome = storage::CommitOutput(staged.paths, staged.temp_video, staged.manifest);
  if (!outcome.ok()) {
    ++stats_->failed;
    link_->ReportFailed("commit failed: " + outcome.status().ToString(), /*retryable=*/true);
    return;
  }
  Json timings = Json::object();
  for (const auto& [stage, seconds] : staged.manifest.timings_s) timings[stage] = seconds;
  Json done = {{"output", RelativeToRoot(staged.paths.video, job.storage)},
               {"manifest", RelativeToRoot(staged.paths.manifest, job.storage)},
               {"timings", timings},
               {"commit", storage::CommitOutcomeName(*outcome)}};
  if (*outcome == storage::CommitOutcome::kAlreadyCommitted) {
    // An earlier run of this job committed but its result never reached the coordinator; the same
    // name holding another job's video is a conflict of output names, which retrying cannot fix.
    auto existing = storage::ReadManifest(staged.paths.manifest);
    if (!existing.ok() || existing->job_id != job.job_id) {
      ++stats_->failed;
      link_->ReportFailed("output " + RelativeToRoot(staged.paths.video, job.storage) + " already holds " +
                              (existing.ok() ? "job " + existing->job_id + "'s video" : "another video"),
                          /*retryable=*/false);
      return;
    }
  }
  Status removed = storage::LatentCheckpointStore(job.storage).Remove(job.job_id);
  if (!removed.ok()) STAS_LOG_WARN("job {}: could not remove its latent checkpoint: {}", job.job_id, removed.message());
  // Processes killed mid-write leave hidden temporaries; sweep each output folder once per process.
  if (swept_folders_.insert(staged.paths.folder).second) {
    auto swept = storage::RemoveStaleTemporaryFiles(staged.paths.folder, /*min_age_s=*/3600);
    if (swept.ok() && *swept > 0) STAS_LOG_INFO("removed {} stale temporary files from {}", *swept, staged.paths.folder);
  }
  ++stats_->done;
  link_->ReportDone(std::move(done));
}

WorkerProcess::WorkerProcess(WorkerOptions options, const parallel::ProcessGroups* groups, JobExecutor* executor)
    : impl_(std::make_unique<Impl>(std::move(options), groups, executor, &stats_)) {}

WorkerProcess::~WorkerProcess() = default;

int WorkerProcess::Run() {
  try {
    return impl_->Run();
  } catch (const std::exception& e) {
    STAS_LOG_ERROR("worker stopped by an internal error: {}", e.what());
    return 70;
  }
}

void WorkerProcess::RequestStop(bool cancel_running) { impl_->RequestStop(cancel_running); }

void InstallStopSignalHandlers() {
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  for (int signal : {SIGTERM, SIGINT, SIGUSR1, SIGUSR2}) ::sigaction(signal, &action, nullptr);
}

int RunWorkerMain(const WorkerOptions& options, const ExecutorFactory& factory) {
  const int cfg = options.cfg_parallel ? 2 : 1;
  const bool need_mpi = parallel::LaunchedByMpiLauncher() || options.sp * cfg > 1;
  std::unique_ptr<parallel::MpiEnvironment> mpi;
  std::optional<parallel::ProcessGroups> groups;
  if (need_mpi) {
    auto env = parallel::MpiEnvironment::Initialize();
    if (!env.ok()) {
      STAS_LOG_ERROR("{}", env.status().ToString());
      return 2;
    }
    mpi = std::move(*env);
    auto made = parallel::ProcessGroups::Create(MPI_COMM_WORLD, options.sp, cfg);
    if (!made.ok()) {
      if (mpi->world_rank() == 0) STAS_LOG_ERROR("{}", made.status().message());
      return 2;
    }
    groups = std::move(*made);
    const auto& layout = groups->layout();
    SetLogTag("[rank " + std::to_string(layout.world_rank) + " g" + std::to_string(layout.group_index()) + "]");
    STAS_LOG_DEBUG("{}", layout.ToString());
  }
  // After MPI_Init, so that no handler the MPI library installs replaces ours.
  InstallStopSignalHandlers();
  const parallel::ProcessGroups* group_ptr = groups ? &*groups : nullptr;
  Result<std::unique_ptr<JobExecutor>> executor = Internal("executor not created");
  try {
    executor = factory(options, group_ptr);
  } catch (const std::exception& e) {
    executor = Internal(std::string("loading the model failed with an exception: ") + e.what());
  }
  int loaded = executor.ok() ? 1 : 0;
  if (!executor.ok()) STAS_LOG_ERROR("cannot start the worker: {}", executor.status().ToString());
  if (mpi) {
    // Every rank must have its model before any group takes a job, or a group would hang in its
    // first collective; all ranks leave together otherwise.
    int all_loaded = 0;
    if (MPI_Allreduce(&loaded, &all_loaded, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS) return 3;
    loaded = all_loaded;
  }
  if (!loaded) return 2;
  WorkerProcess process(options, group_ptr, executor->get());
  return process.Run();
}

}  // namespace stas::worker

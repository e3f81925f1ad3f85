// JobQueue: the job lifecycle policy over a JobStore.
//
//   submit -> queued --dispatch--> running --commit granted, done--> done
//                ^                    | failed (retryable) or lease expired
//                |   backoff delay    v
//                +------------- (attempts < max) ---- otherwise --> dead (+ dead-letter stream)
//   failed (not retryable) -> failed;  cancel (queued or running) -> cancelled
//
// Rules:
// - Job id = RenderSpec::JobId() (a hash of what changes the video). Submitting an id that exists is a
//   no-op returning the same id while the job is queued, running or done; when it is failed, dead or
//   cancelled, the submission re-queues it with attempts reset and the new submission's spec (same video;
//   priority, output name and dataset may differ). A job keeps one dataset (the last one it was queued
//   with).
// - Every dispatch starts an attempt with a fresh lease token (the fencing token). Heartbeats renew the
//   lease only while the token is current; a renewal also re-creates an expired lease key as long as the
//   reaper has not re-queued the job yet, which is how groups keep their jobs across a coordinator
//   restart. Only the current token may commit, complete or fail the attempt.
// - A failed attempt (retryable failure or expired lease) is retried after BackoffMs(attempts) =
//   min(backoff_initial_ms * multiplier^(attempts-1), backoff_max_ms), through the `delayed` set, until
//   max_attempts attempts have run; then the job is dead and logged to the dead-letter stream.
// - Cancelling a running job tells its group through the heartbeat reply (cancel=true); its commit is
//   then denied.
//
// Thread-safety: as the store (each method is a few atomic store operations; state checks are
// compare-and-set, so concurrent callers cannot both move a job).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "coordinator/clock.h"
#include "coordinator/job_store.h"
#include "jobspec/render_spec.h"

namespace stas::coordinator {

struct QueueOptions {
  int64_t lease_ms = 30000;
  int max_attempts = 3;
  int64_t backoff_initial_ms = 5000;
  int64_t backoff_max_ms = 300000;
  double backoff_multiplier = 2.0;
};
// InvalidArgument naming the bad option.
Status ValidateQueueOptions(const QueueOptions& options);

enum class SubmitOutcome { kCreated, kResubmitted, kExisting };
struct SubmitResult {
  std::string id;
  SubmitOutcome outcome = SubmitOutcome::kCreated;
  JobRecord record;
};

// A job handed to a worker group.
struct Assignment {
  std::string job_id;
  std::string lease;
  int attempt = 1;
  Json spec;    // RenderSpec JSON
  Json resume;  // null on a first attempt; {previous_attempts, last_step, last_worker} on a retry
  JobRecord record;
};

enum class HeartbeatOutcome { kRenewed, kCancelled, kLeaseLost, kUnknownJob };
enum class CompleteOutcome { kCompleted, kRepeat, kRejected };
enum class FailOutcome { kRetryScheduled, kFailed, kDead, kRejected };
enum class CancelOutcome { kCancelled, kAlreadyCancelled, kAlreadyFinished };

struct ListQuery {
  std::optional<JobState> state;
  std::string dataset;  // "" = any
  int64_t offset = 0;
  std::string after;    // cursor: list the jobs after this id (offset is then ignored)
  int64_t limit = 100;
  // The caller reads the spec's fields but not model, dataset and priority from it: the spec may stay in
  // the store's form (JobStore::GetManyForListing).
  bool prompt_only = false;
};

// One submission of a batch: its spec and the optional `api` JSON stored with it.
struct SubmitItem {
  jobspec::RenderSpec spec;
  Json api;
};

class JobQueue {
 public:
  // `store` and `clock` are borrowed and must outlive the queue.
  JobQueue(JobStore* store, const Clock* clock, QueueOptions options);

  const QueueOptions& options() const { return options_; }
  JobStore& store() { return *store_; }
  const Clock& clock() const { return *clock_; }

  // --- Users ---
  // `api` (optional JSON object) is stored with the job (e.g. the OpenAI request's size and seconds).
  Result<SubmitResult> Submit(const jobspec::RenderSpec& spec, const Json& api = Json());
  // Submits many jobs in few store round trips: one read of every id's state (ids that exist and need
  // nothing are answered from it), then the new jobs created in batches; re-queues of failed, dead or
  // cancelled jobs and creations that raced go through Submit one by one. Results in input order.
  // Validates every spec first (InvalidArgument naming the index; nothing is stored then). On a store
  // error, `done` (when given) says how many leading items were stored.
  Result<std::vector<SubmitResult>> SubmitMany(const std::vector<SubmitItem>& items, size_t* done = nullptr);
  Result<std::optional<JobRecord>> Get(const std::string& id);
  // Newest first, from the index that matches the filters (dataset x state included): O(log n + limit)
  // for a cursor (`after`) page.
  Result<std::vector<JobRecord>> List(const ListQuery& query);
  // Jobs by state of one dataset ("" = all jobs).
  Result<std::map<JobState, int64_t>> Counts(const std::string& dataset);
  // NotFound for an unknown id.
  Result<std::pair<CancelOutcome, JobRecord>> Cancel(const std::string& id);
  // Cancels (if unfinished) and removes the job's record. False when unknown.
  Result<bool> Delete(const std::string& id);

  // --- Dispatch ---
  // Takes the next job of the ready queue of `model` (highest priority, then oldest) and starts an
  // attempt of it for `worker`, atomically. nullopt when no job of that model waits.
  Result<std::optional<Assignment>> StartNext(const std::string& model, const std::string& worker);
  // The prompts of the next `limit` jobs that StartNext(model, ...) would take, in that order, without
  // taking them: a hint for the worker, which encodes them while it renders (they may go elsewhere).
  Result<std::vector<std::string>> UpcomingPrompts(const std::string& model, int limit);
  Result<HeartbeatOutcome> Heartbeat(const std::string& job_id, const std::string& lease, int step, int steps,
                                     const std::string& stage);
  // True when `lease` is the job's current lease and the job is running (the lease is renewed).
  Result<bool> GrantCommit(const std::string& job_id, const std::string& lease);
  Result<CompleteOutcome> Complete(const std::string& job_id, const std::string& lease, const std::string& output,
                                   const std::string& manifest, const Json& timings);
  Result<FailOutcome> Fail(const std::string& job_id, const std::string& lease, const std::string& error,
                           bool retryable);

  // --- Maintenance ---
  // Moves retries whose delay has passed back into their ready queues. Returns how many.
  Result<int> PromoteDue(int limit = 100);
  // Retries or buries a running job whose lease key expired (no-op if it was renewed meanwhile).
  // True when the job was moved.
  Result<bool> ExpireLease(const std::string& job_id);

  int64_t BackoffMs(int attempts) const;

 private:
  std::string NewLeaseToken(int attempt);
  // Ends the current attempt of `record` (matched by state running + its lease), retrying it, burying
  // it (dead) or failing it. `extra` adds preconditions (e.g. lease_key_expired).
  Result<FailOutcome> EndAttempt(const JobRecord& record, const std::string& error, bool retryable,
                                 bool lease_expired);

  JobStore* store_;
  const Clock* clock_;
  QueueOptions options_;
};

// Re-queues jobs whose group stopped renewing its lease.
//
// Tick() lists running jobs, checks their lease keys and calls JobQueue::ExpireLease for the expired.
// For grace_ms after construction it only reports: a coordinator that just restarted gives connected
// groups time to reconnect and renew (pass lease_ms; 0 disables the grace).
class LeaseReaper {
 public:
  LeaseReaper(JobQueue* queue, const Clock* clock, int64_t grace_ms);
  // Number of jobs re-queued or buried.
  Result<int> Tick();
  bool in_grace() const;

 private:
  JobQueue* queue_;
  const Clock* clock_;
  int64_t grace_until_ms_;
};

}  // namespace stas::coordinator

// JobStore: the storage primitives the job queue is built on, with Redis semantics.
//
// The queue's *policy* (attempts, backoff, dead-lettering, lease tokens) lives
// in JobQueue; a store only offers atomic operations with no decisions of their own, so the same
// policy runs on RedisJobStore (production) and MemoryJobStore (unit tests, with a fake clock).
//
// Data model (Redis keys under the configured prefix, default "stas:"):
//   job:<id>             hash: one job's record (JobRecord fields; RedisJobStore stores short field
//                        names and leaves empty and zero fields out)
//   lease:<id>           string: the running attempt's lease token, with a TTL (SET PX); gone = expired
//   ready:<queue>        sorted set per model queue (ReadyQueueName of the job's model): the queued jobs
//                        waiting for a group, score = ReadyScore(priority, sequence); ZPOPMIN gives the
//                        highest priority, then the oldest
//   queues               set: every ready-queue name ever used;   seq: the enqueue sequence counter
//   delayed              sorted set: job id -> time (ms) its retry may be dispatched
//   dead                 stream: dead-letter log {job, reason, attempts, at}
//   state:<state>        sorted set per state: job id -> created_ms
//   all                  sorted set: every job id -> created_ms
//   dataset:<name>       sorted set: the dataset's job ids -> created_ms;  datasets: name -> first use
//   dstate:<state>:<name> sorted set: the dataset's jobs in that state -> created_ms
//   stats                hash: persistent counters (submitted, completed, failed, dead, retried, ...)
//
// Invariant kept by every store operation: a job is in its model's ready queue exactly while it is
// queued and not waiting out a retry delay. Dispatch pops the head of a queue and starts the job in one
// atomic step, so a job is never handed out twice and never left behind: a coordinator that dies after
// the pop leaves a running job whose lease nobody renews, which the reaper re-queues.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace stas::coordinator {

enum class JobState { kQueued, kRunning, kDone, kFailed, kCancelled, kDead };
constexpr JobState kAllJobStates[] = {JobState::kQueued, JobState::kRunning,   JobState::kDone,
                                      JobState::kFailed, JobState::kCancelled, JobState::kDead};
const char* JobStateName(JobState state);
std::optional<JobState> ParseJobState(const std::string& name);
// done, failed, cancelled, dead.
bool IsTerminal(JobState state);

// One job, as stored. Times are ms since the epoch (0 = not yet).
struct JobRecord {
  std::string id;
  JobState state = JobState::kQueued;
  std::string spec;     // RenderSpec JSON as submitted
  std::string model;    // the spec's model (dispatch matches it against worker groups)
  std::string dataset;  // "" when none
  int priority = 0;
  int attempts = 0;     // dispatches so far
  int step = 0, steps = 0;
  std::string stage;
  std::string worker;   // the group running (or that last ran) it
  std::string lease;    // the current lease token ("" when none): the fencing token
  std::string error;    // last error
  std::string output;   // MP4 path reported by the worker (done)
  std::string manifest;
  std::string timings;  // JSON object reported by the worker
  std::string api;      // JSON object: how the job was submitted (e.g. the OpenAI request's fields)
  int64_t created_ms = 0, started_ms = 0, finished_ms = 0, updated_ms = 0, heartbeat_ms = 0, retry_at_ms = 0;

  // Hash field form and back. FromFields is lenient about missing fields, strict about bad numbers.
  std::map<std::string, std::string> ToFields() const;
  static Result<JobRecord> FromFields(const std::string& id, const std::map<std::string, std::string>& fields);
};

// The ready queue of a model: its final path component ("/ckpt/Wan2.1-T2V-1.3B-Diffusers/" and
// "Wan2.1-T2V-1.3B-Diffusers" share a queue, as they match the same groups); the whole string when
// that component is empty.
std::string ReadyQueueName(const std::string& model);
// The ready-queue score: lower pops first. Priority (clamped to +-kMaxQueuePriority) dominates, then
// the enqueue sequence (modulo 2^32), so equal priorities leave in submission order.
constexpr int kMaxQueuePriority = 1000000;
double ReadyScore(int priority, uint64_t sequence);

struct DeadLetter {
  std::string entry_id;
  std::string job_id;
  std::string reason;
  int attempts = 0;
  int64_t at_ms = 0;
};

// An atomic compare-and-set on one job: every precondition must hold, then every effect applies;
// otherwise nothing changes. The store keeps the indexes in step: a state change moves the id between
// state sets (and dataset x state sets), leaving `queued` removes it from `delayed` and its ready queue,
// the first write adds it to `all`.
struct Transition {
  std::string job_id;
  int64_t now_ms = 0;  // written to updated_ms

  // Dispatch: when set, the job is the head of this ready queue (job_id is ignored) and is popped from
  // it; a head that fails the preconditions is dropped and the next one tried. Not applied (before =
  // nullopt) when the queue is empty.
  std::string pop_ready;

  // Preconditions.
  bool require_absent = false;           // the job must not exist (create); other preconditions ignored
  std::vector<JobState> from;            // the current state is one of these (empty: any existing job)
  std::optional<std::string> lease_is;   // the record's lease equals this ("" = no lease)
  bool lease_key_expired = false;        // the lease key is gone (its holder stopped renewing)

  // Effects, in this order: set/clear/incr fields, state, lease key, delay, enqueue, dead letter,
  // stats, dataset index.
  std::map<std::string, std::string> set;
  std::vector<std::string> clear;
  std::map<std::string, int64_t> incr;
  std::optional<JobState> to;
  enum class LeaseOp { kKeep, kSet, kDelete };
  LeaseOp lease_op = LeaseOp::kKeep;
  std::string lease_token;     // kSet: SET lease:<id> token PX lease_ttl_ms
  int64_t lease_ttl_ms = 0;
  std::optional<int64_t> delay_until_ms;  // add to `delayed` with this due time
  bool enqueue = false;                   // add to the model's ready queue (removes from `delayed`)
  std::string dead_letter_reason;         // non-empty: append to the dead-letter stream
  std::map<std::string, int64_t> stats;   // increments of the stats hash
  std::string dataset;                    // non-empty: add to this dataset's index
};

struct TransitionResult {
  bool applied = false;
  std::string job_id;               // the job concerned (the popped one for pop_ready)
  std::optional<JobRecord> before;  // nullopt: the job did not exist
  std::optional<JobRecord> after;   // the record after the effects (== before when not applied)
};

// Which index to list.
struct IndexRef {
  enum class Kind { kAll, kState, kDataset, kDatasetState };
  Kind kind = Kind::kAll;
  JobState state = JobState::kQueued;
  std::string dataset;
  static IndexRef All() { return {}; }
  static IndexRef State(JobState s) { return {Kind::kState, s, ""}; }
  static IndexRef Dataset(std::string name) { return {Kind::kDataset, JobState::kQueued, std::move(name)}; }
  static IndexRef DatasetState(std::string name, JobState s) { return {Kind::kDatasetState, s, std::move(name)}; }
};

// The transition that creates `record` as a new queued job at `now_ms` (state queued, created_ms set,
// enqueued, counted as submitted, indexed in its dataset); it applies only when the id is unused.
// JobQueue::Submit and the default CreateQueued both apply it.
Transition CreateQueuedTransition(JobRecord record, int64_t now_ms);

// A job for CreateQueued: its record with `spec` left empty, and the spec as JSON (RenderSpec::ToJson),
// which the store writes in its own form (one serialization instead of a dump and a re-parse).
struct NewJob {
  JobRecord record;
  Json spec;
};

// Per-transition outcome of ApplyBrief: whether it applied and the job's state before (nullopt: absent).
struct BriefResult {
  bool applied = false;
  std::optional<JobState> before;
};

// Thread-safety: implementations are safe to call from several threads; each call is atomic.
// Errors: kUnavailable when the backing server cannot be reached; nothing has changed then unless the
// connection broke after the command was sent (callers treat those as "unknown" and re-read).
class JobStore {
 public:
  virtual ~JobStore() = default;

  virtual Status Ping() = 0;
  // Creates the stream and consumer group when missing. Idempotent.
  virtual Status Initialize() = 0;

  virtual Result<TransitionResult> Apply(const Transition& t) = 0;
  // Many independent transitions (each atomic on its own, in order) in few round trips; only whether
  // each applied and the state before come back.
  virtual Result<std::vector<BriefResult>> ApplyBrief(const std::vector<Transition>& ts) = 0;
  // Batch creation: each job (its record's state is ignored) becomes a queued job in its model's ready
  // queue, indexed, counted in stats `submitted`, with created_ms = updated_ms = now_ms, unless a job
  // with its id exists; each result says whether it was created, else the existing job's state. Atomic
  // per job, in order, in few round trips. The default runs one create Transition per job through
  // ApplyBrief; RedisJobStore has a leaner script.
  virtual Result<std::vector<BriefResult>> CreateQueued(std::vector<NewJob> jobs, int64_t now_ms);
  // The state of each job (nullopt: absent), in the order of `ids`; one round trip.
  virtual Result<std::vector<std::optional<JobState>>> GetStates(const std::vector<std::string>& ids) = 0;
  virtual Result<std::optional<JobRecord>> Get(const std::string& id) = 0;
  // Records in the order of `ids`; missing jobs are left out.
  virtual Result<std::vector<JobRecord>> GetMany(const std::vector<std::string>& ids) = 0;
  // GetMany for listings: `spec` may stay in the store's own form, a JSON object with every spec field
  // that is not at its default except model, dataset and priority (the record holds those), which
  // spares RedisJobStore rebuilding every row's full spec.
  virtual Result<std::vector<JobRecord>> GetManyForListing(const std::vector<std::string>& ids) { return GetMany(ids); }
  // Removes a job and every trace of it (indexes, ready queue, lease, delay). False when absent.
  virtual Result<bool> Delete(const std::string& id) = 0;

  // Ids newest first (by created_ms), skipping `offset`, at most `limit`.
  virtual Result<std::vector<std::string>> ListIds(const IndexRef& index, int64_t offset, int64_t limit) = 0;
  // A cursor page in O(log n + limit): the ids that follow `after_id` (the first ones when it is "") in
  // newest-first order (oldest-first when `oldest_first`), at most `limit`. InvalidArgument when
  // `after_id` is not a job.
  virtual Result<std::vector<std::string>> ListIdsAfter(const IndexRef& index, const std::string& after_id,
                                                        int64_t limit, bool oldest_first = false) = 0;
  virtual Result<int64_t> Count(const IndexRef& index) = 0;
  // Job counts by state, of one dataset ("" = all jobs); one round trip.
  virtual Result<std::map<JobState, int64_t>> CountByState(const std::string& dataset) = 0;
  virtual Result<std::vector<std::string>> Datasets() = 0;

  // Number of jobs waiting in each ready queue (queues that ever held a job; 0 when empty now).
  virtual Result<std::map<std::string, int64_t>> ReadyDepths() = 0;
  // The first `limit` job ids of one ready queue in pop order, without popping them (the dispatcher's
  // look-ahead: workers encode upcoming prompts early).
  virtual Result<std::vector<std::string>> ReadyHead(const std::string& queue, int64_t limit) = 0;
  // Puts queued jobs that are in no ready queue and not delayed back into their queue (records written
  // by an older layout, hand edits). Returns how many. Idempotent; run at start-up.
  virtual Result<int64_t> RepairReadyQueues() = 0;

  // Whether each job's lease key exists.
  virtual Result<std::vector<bool>> LeasesAlive(const std::vector<std::string>& ids) = 0;
  // Jobs in `delayed` due at or before now_ms, earliest first.
  virtual Result<std::vector<std::string>> DueDelayed(int64_t now_ms, int limit) = 0;
  virtual Result<int64_t> DelayedCount() = 0;

  // Newest first.
  virtual Result<std::vector<DeadLetter>> DeadLetters(int limit) = 0;
  virtual Status IncrementStats(const std::map<std::string, int64_t>& deltas) = 0;
  virtual Result<std::map<std::string, int64_t>> Stats() = 0;
};

}  // namespace stas::coordinator

// JobStore: the storage primitives the job queue is built on, with Redis semantics.
//
// The queue's *policy* (attempts, backoff, dead-lettering, lease tokens, what a stale ticket is) lives
// in JobQueue; a store only offers atomic operations with no decisions of their own, so the same
// policy runs on RedisJobStore (production) and MemoryJobStore (unit tests, with a fake clock).
//
// Data model (Redis keys under the configured prefix, default "stas:"):
//   job:<id>        hash: one job's record (JobRecord fields)
//   lease:<id>      string: the running attempt's lease token, with a TTL (SET PX); gone = expired
//   jobs            stream of dispatch tickets {job, attempt}; consumer group "coordinators"
//   delayed         sorted set: job id -> time (ms) its retry may be dispatched
//   dead            stream: dead-letter log {job, reason, attempts, at}
//   state:<state>   sorted set per state: job id -> created_ms
//   all             sorted set: every job id -> created_ms
//   dataset:<name>  sorted set: the dataset's job ids -> created_ms;  datasets: name -> first use
//   stats           hash: persistent counters (submitted, completed, failed, dead, retried, ...)
//
// A ticket is a stream entry that asks for one dispatch of a job; the job record names its one
// outstanding ticket, so any other ticket for it is stale. Tickets stay pending (unacknowledged) while
// they are waiting or running and are acknowledged (and deleted) when the job is re-queued, finishes
// or is cancelled: the job is acknowledged only after its output is committed.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

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
  std::string ticket;   // the outstanding stream entry id ("" when none)
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

// A dispatch ticket read from the stream.
struct Ticket {
  std::string entry_id;  // "<ms>-<seq>"
  std::string job_id;
};
// Orders stream entry ids numerically ("9-0" < "10-0"). Malformed ids sort first.
bool EntryIdLess(const std::string& a, const std::string& b);

struct DeadLetter {
  std::string entry_id;
  std::string job_id;
  std::string reason;
  int attempts = 0;
  int64_t at_ms = 0;
};

// An atomic compare-and-set on one job: every precondition must hold, then every effect applies;
// otherwise nothing changes. The store keeps the indexes in step: a state change moves the id between
// state sets, leaving `queued` removes it from `delayed`, the first write adds it to `all`.
struct Transition {
  std::string job_id;
  int64_t now_ms = 0;  // written to updated_ms

  // Preconditions.
  bool require_absent = false;           // the job must not exist (create); other preconditions ignored
  std::vector<JobState> from;            // the current state is one of these (empty: any existing job)
  std::optional<std::string> lease_is;   // the record's lease equals this ("" = no lease)
  std::optional<std::string> ticket_is;  // the record's ticket equals this
  bool lease_key_expired = false;        // the lease key is gone (its holder stopped renewing)

  // Effects, in this order: ack ticket, set/clear/incr fields, state, lease key, delay, new ticket,
  // dead letter, stats, dataset index.
  bool ack_ticket = false;  // acknowledge + delete the record's ticket and clear the field
  std::map<std::string, std::string> set;
  std::vector<std::string> clear;
  std::map<std::string, int64_t> incr;
  std::optional<JobState> to;
  enum class LeaseOp { kKeep, kSet, kDelete };
  LeaseOp lease_op = LeaseOp::kKeep;
  std::string lease_token;     // kSet: SET lease:<id> token PX lease_ttl_ms
  int64_t lease_ttl_ms = 0;
  std::optional<int64_t> delay_until_ms;  // add to `delayed` with this due time
  bool enqueue_ticket = false;            // XADD a ticket (removes from `delayed`); record its id
  std::string dead_letter_reason;         // non-empty: append to the dead-letter stream
  std::map<std::string, int64_t> stats;   // increments of the stats hash
  std::string dataset;                    // non-empty: add to this dataset's index
};

struct TransitionResult {
  bool applied = false;
  std::optional<JobRecord> before;  // nullopt: the job did not exist
  std::optional<JobRecord> after;   // the record after the effects (== before when not applied)
};

// Which index to list.
struct IndexRef {
  enum class Kind { kAll, kState, kDataset };
  Kind kind = Kind::kAll;
  JobState state = JobState::kQueued;
  std::string dataset;
  static IndexRef All() { return {}; }
  static IndexRef State(JobState s) { return {Kind::kState, s, ""}; }
  static IndexRef Dataset(std::string name) { return {Kind::kDataset, JobState::kQueued, std::move(name)}; }
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
  virtual Result<std::optional<JobRecord>> Get(const std::string& id) = 0;
  // Records in the order of `ids`; missing jobs are left out.
  virtual Result<std::vector<JobRecord>> GetMany(const std::vector<std::string>& ids) = 0;
  // Removes a job and every trace of it (indexes, lease, delay, its ticket). False when absent.
  virtual Result<bool> Delete(const std::string& id) = 0;

  // Ids newest first (by created_ms), skipping `offset`, at most `limit`.
  virtual Result<std::vector<std::string>> ListIds(const IndexRef& index, int64_t offset, int64_t limit) = 0;
  virtual Result<int64_t> Count(const IndexRef& index) = 0;
  virtual Result<std::vector<std::string>> Datasets() = 0;

  // Tickets never delivered to any consumer (XREADGROUP ... >), oldest first, at most `count`.
  virtual Result<std::vector<Ticket>> ReadNewTickets(const std::string& consumer, int count) = 0;
  // Tickets delivered to `consumer` and not acknowledged, with ids greater than `after` (paging).
  virtual Result<std::vector<Ticket>> ReadPendingTickets(const std::string& consumer, const std::string& after,
                                                         int count) = 0;
  // Moves tickets pending for at least min_idle_ms (any consumer) to `consumer` and returns them
  // (XAUTOCLAIM; XPENDING + XCLAIM on servers without it). Scans from `cursor` ("0-0" first);
  // `next_cursor` is "0-0" when the scan is complete.
  virtual Result<std::vector<Ticket>> ClaimStaleTickets(const std::string& consumer, int64_t min_idle_ms,
                                                        const std::string& cursor, int count,
                                                        std::string* next_cursor) = 0;
  // Acknowledges and deletes tickets (stale ones; live tickets are acknowledged by transitions).
  virtual Status AckTickets(const std::vector<std::string>& entry_ids) = 0;
  // Tickets delivered but not acknowledged (waiting in a coordinator's buffer or running).
  virtual Result<int64_t> PendingTicketCount() = 0;

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

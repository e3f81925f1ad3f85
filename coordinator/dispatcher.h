// Dispatcher: the coordinator's side of the worker protocol (protocol/protocol.h), without sockets.
//
// The network layer (server.h) turns bytes into messages and calls OnConnect / OnMessage /
// OnDisconnect; the dispatcher answers through the connection's WorkerChannel. Tick() does the periodic
// work. Everything about jobs goes through JobQueue, so every decision is also in Redis.
//
// Protocol handling:
//   hello      -> welcome {worker, heartbeat_ms, lease_ms, storage}, or error + close (bad token, bad hello)
//   ready      -> the group waits; a `job` is sent as soon as its model's ready queue holds one, with
//                 `upcoming_prompts`: the prompts of the jobs behind it in that queue (a hint; the
//                 group encodes them while it renders, and they may still go to another group)
//   heartbeat  -> heartbeat_ack {job_id, cancel}; cancel=true when the job was cancelled or the lease is
//                 no longer this group's (it stalled past lease_ms and the job was re-queued)
//   commit     -> commit_ack {job_id, granted}; granted only for the current lease (fencing)
//   done       -> recorded only for the current lease whose commit this coordinator granted (a worker
//                 re-sends commit before done after a reconnect); the output path recorded is the
//                 coordinator's own, from the job's spec; the worker's output fields are ignored
//   failed     -> recorded for the current lease; the error is cut to 4 KiB on a character boundary
//   Repeats and stale leases are ignored. Strings from workers are bounded and made valid UTF-8;
//   heartbeat progress is clamped (0 <= step <= steps <= 1000, never backwards within a session).
// When Redis is unreachable, commit/done/failed are kept and retried every tick (the group keeps
// waiting for its commit_ack), and heartbeats are acknowledged without cancel.
//
// Restart model: a group that reconnects re-sends its running job's heartbeat with the original lease
// token, which renews (or re-creates) the lease unless the reaper already re-queued the job. The reaper
// waits two lease periods after start-up before expiring anything. Queued jobs wait in the store's ready
// queues, not in the coordinator, so a restart loses none; the first tick also re-enqueues queued jobs
// found in no queue (JobStore::RepairReadyQueues).
//
// Dispatch: each waiting group (longest waiting first) pops the head of its model's ready queue:
// highest priority first, then oldest. A job goes only to a group whose model matches the job's model
// (same string, or the same final path component); jobs of a model no group serves wait in their own
// queue without delaying anyone else.
// Thread-safety: none; call everything from one thread (the server's event loop).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/json.h"
#include "coordinator/clock.h"
#include "coordinator/job_queue.h"

namespace stas::coordinator {

// One worker-group connection, as seen by the dispatcher.
class WorkerChannel {
 public:
  virtual ~WorkerChannel() = default;
  // Queues one message for sending. Never blocks; a closed channel drops it.
  virtual void Send(const Json& message) = 0;
  // Closes the connection after the queued messages are sent. OnDisconnect follows.
  virtual void Close() = 0;
  virtual std::string peer() const = 0;
};

struct DispatcherOptions {
  std::string storage;            // announced in welcome: where groups commit videos
  int64_t heartbeat_ms = 0;       // announced in welcome; 0 = lease_ms / 5
  std::string token;              // when set, hello must carry it
  int64_t reap_interval_ms = 0;   // 0 = min(1000, lease_ms / 4)
  int64_t reaper_grace_ms = -1;   // -1 = 2 x lease_ms: groups reconnecting after a restart keep their jobs
  int upcoming_prompts = 1;       // prompts of the jobs queued next sent with each job (0 = none)
};

// True when a job for `job_model` may run on a group serving `worker_model`.
bool ModelMatches(const std::string& job_model, const std::string& worker_model);

class Dispatcher {
 public:
  using ConnectionId = uint64_t;

  // `queue` and `clock` are borrowed.
  Dispatcher(JobQueue* queue, const Clock* clock, DispatcherOptions options);

  void OnConnect(ConnectionId id, std::shared_ptr<WorkerChannel> channel);
  void OnMessage(ConnectionId id, const Json& message);
  void OnDisconnect(ConnectionId id);
  // A connection sent bytes that are not a valid frame: tell it and close it.
  void OnProtocolError(ConnectionId id, const std::string& error);
  // True once the connection's hello was accepted (the server lifts its pre-hello limits).
  bool Authenticated(ConnectionId id) const;

  // Periodic work: repair the ready queues (first call), promote due retries, retry results kept
  // during a Redis outage, reap expired leases, dispatch.
  void Tick();
  // Dispatches to waiting groups (after a submission).
  void Poke();

  // GET /workers: one object per connected group.
  Json WorkersJson() const;
  // Models of connected groups.
  std::vector<std::string> ServedModels() const;

  struct Snapshot {
    int connections = 0;
    int workers = 0;  // said hello
    int busy = 0;
    int waiting = 0;
    int64_t pending_results = 0;  // results waiting for Redis
    int64_t dispatched = 0;       // since start
    int64_t protocol_errors = 0;  // since start
    double steps_per_second = 0;  // over the last minute
    bool store_ok = true;         // the last store call succeeded
    std::string store_error;
  };
  Snapshot snapshot() const;

 private:
  struct RunningJob {
    std::string job_id;
    std::string lease;
    int step = 0;
    int steps = 0;
    std::string stage;
    int64_t since_ms = 0;
    bool stopping = false;  // told to stop (cancelled, lease lost); still computing until it answers
  };
  struct Session {
    ConnectionId id = 0;
    std::shared_ptr<WorkerChannel> channel;
    bool hello = false;
    std::string worker, model, host;
    int group_size = 1;
    int64_t pid = 0;
    int64_t connected_ms = 0, last_seen_ms = 0;
    bool waiting = false;
    int64_t waiting_since_ms = 0;
    std::optional<RunningJob> job;
    int64_t jobs_done = 0, jobs_failed = 0;
  };
  struct PendingResult {
    ConnectionId connection;
    Json message;  // commit, done or failed
  };
  void HandleHello(Session& s, const Json& m);
  void HandleHeartbeat(Session& s, const Json& m);
  // Returns false when the store was unavailable (the message must be retried).
  bool HandleResult(ConnectionId id, const Json& m);
  void SendError(Session& s, const std::string& message, bool close);
  void NoteStore(const Status& status);

  void Recover();
  void Dispatch();
  void RetryPendingResults();
  void Reap();
  void RecordSteps(int delta);

  JobQueue* queue_;
  const Clock* clock_;
  DispatcherOptions options_;
  LeaseReaper reaper_;
  int64_t start_ms_;
  std::map<ConnectionId, Session> sessions_;
  std::deque<PendingResult> pending_results_;
  std::map<std::string, std::string> granted_commits_;  // job id -> lease whose commit was granted
  bool recovered_ = false;
  int64_t next_reap_ms_ = 0;
  int64_t dispatched_ = 0;
  int64_t protocol_errors_ = 0;
  std::deque<std::pair<int64_t, int>> step_samples_;  // (ms, steps) over the last minute
  bool store_ok_ = true;
  std::string store_error_;
};

}  // namespace stas::coordinator

// CoordinatorLink: a worker group leader's connection to the coordinator (protocol/protocol.h).
//
// One background thread owns the socket. It connects (retrying with exponential backoff), says
// hello, waits for welcome, and then keeps the conversation going while the group's main thread
// renders: it sends `ready` while the group waits for work, a `heartbeat` for the running job on
// every progress update and at least every heartbeat_ms, `commit` when asked, and the job's final
// `done`/`failed`. Everything it sends is derived from state, not queued, so after the coordinator
// restarts (connection lost) the thread reconnects, says hello again and re-sends what is still
// current: the running job's heartbeat with its original lease token, an unanswered commit request,
// the last result (until the next job proves it arrived), and `ready`. The coordinator decides what a
// stale lease gets; the worker never assumes it kept or lost the job.
//
// Thread-safety: every public method may be called from any thread. Nothing here throws; failures of
// the network are retried in the background and never reach the caller except as waiting.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "protocol/protocol.h"

namespace stas::worker {

struct HostPort {
  std::string host;
  int port = 0;
};
// "HOST:PORT" or "[IPv6]:PORT". InvalidArgument otherwise.
Result<HostPort> ParseHostPort(const std::string& text);

struct LinkOptions {
  HostPort coordinator;
  // Fields of every hello frame (worker, group_size, model, host, pid); "type" is added.
  Json hello = Json::object();
  int backoff_initial_ms = 100;  // first reconnect delay; doubles up to backoff_max_ms
  // Kept short so a group is back well inside the restarted coordinator's grace period (docs/RELIABILITY.md).
  int backoff_max_ms = 1000;
  int connect_timeout_ms = 3000;
  int welcome_timeout_ms = 5000;
  int heartbeat_ms = 2000;  // until a welcome says otherwise
};

struct Welcome {
  std::string worker;
  int heartbeat_ms = 0;
  int lease_ms = 0;
  std::string storage;
};

// One `job` frame.
struct JobMessage {
  std::string job_id;
  std::string lease;
  int attempt = 1;
  Json spec;    // RenderSpec JSON, not yet validated
  Json resume;  // opaque to the link; null when there is nothing to resume
  std::string output;  // the video path the coordinator assigned, relative to the storage folder
                       // (empty when the frame named none; the worker then refuses the job)
  // Prompts of the jobs queued behind this one (a hint to encode them early): at most
  // kMaxUpcomingPrompts, each at most jobspec::kMaxPromptBytes; anything else in the frame is dropped.
  std::vector<std::string> upcoming_prompts;
};
inline constexpr size_t kMaxUpcomingPrompts = 4;

struct JobProgress {
  int step = 0;
  int steps = 0;
  std::string stage;  // "load", "encode", "denoise", "decode", "encode_video", "commit"
};

class CoordinatorLink {
 public:
  explicit CoordinatorLink(LinkOptions options);
  ~CoordinatorLink();  // Stop()
  CoordinatorLink(const CoordinatorLink&) = delete;
  CoordinatorLink& operator=(const CoordinatorLink&) = delete;

  // Starts the background thread (once).
  void Start();
  // Stops the thread and closes the connection; a job that arrived but was never taken is handed back
  // with a retryable `failed` first when connected. Idempotent. Waiters return Aborted.
  void Stop();

  // Blocks until the coordinator assigns a job; `ready` is sent on every connection meanwhile.
  // Timeout after timeout_ms (-1 = forever; the wish for a job stays registered between calls, so a
  // job arriving between two calls is kept for the next), Aborted after Stop(). The returned job
  // becomes the running job: heartbeats carry its id and lease until ReportDone/ReportFailed/Abandon.
  Result<JobMessage> WaitForJob(int timeout_ms);

  // Progress of the running job; a heartbeat goes out right away.
  void UpdateProgress(const JobProgress& progress);
  // True once a heartbeat_ack for the running job said cancel.
  bool cancel_requested() const;

  // Asks permission to publish the running job's output and waits for commit_ack, re-asking after a
  // reconnect. Ok(true) = granted, Ok(false) = denied (lease lost: discard), Timeout, Aborted.
  Result<bool> RequestCommit(int timeout_ms);

  // Final result of the running job: `fields` (output, manifest, timings / error, retryable) plus
  // type, job_id and lease. Sent now and again after any reconnect until the next job arrives (the
  // coordinator treats a repeat for the same lease as a no-op).
  void ReportDone(Json fields);
  void ReportFailed(const std::string& error, bool retryable);
  // Forgets the running job without a result (its commit was denied: another group owns it now).
  void Abandon();
  // Waits until the last result has been written to a live connection (before a clean exit).
  // False on timeout.
  bool FlushResult(int timeout_ms);

  // The last welcome, if any.
  std::optional<Welcome> welcome() const;
  // Waits for the first welcome. Timeout / Aborted.
  Result<Welcome> WaitForWelcome(int timeout_ms);
  bool connected() const;
  // Successful handshakes so far (1 after the first welcome; each reconnect adds one).
  int64_t handshakes() const;

 private:
  struct Running {
    std::string job_id;
    std::string lease;
    JobProgress progress;
    bool progress_dirty = true;
    bool cancel = false;
  };

  void RunLoop();
  // Hello -> welcome on a fresh connection.
  Status Handshake(int fd, protocol::FrameDecoder& decoder);
  // One connected session: returns when the connection is lost or Stop() was called.
  // Returns false when the session ended in an error (bad frame, an error message from the
  // coordinator, a failed send): the reconnect then backs off.
  bool ServeConnection(int fd, protocol::FrameDecoder& decoder);
  // Handles one frame from the coordinator (IO thread); may answer on `fd`.
  Status HandleMessage(int fd, const Json& message);
  void Wake();
  void SetResult(Json message);

  LinkOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  bool stopping_ = false;
  bool connected_ = false;
  int64_t handshakes_ = 0;
  bool coordinator_error_ = false;  // the current session got an error message (link thread only)
  std::optional<Welcome> welcome_;
  int heartbeat_ms_;
  // Per-connection "already sent" flags are reset on every handshake.
  bool waiting_for_job_ = false;
  bool ready_sent_ = false;
  std::optional<JobMessage> delivered_job_;  // arrived, not yet taken by WaitForJob
  std::optional<Running> running_;
  bool commit_pending_ = false;
  bool commit_sent_ = false;
  std::optional<bool> commit_answer_;
  std::optional<Json> result_;  // done/failed frame of the last job
  bool result_sent_ = false;     // handed to this connection's socket
  bool result_written_ = false;  // the write returned
  int socket_fd_ = -1;  // the live connection, so Stop() can shut it down
  int wake_read_fd_ = -1;
  int wake_write_fd_ = -1;
  std::thread thread_;
};

}  // namespace stas::worker

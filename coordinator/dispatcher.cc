#include "coordinator/dispatcher.h"

#include <algorithm>
#include <cstdlib>
#include <set>
#include <tuple>
#include <utility>

#include "common/log.h"
#include "common/text.h"
#include "coordinator/auth.h"
#include "protocol/protocol.h"
#include "storage/output_layout.h"

namespace stas::coordinator {

namespace {

std::string BaseName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Field accessors that never throw: nullopt when missing or of another type. Strings are bounded
// (a worker's text ends up in logs, the store and HTTP answers) and always valid UTF-8.
std::optional<std::string> StringField(const Json& m, const char* key, size_t max_bytes = 4096) {
  auto it = m.find(key);
  if (it == m.end() || !it->is_string()) return std::nullopt;
  return TruncateUtf8(it->get_ref<const std::string&>(), max_bytes);
}

// A stage name as shown on /workers and the status page: short, printable ASCII.
std::string CleanStage(const std::string& stage) {
  std::string out;
  for (char c : stage.substr(0, protocol::kMaxStageBytes))
    out.push_back(static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f ? c : '?');
  return out;
}
std::optional<int64_t> IntField(const Json& m, const char* key) {
  auto it = m.find(key);
  if (it == m.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

// The video and manifest a job is assigned, relative to the storage folder:
// "<dataset or single>/<output name or job id>.mp4" (and ".json"), from the job's own spec. The
// coordinator sends the video path in the job message and records it on done; a worker never chooses
// it. Empty when the spec's names are not valid (submission refuses those; a worker refuses an empty
// assignment).
std::pair<std::string, std::string> AssignedOutput(const std::string& job_id, const Json& spec) {
  const auto text = [&](const char* key) {
    return spec.is_object() && spec.contains(key) && spec[key].is_string() ? spec[key].get<std::string>() : "";
  };
  auto paths = storage::OutputLayout(".").PathsFor(job_id, text("dataset"), text("output_name"));
  if (!paths.ok()) return {};
  return {paths->video.substr(2), paths->manifest.substr(2)};  // without the leading "./"
}

}  // namespace

bool ModelMatches(const std::string& job_model, const std::string& worker_model) {
  if (job_model == worker_model) return true;
  const std::string a = BaseName(job_model), b = BaseName(worker_model);
  return !a.empty() && a == b;
}

Dispatcher::Dispatcher(JobQueue* queue, const Clock* clock, DispatcherOptions options)
    : queue_(queue),
      clock_(clock),
      options_(std::move(options)),
      reaper_(queue, clock, options_.reaper_grace_ms < 0 ? 2 * queue->options().lease_ms : options_.reaper_grace_ms),
      start_ms_(clock->NowMs()) {
  if (options_.heartbeat_ms <= 0) options_.heartbeat_ms = std::max<int64_t>(50, queue->options().lease_ms / 5);
  if (options_.reap_interval_ms <= 0)
    options_.reap_interval_ms = std::clamp<int64_t>(queue->options().lease_ms / 4, 10, 1000);
}

void Dispatcher::NoteStore(const Status& status) {
  if (status.ok()) {
    if (!store_ok_) STAS_LOG_INFO("job store reachable again");
    store_ok_ = true;
    store_error_.clear();
    return;
  }
  if (store_ok_) STAS_LOG_WARN("job store call failed: {}", status.ToString());
  store_ok_ = false;
  store_error_ = status.ToString();
}

// ------------------------------------------------------------------------------------ connections

void Dispatcher::OnConnect(ConnectionId id, std::shared_ptr<WorkerChannel> channel) {
  Session s;
  s.id = id;
  s.channel = std::move(channel);
  s.connected_ms = s.last_seen_ms = clock_->NowMs();
  sessions_[id] = std::move(s);
}

void Dispatcher::OnDisconnect(ConnectionId id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  const Session& s = it->second;
  if (s.hello) {
    if (s.job)
      STAS_LOG_WARN("worker group '{}' disconnected while running job {}; its lease stays until it reconnects or "
                    "expires", s.worker, s.job->job_id);
    else
      STAS_LOG_INFO("worker group '{}' disconnected", s.worker);
  }
  sessions_.erase(it);
  // Commit requests of this connection can no longer be answered; results are facts and stay queued.
  pending_results_.erase(std::remove_if(pending_results_.begin(), pending_results_.end(),
                                        [&](const PendingResult& p) {
                                          return p.connection == id && p.message.value("type", "") == "commit";
                                        }),
                         pending_results_.end());
}

void Dispatcher::OnProtocolError(ConnectionId id, const std::string& error) {
  ++protocol_errors_;
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  STAS_LOG_WARN("worker connection {} ({}): {}", id, it->second.channel->peer(), error);
  SendError(it->second, error, true);
}

bool Dispatcher::Authenticated(ConnectionId id) const {
  auto it = sessions_.find(id);
  return it != sessions_.end() && it->second.hello;
}

void Dispatcher::SendError(Session& s, const std::string& message, bool close) {
  s.channel->Send({{"type", "error"}, {"message", message}});
  if (close) s.channel->Close();
}

void Dispatcher::OnMessage(ConnectionId id, const Json& m) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  Session& s = it->second;
  s.last_seen_ms = clock_->NowMs();
  const std::string type = StringField(m, "type").value_or("");
  if (type == "hello") return HandleHello(s, m);
  if (!s.hello) {
    ++protocol_errors_;
    return SendError(s, "the first message must be hello", true);
  }
  if (type == "ready") {
    if (s.job) {
      // The group gave up its job (e.g. its commit was denied); the lease runs out on its own.
      STAS_LOG_INFO("worker group '{}' is ready again; it no longer runs job {}", s.worker, s.job->job_id);
      s.job.reset();
    }
    if (!s.waiting) {
      s.waiting = true;
      s.waiting_since_ms = clock_->NowMs();
    }
    Poke();
    return;
  }
  if (type == "heartbeat") return HandleHeartbeat(s, m);
  if (type == "commit" || type == "done" || type == "failed") {
    if (!StringField(m, "job_id") || !StringField(m, "lease")) {
      ++protocol_errors_;
      return SendError(s, type + ": fields 'job_id' and 'lease' must be strings", false);
    }
    if (!pending_results_.empty() || !HandleResult(id, m)) pending_results_.push_back({id, m});
    return;
  }
  ++protocol_errors_;
  SendError(s, "unknown message type '" + type + "'", false);
}

void Dispatcher::HandleHello(Session& s, const Json& m) {
  if (s.hello) {
    ++protocol_errors_;
    return SendError(s, "hello was already received on this connection", false);
  }
  if (!options_.token.empty() && !TokenMatches(StringField(m, "token").value_or(""), options_.token)) {
    STAS_LOG_WARN("worker connection from {} refused: missing or wrong token", s.channel->peer());
    return SendError(s, "unauthorized: hello must carry the coordinator's token", true);
  }
  auto model = StringField(m, "model", 1024);
  if (!model || model->empty()) return SendError(s, "hello: field 'model' must be a non-empty string", true);
  auto group_size = IntField(m, "group_size");
  if (m.contains("group_size") && (!group_size || *group_size < 1 || *group_size > 1 << 16))
    return SendError(s, "hello: field 'group_size' must be a positive integer", true);
  s.hello = true;
  s.model = *model;
  s.group_size = static_cast<int>(group_size.value_or(1));
  s.worker = StringField(m, "worker", 200).value_or("");
  if (s.worker.empty()) s.worker = "group-" + std::to_string(s.id);
  s.host = StringField(m, "host", 256).value_or("");
  s.pid = IntField(m, "pid").value_or(0);
  s.channel->Send({{"type", "welcome"},
                   {"worker", s.worker},
                   {"heartbeat_ms", options_.heartbeat_ms},
                   {"lease_ms", queue_->options().lease_ms},
                   {"storage", options_.storage}});
  STAS_LOG_INFO("worker group '{}' connected from {} (model {}, {} ranks)", s.worker, s.channel->peer(), s.model,
                s.group_size);
}

void Dispatcher::HandleHeartbeat(Session& s, const Json& m) {
  auto job_id = StringField(m, "job_id");
  auto lease = StringField(m, "lease");
  if (!job_id || !lease) {
    ++protocol_errors_;
    return SendError(s, "heartbeat: fields 'job_id' and 'lease' must be strings", false);
  }
  // Progress is bounded: steps by the spec's limit, step by steps, and never backwards on this
  // session (a forged heartbeat cannot push the step counter by more than one job's steps).
  const int steps = static_cast<int>(std::clamp<int64_t>(IntField(m, "steps").value_or(0), 0, protocol::kMaxJobSteps));
  int step = static_cast<int>(std::clamp<int64_t>(IntField(m, "step").value_or(0), 0, steps));
  if (s.job && s.job->job_id == *job_id && s.job->lease == *lease) step = std::max(step, std::min(s.job->step, steps));
  const std::string stage = CleanStage(StringField(m, "stage", protocol::kMaxStageBytes).value_or(""));
  auto outcome = queue_->Heartbeat(*job_id, *lease, step, steps, stage);
  NoteStore(outcome.ok() ? Status::Ok() : outcome.status());
  bool cancel = false;
  if (!outcome.ok()) {
    // Redis is unreachable: we cannot tell, so let the group go on; its lease is what decides.
  } else if (*outcome == HeartbeatOutcome::kRenewed) {
    const int previous = s.job && s.job->job_id == *job_id ? s.job->step : step;
    if (!s.job || s.job->job_id != *job_id) {
      if (!s.job) STAS_LOG_INFO("worker group '{}' resumed reporting job {} (lease renewed)", s.worker, *job_id);
      s.job = RunningJob{*job_id, *lease, step, steps, stage, clock_->NowMs()};
    }
    RecordSteps(step - previous);
    s.job->lease = *lease;
    s.job->step = step;
    s.job->steps = steps;
    s.job->stage = stage;
    s.waiting = false;
  } else {
    cancel = true;
    const char* why = *outcome == HeartbeatOutcome::kCancelled  ? "the job was cancelled"
                      : *outcome == HeartbeatOutcome::kUnknownJob ? "the job does not exist"
                                                                   : "its lease is no longer current";
    STAS_LOG_INFO("telling worker group '{}' to stop job {}: {}", s.worker, *job_id, why);
    // The group is still computing until it answers (failed or ready): /workers says "stopping",
    // not idle, and it gets no new job before then.
    if (!s.job || s.job->job_id != *job_id) s.job = RunningJob{*job_id, *lease, step, steps, stage, clock_->NowMs()};
    s.job->stopping = true;
  }
  s.channel->Send({{"type", "heartbeat_ack"}, {"job_id", *job_id}, {"cancel", cancel}});
}

bool Dispatcher::HandleResult(ConnectionId id, const Json& m) {
  auto it = sessions_.find(id);
  Session* s = it == sessions_.end() ? nullptr : &it->second;
  const std::string type = m.value("type", "");
  const std::string job_id = m.value("job_id", "");
  const std::string lease = m.value("lease", "");
  const std::string who = s ? s->worker : "a disconnected group";
  if (type == "commit") {
    if (!s) return true;  // nobody to answer
    auto granted = queue_->GrantCommit(job_id, lease);
    NoteStore(granted.ok() ? Status::Ok() : granted.status());
    if (!granted.ok()) {
      if (granted.status().code() == StatusCode::kUnavailable) return false;
      STAS_LOG_ERROR("commit of job {} by '{}': {}", job_id, who, granted.status().ToString());
      granted = false;
    }
    if (!*granted) STAS_LOG_WARN("commit of job {} by '{}' denied: the lease is not current", job_id, who);
    if (*granted) {
      if (granted_commits_.size() >= 100000) granted_commits_.erase(granted_commits_.begin());  // bounded
      granted_commits_[job_id] = lease;
    }
    s->channel->Send({{"type", "commit_ack"}, {"job_id", job_id}, {"granted", *granted}});
    return true;
  }
  if (type == "done") {
    // A done without this lease's granted commit is refused: only the group that holds the commit
    // may say the video is in place.
    auto grant = granted_commits_.find(job_id);
    if (grant == granted_commits_.end() || grant->second != lease) {
      ++protocol_errors_;
      STAS_LOG_WARN("refusing done of job {} from '{}': no commit was granted for that lease", job_id, who);
      if (s) SendError(*s, "done of job " + job_id + " refused: ask for commit first", false);
      return true;
    }
    // The output path is the one the coordinator assigned in the job message, from the job's own
    // spec; never one a worker names.
    auto record = queue_->Get(job_id);
    NoteStore(record.ok() ? Status::Ok() : record.status());
    if (!record.ok()) {
      if (record.status().code() == StatusCode::kUnavailable) return false;
      STAS_LOG_ERROR("done of job {} by '{}': {}", job_id, who, record.status().ToString());
      return true;
    }
    std::string output, manifest;
    if (*record) std::tie(output, manifest) = AssignedOutput(job_id, Json::parse((*record)->spec, nullptr, false));
    const std::string claimed = StringField(m, "output").value_or(output);
    if (claimed != output)
      STAS_LOG_WARN("job {}: worker '{}' reported output '{}'; recording '{}'", job_id, who, claimed, output);
    Json timings = Json::object();
    if (m.contains("timings") && m["timings"].is_object())
      for (auto it = m["timings"].begin(); it != m["timings"].end() && timings.size() < 32; ++it)
        if (it.value().is_number()) timings[TruncateUtf8(it.key(), 64)] = it.value();
    auto outcome = queue_->Complete(job_id, lease, output, manifest, timings);
    NoteStore(outcome.ok() ? Status::Ok() : outcome.status());
    if (!outcome.ok()) {
      if (outcome.status().code() == StatusCode::kUnavailable) return false;
      STAS_LOG_ERROR("done of job {} by '{}': {}", job_id, who, outcome.status().ToString());
      return true;
    }
    if (*outcome != CompleteOutcome::kRejected) granted_commits_.erase(job_id);
    if (*outcome == CompleteOutcome::kCompleted) {
      STAS_LOG_INFO("job {} done by '{}': {}", job_id, who, output);
      if (s) ++s->jobs_done;
    } else if (*outcome == CompleteOutcome::kRejected) {
      STAS_LOG_WARN("ignoring done of job {} from '{}': the lease is not current", job_id, who);
    }
  } else {  // failed
    const std::string error = StringField(m, "error", protocol::kMaxErrorBytes).value_or("");
    const bool retryable = m.contains("retryable") && m["retryable"].is_boolean() ? m["retryable"].get<bool>() : true;
    auto outcome = queue_->Fail(job_id, lease, error, retryable);
    NoteStore(outcome.ok() ? Status::Ok() : outcome.status());
    if (!outcome.ok()) {
      if (outcome.status().code() == StatusCode::kUnavailable) return false;
      STAS_LOG_ERROR("failed of job {} by '{}': {}", job_id, who, outcome.status().ToString());
      return true;
    }
    static const char* kNames[] = {"retry scheduled", "failed", "dead-lettered", "ignored (lease not current)"};
    STAS_LOG_WARN("job {} failed on '{}' ({}): {}", job_id, who, kNames[static_cast<int>(*outcome)], error);
    if (s && *outcome != FailOutcome::kRejected) ++s->jobs_failed;
    if (*outcome != FailOutcome::kRejected) granted_commits_.erase(job_id);
  }
  if (s && s->job && s->job->job_id == job_id) s->job.reset();
  return true;
}

void Dispatcher::RetryPendingResults() {
  while (!pending_results_.empty()) {
    if (!HandleResult(pending_results_.front().connection, pending_results_.front().message)) return;
    pending_results_.pop_front();
  }
}

// -------------------------------------------------------------------------------------- dispatch

void Dispatcher::Recover() {
  auto repaired = queue_->store().RepairReadyQueues();
  NoteStore(repaired.ok() ? Status::Ok() : repaired.status());
  if (!repaired.ok()) return;  // try again next tick
  if (*repaired > 0) STAS_LOG_WARN("put {} queued jobs that were in no ready queue back into their queues", *repaired);
  recovered_ = true;
}

void Dispatcher::Dispatch() {
  std::vector<Session*> waiting;
  for (auto& [id, s] : sessions_)
    if (s.hello && s.waiting && !s.job) waiting.push_back(&s);
  if (waiting.empty()) return;
  std::sort(waiting.begin(), waiting.end(),
            [](const Session* a, const Session* b) { return a->waiting_since_ms < b->waiting_since_ms; });
  std::set<std::string> empty_queues;  // found empty in this pass: the other groups of that model skip it
  for (Session* s : waiting) {
    const std::string queue = ReadyQueueName(s->model);
    if (empty_queues.count(queue)) continue;
    auto started = queue_->StartNext(s->model, s->worker);
    NoteStore(started.ok() ? Status::Ok() : started.status());
    if (!started.ok()) {
      if (started.status().code() == StatusCode::kUnavailable) return;
      STAS_LOG_ERROR("cannot start a job of model {}: {}", s->model, started.status().ToString());
      continue;
    }
    if (!started->has_value()) {
      empty_queues.insert(queue);
      continue;
    }
    const Assignment& a = **started;
    s->waiting = false;
    s->job = RunningJob{a.job_id, a.lease, 0, 0, "assigned", clock_->NowMs()};
    ++dispatched_;
    Json message = {{"type", "job"},
                    {"job_id", a.job_id},
                    {"lease", a.lease},
                    {"attempt", a.attempt},
                    {"spec", a.spec},
                    {"resume", a.resume},
                    {"output", AssignedOutput(a.job_id, a.spec).first}};
    if (options_.upcoming_prompts > 0) {
      // Only a hint: a store error costs the worker the early encode, nothing else.
      auto upcoming = queue_->UpcomingPrompts(s->model, options_.upcoming_prompts);
      if (upcoming.ok() && !upcoming->empty()) message["upcoming_prompts"] = *upcoming;
    }
    s->channel->Send(message);
    STAS_LOG_INFO("job {} (attempt {}) -> worker group '{}'", a.job_id, a.attempt, s->worker);
  }
}

void Dispatcher::Reap() {
  auto moved = reaper_.Tick();
  NoteStore(moved.ok() ? Status::Ok() : moved.status());
  if (!moved.ok()) return;
  if (*moved > 0) {
    // Forget the jobs the reaper took away from sessions that are still connected but silent.
    for (auto& [id, s] : sessions_) {
      if (!s.job) continue;
      auto rec = queue_->Get(s.job->job_id);
      if (rec.ok() && (!*rec || (*rec)->lease != s.job->lease || (*rec)->state != JobState::kRunning)) s.job.reset();
    }
  }
}

void Dispatcher::RecordSteps(int delta) {
  if (delta <= 0) return;
  step_samples_.emplace_back(clock_->NowMs(), delta);
}

// ---------------------------------------------------------------------------------------- periodic

void Dispatcher::Tick() {
  const int64_t now = clock_->NowMs();
  RetryPendingResults();
  if (!recovered_) Recover();
  auto promoted = queue_->PromoteDue();
  NoteStore(promoted.ok() ? Status::Ok() : promoted.status());
  if (now >= next_reap_ms_) {
    next_reap_ms_ = now + options_.reap_interval_ms;
    Reap();
  }
  Dispatch();
  while (!step_samples_.empty() && step_samples_.front().first < now - 60000) step_samples_.pop_front();
}

void Dispatcher::Poke() { Dispatch(); }

// ----------------------------------------------------------------------------------------- reports

Json Dispatcher::WorkersJson() const {
  Json out = Json::array();
  for (const auto& [id, s] : sessions_) {
    if (!s.hello) continue;
    Json w = {{"connection", id},
              {"worker", s.worker},
              {"model", s.model},
              {"group_size", s.group_size},
              {"host", s.host},
              {"pid", s.pid},
              {"peer", s.channel->peer()},
              {"connected_ms", s.connected_ms},
              {"last_seen_ms", s.last_seen_ms},
              {"state", s.job ? (s.job->stopping ? "stopping" : "busy") : s.waiting ? "waiting" : "idle"},
              {"jobs_done", s.jobs_done},
              {"jobs_failed", s.jobs_failed},
              {"job", nullptr}};
    if (s.job)
      w["job"] = {{"id", s.job->job_id}, {"step", s.job->step}, {"steps", s.job->steps}, {"stage", s.job->stage},
                  {"since_ms", s.job->since_ms}};
    out.push_back(std::move(w));
  }
  return out;
}

std::vector<std::string> Dispatcher::ServedModels() const {
  std::vector<std::string> out;
  for (const auto& [id, s] : sessions_)
    if (s.hello && std::find(out.begin(), out.end(), s.model) == out.end()) out.push_back(s.model);
  return out;
}

Dispatcher::Snapshot Dispatcher::snapshot() const {
  Snapshot snap;
  snap.connections = static_cast<int>(sessions_.size());
  for (const auto& [id, s] : sessions_) {
    if (!s.hello) continue;
    ++snap.workers;
    if (s.job) ++snap.busy;
    else if (s.waiting) ++snap.waiting;
  }
  snap.pending_results = static_cast<int64_t>(pending_results_.size());
  snap.dispatched = dispatched_;
  snap.protocol_errors = protocol_errors_;
  int64_t steps = 0;
  const int64_t now = clock_->NowMs();
  for (const auto& [ms, n] : step_samples_)
    if (ms >= now - 60000) steps += n;
  // Over the last minute, or since start-up when that was more recent.
  const double window_s = std::clamp(static_cast<double>(now - start_ms_) / 1000.0, 1.0, 60.0);
  snap.steps_per_second = static_cast<double>(steps) / window_s;
  snap.store_ok = store_ok_;
  snap.store_error = store_error_;
  return snap;
}

}  // namespace stas::coordinator

#include "coordinator/job_queue.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <unordered_map>

#include "common/check.h"
#include "common/log.h"
#include "common/text.h"
#include "coordinator/auth.h"
#include "coordinator/parallel_for.h"

namespace stas::coordinator {

namespace {

constexpr int kMaxCasRetries = 5;

std::string Str(int64_t v) { return std::to_string(v); }

Transition Base(const std::string& id, int64_t now) {
  Transition t;
  t.job_id = id;
  t.now_ms = now;
  return t;
}

}  // namespace

Status ValidateQueueOptions(const QueueOptions& o) {
  if (o.lease_ms < 100) return InvalidArgument("lease_ms must be at least 100, got " + Str(o.lease_ms));
  if (o.max_attempts < 1 || o.max_attempts > 1000) return InvalidArgument("max_attempts must be in [1, 1000]");
  if (o.backoff_initial_ms < 0 || o.backoff_max_ms < o.backoff_initial_ms)
    return InvalidArgument("backoff must satisfy 0 <= backoff_initial_ms <= backoff_max_ms");
  if (!(o.backoff_multiplier >= 1.0) || o.backoff_multiplier > 100) return InvalidArgument("backoff_multiplier must be in [1, 100]");
  return Status::Ok();
}

JobQueue::JobQueue(JobStore* store, const Clock* clock, QueueOptions options)
    : store_(store), clock_(clock), options_(options) {}

int64_t JobQueue::BackoffMs(int attempts) const {
  const double exponent = std::max(0, attempts - 1);
  const double ms = static_cast<double>(options_.backoff_initial_ms) * std::pow(options_.backoff_multiplier, exponent);
  return static_cast<int64_t>(std::min(ms, static_cast<double>(options_.backoff_max_ms)));
}

std::string JobQueue::NewLeaseToken(int attempt) {
  // From the kernel's CSPRNG: a lease is what lets a group commit, complete or fail a job, so it must
  // not be guessable from leases seen before.
  auto random = RandomHex(16);
  STAS_CHECK(random.ok()) << random.status().ToString();
  return "a" + std::to_string(attempt) + "-" + *random;
}

// ---------------------------------------------------------------------------------------------- users

Result<SubmitResult> JobQueue::Submit(const jobspec::RenderSpec& spec, const Json& api) {
  STAS_RETURN_IF_ERROR(spec.Validate());
  const std::string id = spec.JobId();
  const std::string api_text = api.is_null() ? "" : api.dump();
  for (int i = 0; i < kMaxCasRetries; ++i) {
    const int64_t now = clock_->NowMs();
    JobRecord rec;
    rec.id = id;
    rec.spec = spec.ToJson().dump();
    rec.model = spec.model;
    rec.dataset = spec.dataset;
    rec.priority = spec.priority;
    rec.api = api_text;
    STAS_ASSIGN_OR_RETURN(TransitionResult r, store_->Apply(CreateQueuedTransition(rec, now)));
    if (r.applied) return SubmitResult{id, SubmitOutcome::kCreated, *r.after};
    if (!r.before) continue;  // deleted meanwhile: try again
    const JobState s = r.before->state;
    if (s != JobState::kFailed && s != JobState::kDead && s != JobState::kCancelled)
      return SubmitResult{id, SubmitOutcome::kExisting, *r.before};
    Transition again = Base(id, now);
    again.from = {JobState::kFailed, JobState::kDead, JobState::kCancelled};
    again.set = {{"spec", rec.spec},     {"model", rec.model}, {"dataset", rec.dataset},
                 {"priority", Str(rec.priority)}, {"attempts", "0"},  {"step", "0"},
                 {"steps", "0"},          {"stage", ""},        {"error", ""},
                 {"output", ""},          {"manifest", ""},     {"timings", ""},
                 {"lease", ""},           {"worker", ""},       {"started_ms", "0"},
                 {"finished_ms", "0"},    {"retry_at_ms", "0"}, {"heartbeat_ms", "0"},
                 {"api", api_text}};
    again.to = JobState::kQueued;
    again.lease_op = Transition::LeaseOp::kDelete;
    again.enqueue = true;
    again.stats = {{"submitted", 1}, {"resubmitted", 1}};
    again.dataset = spec.dataset;
    STAS_ASSIGN_OR_RETURN(TransitionResult r2, store_->Apply(again));
    if (r2.applied) return SubmitResult{id, SubmitOutcome::kResubmitted, *r2.after};
  }
  return Unavailable("job " + id + " changed state repeatedly during submission; try again");
}

Result<std::vector<SubmitResult>> JobQueue::SubmitMany(const std::vector<SubmitItem>& items, size_t* done) {
  if (done) *done = 0;
  std::vector<std::string> ids(items.size());
  std::vector<Status> invalid(items.size());
  ParallelFor(items.size(), [&](size_t i) {
    invalid[i] = items[i].spec.Validate();
    if (invalid[i].ok()) ids[i] = items[i].spec.JobId();
  });
  for (size_t i = 0; i < items.size(); ++i)
    if (!invalid[i].ok()) return InvalidArgument("jobs[" + std::to_string(i) + "]: " + invalid[i].message());
  std::vector<SubmitResult> out(items.size());
  STAS_ASSIGN_OR_RETURN(auto states, store_->GetStates(ids));
  // Creations for absent ids (the first of duplicates within the batch); the rest are answered below.
  std::vector<NewJob> creates;
  std::vector<size_t> create_index;
  std::unordered_map<std::string, size_t> first_of;
  first_of.reserve(items.size());
  std::vector<size_t> slow;  // re-queues and lost races: one at a time through Submit
  const int64_t now = clock_->NowMs();
  for (size_t i = 0; i < items.size(); ++i) {
    out[i].id = ids[i];
    auto [it, fresh] = first_of.emplace(ids[i], i);
    if (!fresh) continue;  // a duplicate within the batch: same answer as its first
    if (!states[i]) {
      const auto& spec = items[i].spec;
      NewJob job;
      job.record.id = ids[i];
      job.record.model = spec.model;
      job.record.dataset = spec.dataset;
      job.record.priority = spec.priority;
      job.record.api = items[i].api.is_null() ? "" : items[i].api.dump();
      creates.push_back(std::move(job));
      create_index.push_back(i);
    } else if (*states[i] == JobState::kFailed || *states[i] == JobState::kDead || *states[i] == JobState::kCancelled) {
      slow.push_back(i);
    } else {
      out[i].outcome = SubmitOutcome::kExisting;
      out[i].record.id = ids[i];
      out[i].record.state = *states[i];
    }
  }
  ParallelFor(creates.size(), [&](size_t k) { creates[k].spec = items[create_index[k]].spec.ToJson(); });
  STAS_ASSIGN_OR_RETURN(auto created, store_->CreateQueued(std::move(creates), now));
  for (size_t k = 0; k < create_index.size(); ++k) {
    const size_t i = create_index[k];
    if (created[k].applied) {
      out[i].outcome = SubmitOutcome::kCreated;
      out[i].record.id = ids[i];
      out[i].record.state = JobState::kQueued;
    } else {
      slow.push_back(i);  // created by someone else meanwhile
    }
  }
  std::sort(slow.begin(), slow.end());
  for (size_t i : slow) {
    auto r = Submit(items[i].spec, items[i].api);
    if (!r.ok()) {
      if (done) *done = i;
      return r.status();
    }
    out[i] = std::move(*r);
  }
  for (size_t i = 0; i < items.size(); ++i) {
    const size_t first = first_of.at(ids[i]);
    if (first != i) {
      out[i] = out[first];
      out[i].outcome = SubmitOutcome::kExisting;
    }
  }
  if (done) *done = items.size();
  return out;
}

Result<std::optional<JobRecord>> JobQueue::Get(const std::string& id) { return store_->Get(id); }

Result<std::vector<JobRecord>> JobQueue::List(const ListQuery& q) {
  const int64_t limit = std::clamp<int64_t>(q.limit, 0, 10000);
  IndexRef index = !q.dataset.empty() && q.state ? IndexRef::DatasetState(q.dataset, *q.state)
                   : !q.dataset.empty()          ? IndexRef::Dataset(q.dataset)
                   : q.state                     ? IndexRef::State(*q.state)
                                                 : IndexRef::All();
  std::vector<std::string> ids;
  if (!q.after.empty()) {
    STAS_ASSIGN_OR_RETURN(ids, store_->ListIdsAfter(index, q.after, limit));
  } else {
    STAS_ASSIGN_OR_RETURN(ids, store_->ListIds(index, q.offset, limit));
  }
  return q.prompt_only ? store_->GetManyForListing(ids) : store_->GetMany(ids);
}

Result<std::map<JobState, int64_t>> JobQueue::Counts(const std::string& dataset) {
  return store_->CountByState(dataset);
}

Result<std::pair<CancelOutcome, JobRecord>> JobQueue::Cancel(const std::string& id) {
  for (int i = 0; i < kMaxCasRetries; ++i) {
    const int64_t now = clock_->NowMs();
    Transition t = Base(id, now);
    t.from = {JobState::kQueued, JobState::kRunning};
    t.to = JobState::kCancelled;
    t.lease_op = Transition::LeaseOp::kDelete;
    t.set = {{"finished_ms", Str(now)}, {"error", "cancelled by request"}, {"retry_at_ms", "0"}};
    t.stats = {{"cancelled", 1}};
    STAS_ASSIGN_OR_RETURN(TransitionResult r, store_->Apply(t));
    if (r.applied) return std::make_pair(CancelOutcome::kCancelled, *r.after);
    if (!r.before) return NotFound("no job '" + id + "'");
    if (r.before->state == JobState::kCancelled) return std::make_pair(CancelOutcome::kAlreadyCancelled, *r.before);
    if (IsTerminal(r.before->state)) return std::make_pair(CancelOutcome::kAlreadyFinished, *r.before);
  }
  return Unavailable("job " + id + " changed state repeatedly during cancellation; try again");
}

Result<bool> JobQueue::Delete(const std::string& id) {
  auto cancelled = Cancel(id);
  if (!cancelled.ok() && cancelled.status().code() == StatusCode::kNotFound) return false;
  if (!cancelled.ok()) return cancelled.status();
  return store_->Delete(id);
}

// ------------------------------------------------------------------------------------------- dispatch

Result<std::vector<std::string>> JobQueue::UpcomingPrompts(const std::string& model, int limit) {
  std::vector<std::string> prompts;
  if (limit < 1) return prompts;
  STAS_ASSIGN_OR_RETURN(std::vector<std::string> ids, store_->ReadyHead(ReadyQueueName(model), limit));
  if (ids.empty()) return prompts;
  // The listing form keeps the prompt (never at its default) without rebuilding the whole spec.
  STAS_ASSIGN_OR_RETURN(std::vector<JobRecord> records, store_->GetManyForListing(ids));
  for (const JobRecord& r : records) {
    auto spec = ParseJson(r.spec, "job " + r.id + " spec");
    if (spec.ok() && spec->is_object() && spec->contains("prompt") && (*spec)["prompt"].is_string())
      prompts.push_back((*spec)["prompt"].get<std::string>());
  }
  return prompts;
}

Result<std::optional<Assignment>> JobQueue::StartNext(const std::string& model, const std::string& worker) {
  const int64_t now = clock_->NowMs();
  // The attempt number is not known before the pop; the token's prefix only helps reading logs.
  const std::string token = NewLeaseToken(0);
  Transition t = Base("", now);
  t.pop_ready = ReadyQueueName(model);
  t.from = {JobState::kQueued};
  t.to = JobState::kRunning;
  t.incr = {{"attempts", 1}};
  t.set = {{"lease", token}, {"worker", worker}, {"started_ms", Str(now)}, {"heartbeat_ms", Str(now)},
           {"step", "0"},    {"stage", "assigned"}, {"retry_at_ms", "0"}, {"finished_ms", "0"}};
  t.lease_op = Transition::LeaseOp::kSet;
  t.lease_token = token;
  t.lease_ttl_ms = options_.lease_ms;
  STAS_ASSIGN_OR_RETURN(TransitionResult r, store_->Apply(t));
  if (!r.applied || !r.after) return std::optional<Assignment>();
  Assignment a;
  a.job_id = r.job_id;
  a.lease = token;
  a.attempt = r.after->attempts;
  a.record = *r.after;
  auto spec = ParseJson(r.after->spec, "job " + a.job_id + " spec");
  if (!spec.ok()) {
    // A record we cannot read is a bug or tampering; fail it rather than loop on it.
    STAS_LOG_ERROR("{}", spec.status().ToString());
    auto failed = Fail(a.job_id, token, "stored spec is unreadable: " + spec.status().message(), false);
    if (!failed.ok()) return failed.status();
    return std::optional<Assignment>();
  }
  a.spec = *spec;
  if (r.before && r.before->attempts > 0)
    a.resume = {{"previous_attempts", r.before->attempts}, {"last_step", r.before->step},
                {"last_worker", r.before->worker}};
  return std::optional<Assignment>(std::move(a));
}

Result<HeartbeatOutcome> JobQueue::Heartbeat(const std::string& job_id, const std::string& lease, int step, int steps,
                                             const std::string& stage) {
  const int64_t now = clock_->NowMs();
  Transition t = Base(job_id, now);
  t.from = {JobState::kRunning};
  t.lease_is = lease;
  t.set = {{"step", Str(std::max(0, step))},
           {"steps", Str(std::max(0, steps))},
           {"stage", TruncateUtf8(stage, 64)},
           {"heartbeat_ms", Str(now)}};
  t.lease_op = Transition::LeaseOp::kSet;
  t.lease_token = lease;
  t.lease_ttl_ms = options_.lease_ms;
  STAS_ASSIGN_OR_RETURN(TransitionResult r, store_->Apply(t));
  if (r.applied) {
    const int delta = std::max(0, step) - r.before->step;
    if (delta > 0) {
      Status st = store_->IncrementStats({{"steps", delta}});
      if (!st.ok()) STAS_LOG_DEBUG("step counter not updated: {}", st.message());
    }
    return HeartbeatOutcome::kRenewed;
  }
  if (!r.before) return HeartbeatOutcome::kUnknownJob;
  if (r.before->state == JobState::kCancelled && r.before->lease == lease) return HeartbeatOutcome::kCancelled;
  return HeartbeatOutcome::kLeaseLost;
}

Result<bool> JobQueue::GrantCommit(const std::string& job_id, const std::string& lease) {
  const int64_t now = clock_->NowMs();
  Transition t = Base(job_id, now);
  t.from = {JobState::kRunning};
  t.lease_is = lease;
  t.set = {{"stage", "commit"}, {"heartbeat_ms", Str(now)}};
  t.lease_op = Transition::LeaseOp::kSet;
  t.lease_token = lease;
  t.lease_ttl_ms = options_.lease_ms;
  STAS_ASSIGN_OR_RETURN(TransitionResult r, store_->Apply(t));
  return r.applied;
}

Result<CompleteOutcome> JobQueue::Complete(const std::string& job_id, const std::string& lease,
                                           const std::string& output, const std::string& manifest,
                                           const Json& timings) {
  const int64_t now = clock_->NowMs();
  STAS_ASSIGN_OR_RETURN(std::optional<JobRecord> current, store_->Get(job_id));
  Transition t = Base(job_id, now);
  t.from = {JobState::kRunning};
  t.lease_is = lease;
  t.to = JobState::kDone;
  t.lease_op = Transition::LeaseOp::kDelete;
  t.set = {{"output", output},
           {"manifest", manifest},
           {"timings", timings.is_null() ? "" : SafeDump(timings)},
           {"finished_ms", Str(now)},
           {"stage", "done"},
           {"error", ""}};
  t.stats = {{"completed", 1}};
  if (current && current->steps > 0) {
    t.set["step"] = Str(current->steps);
    // Steps the group finished after its last heartbeat count too (the step counter is throughput).
    if (current->lease == lease && current->steps > current->step) t.stats["steps"] = current->steps - current->step;
  }
  STAS_ASSIGN_OR_RETURN(TransitionResult r, store_->Apply(t));
  if (r.applied) return CompleteOutcome::kCompleted;
  if (r.before && r.before->state == JobState::kDone && r.before->lease == lease) return CompleteOutcome::kRepeat;
  return CompleteOutcome::kRejected;
}

Result<FailOutcome> JobQueue::EndAttempt(const JobRecord& record, const std::string& error, bool retryable,
                                         bool lease_expired) {
  const int64_t now = clock_->NowMs();
  Transition t = Base(record.id, now);
  t.from = {JobState::kRunning};
  t.lease_is = record.lease;
  t.lease_key_expired = lease_expired;
  t.lease_op = Transition::LeaseOp::kDelete;
  t.set = {{"error", TruncateUtf8(error, 4096)}, {"lease", ""}};
  FailOutcome outcome;
  if (!retryable) {
    t.to = JobState::kFailed;
    t.set["finished_ms"] = Str(now);
    t.stats = {{"failed", 1}};
    outcome = FailOutcome::kFailed;
  } else if (record.attempts >= options_.max_attempts) {
    t.to = JobState::kDead;
    t.set["finished_ms"] = Str(now);
    t.dead_letter_reason = TruncateUtf8(error, 4096);
    t.stats = {{"dead", 1}};
    outcome = FailOutcome::kDead;
  } else {
    const int64_t due = now + BackoffMs(record.attempts);
    t.to = JobState::kQueued;
    t.set["retry_at_ms"] = Str(due);
    t.set["stage"] = "retry";
    t.delay_until_ms = due;
    t.stats = {{"retried", 1}};
    outcome = FailOutcome::kRetryScheduled;
  }
  if (lease_expired) t.stats["lease_expired"] = 1;
  STAS_ASSIGN_OR_RETURN(TransitionResult r, store_->Apply(t));
  return r.applied ? outcome : FailOutcome::kRejected;
}

Result<FailOutcome> JobQueue::Fail(const std::string& job_id, const std::string& lease, const std::string& error,
                                   bool retryable) {
  STAS_ASSIGN_OR_RETURN(std::optional<JobRecord> current, store_->Get(job_id));
  if (!current || current->state != JobState::kRunning || current->lease != lease) return FailOutcome::kRejected;
  return EndAttempt(*current, error.empty() ? "worker reported a failure" : error, retryable, false);
}

// ---------------------------------------------------------------------------------------- maintenance

Result<int> JobQueue::PromoteDue(int limit) {
  const int64_t now = clock_->NowMs();
  STAS_ASSIGN_OR_RETURN(auto due, store_->DueDelayed(now, limit));
  int promoted = 0;
  for (const auto& id : due) {
    Transition t = Base(id, now);
    t.from = {JobState::kQueued};
    t.enqueue = true;
    t.set = {{"retry_at_ms", "0"}, {"stage", ""}};
    STAS_ASSIGN_OR_RETURN(TransitionResult r, store_->Apply(t));
    if (r.applied) {
      ++promoted;
    } else {
      // The job left `queued` (cancelled, deleted) without leaving `delayed`: cannot happen through
      // transitions, but a hand-edited store could; drop the entry by enqueuing nothing.
      STAS_LOG_DEBUG("delayed job {} is no longer queued", id);
    }
  }
  return promoted;
}

Result<bool> JobQueue::ExpireLease(const std::string& job_id) {
  STAS_ASSIGN_OR_RETURN(std::optional<JobRecord> current, store_->Get(job_id));
  if (!current || current->state != JobState::kRunning) return false;
  const std::string who = current->worker.empty() ? "its worker group" : "worker group '" + current->worker + "'";
  const std::string error = "lease expired: " + who + " stopped heartbeating (attempt " +
                            std::to_string(current->attempts) + ")";
  STAS_ASSIGN_OR_RETURN(FailOutcome outcome, EndAttempt(*current, error, true, true));
  if (outcome == FailOutcome::kRejected) return false;
  STAS_LOG_WARN("job {}: {}; {}", job_id, error,
                outcome == FailOutcome::kDead ? "no attempts left: dead-lettered" : "retry scheduled");
  return true;
}

// --------------------------------------------------------------------------------------------- reaper

LeaseReaper::LeaseReaper(JobQueue* queue, const Clock* clock, int64_t grace_ms)
    : queue_(queue), clock_(clock), grace_until_ms_(clock->NowMs() + std::max<int64_t>(0, grace_ms)) {}

bool LeaseReaper::in_grace() const { return clock_->NowMs() < grace_until_ms_; }

Result<int> LeaseReaper::Tick() {
  if (in_grace()) return 0;
  JobStore& store = queue_->store();
  int moved = 0;
  const int64_t page = 500;
  std::vector<std::string> expired;
  for (int64_t at = 0;; at += page) {
    STAS_ASSIGN_OR_RETURN(auto ids, store.ListIds(IndexRef::State(JobState::kRunning), at, page));
    if (ids.empty()) break;
    STAS_ASSIGN_OR_RETURN(auto alive, store.LeasesAlive(ids));
    for (size_t i = 0; i < ids.size(); ++i)
      if (!alive[i]) expired.push_back(ids[i]);
    if (static_cast<int64_t>(ids.size()) < page) break;
  }
  for (const auto& id : expired) {
    STAS_ASSIGN_OR_RETURN(bool m, queue_->ExpireLease(id));
    moved += m ? 1 : 0;
  }
  return moved;
}

}  // namespace stas::coordinator

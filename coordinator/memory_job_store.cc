#include "coordinator/memory_job_store.h"

#include <algorithm>
#include <cstdlib>

namespace stas::coordinator {

namespace {

std::string FieldOr(const std::map<std::string, std::string>& f, const std::string& key) {
  auto it = f.find(key);
  return it == f.end() ? std::string() : it->second;
}

int64_t NumberOr(const std::map<std::string, std::string>& f, const std::string& key) {
  return std::strtoll(FieldOr(f, key).c_str(), nullptr, 10);
}

}  // namespace

MemoryJobStore::MemoryJobStore(const Clock* clock) : clock_(clock) {}

void MemoryJobStore::SetUnavailable(bool unavailable) {
  std::lock_guard<std::mutex> lock(mu_);
  unavailable_ = unavailable;
}

Status MemoryJobStore::CheckAvailable() const {
  return unavailable_ ? Unavailable("memory store: simulated outage") : Status::Ok();
}

Status MemoryJobStore::Ping() {
  std::lock_guard<std::mutex> lock(mu_);
  return CheckAvailable();
}

Status MemoryJobStore::Initialize() {
  std::lock_guard<std::mutex> lock(mu_);
  return CheckAvailable();
}

bool MemoryJobStore::LeaseAliveLocked(const std::string& id) const {
  auto it = leases_.find(id);
  return it != leases_.end() && clock_->NowMs() < it->second.second;
}

void MemoryJobStore::EnqueueLocked(const std::string& id, const Fields& f) {
  UnreadyLocked(id);
  const std::string queue = ReadyQueueName(FieldOr(f, "model"));
  const double score = ReadyScore(static_cast<int>(NumberOr(f, "priority")), ++sequence_);
  ready_[queue].insert({score, id});
  readied_[id] = {queue, score};
}

void MemoryJobStore::UnreadyLocked(const std::string& id) {
  auto it = readied_.find(id);
  if (it == readied_.end()) return;
  ready_[it->second.first].erase({it->second.second, id});
  readied_.erase(it);
}

Result<TransitionResult> MemoryJobStore::Apply(const Transition& t) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  return ApplyLocked(t);
}

Result<std::vector<BriefResult>> MemoryJobStore::ApplyBrief(const std::vector<Transition>& ts) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::vector<BriefResult> out;
  for (const auto& t : ts) {
    STAS_ASSIGN_OR_RETURN(TransitionResult r, ApplyLocked(t));
    out.push_back({r.applied, r.before ? std::optional<JobState>(r.before->state) : std::nullopt});
  }
  return out;
}

Result<std::vector<std::optional<JobState>>> MemoryJobStore::GetStates(const std::vector<std::string>& ids) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::vector<std::optional<JobState>> out;
  for (const auto& id : ids) {
    auto it = jobs_.find(id);
    out.push_back(it == jobs_.end() ? std::nullopt : ParseJobState(FieldOr(it->second, "state")));
  }
  return out;
}

Result<TransitionResult> MemoryJobStore::ApplyLocked(const Transition& t_in) {
  if (!t_in.pop_ready.empty()) {
    // Pop heads until one passes the preconditions (a head that does not is dropped, like Redis).
    ReadySet& queue = ready_[t_in.pop_ready];
    while (!queue.empty()) {
      const std::string id = queue.begin()->second;
      UnreadyLocked(id);
      Transition t = t_in;
      t.pop_ready.clear();
      t.job_id = id;
      STAS_ASSIGN_OR_RETURN(TransitionResult r, ApplyLocked(t));
      if (r.applied) return r;
    }
    return TransitionResult{};
  }
  const Transition& t = t_in;
  TransitionResult result;
  result.job_id = t.job_id;
  auto it = jobs_.find(t.job_id);
  const bool exists = it != jobs_.end();
  if (exists) {
    STAS_ASSIGN_OR_RETURN(JobRecord before, JobRecord::FromFields(t.job_id, it->second));
    result.before = before;
  }
  result.after = result.before;
  // Preconditions.
  if (t.require_absent) {
    if (exists) return result;
  } else {
    if (!exists) return result;
    const Fields& cur = it->second;
    if (!t.from.empty() &&
        std::none_of(t.from.begin(), t.from.end(),
                     [&](JobState s) { return FieldOr(cur, "state") == JobStateName(s); }))
      return result;
    if (t.lease_is && FieldOr(cur, "lease") != *t.lease_is) return result;
    if (t.lease_key_expired && LeaseAliveLocked(t.job_id)) return result;
  }
  // Effects.
  Fields& f = jobs_[t.job_id];
  for (const auto& [k, v] : t.set) f[k] = v;
  for (const auto& k : t.clear) f.erase(k);
  for (const auto& [k, v] : t.incr) f[k] = std::to_string(NumberOr(f, k) + v);
  f["updated_ms"] = std::to_string(t.now_ms);
  if (t.to) {
    f["state"] = JobStateName(*t.to);
    if (*t.to != JobState::kQueued) {
      delayed_.erase(t.job_id);
      UnreadyLocked(t.job_id);
    }
  }
  if (t.lease_op == Transition::LeaseOp::kSet) {
    leases_[t.job_id] = {t.lease_token, clock_->NowMs() + t.lease_ttl_ms};
  } else if (t.lease_op == Transition::LeaseOp::kDelete) {
    leases_.erase(t.job_id);
  }
  if (t.delay_until_ms) {
    delayed_[t.job_id] = *t.delay_until_ms;
    UnreadyLocked(t.job_id);
  }
  if (t.enqueue) {
    delayed_.erase(t.job_id);
    EnqueueLocked(t.job_id, f);
  }
  if (!t.dead_letter_reason.empty()) {
    DeadLetter d;
    d.entry_id = std::to_string(t.now_ms) + "-" + std::to_string(dead_.size());
    d.job_id = t.job_id;
    d.reason = t.dead_letter_reason;
    d.attempts = static_cast<int>(NumberOr(f, "attempts"));
    d.at_ms = t.now_ms;
    dead_.push_back(d);
  }
  for (const auto& [k, v] : t.stats) stats_[k] += v;
  if (!t.dataset.empty()) datasets_.emplace(t.dataset, NumberOr(f, "created_ms"));
  STAS_ASSIGN_OR_RETURN(JobRecord after, JobRecord::FromFields(t.job_id, f));
  result.after = after;
  result.applied = true;
  return result;
}

Result<std::optional<JobRecord>> MemoryJobStore::Get(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::optional<JobRecord>();
  STAS_ASSIGN_OR_RETURN(JobRecord r, JobRecord::FromFields(id, it->second));
  return std::optional<JobRecord>(std::move(r));
}

Result<std::vector<JobRecord>> MemoryJobStore::GetMany(const std::vector<std::string>& ids) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::vector<JobRecord> out;
  for (const auto& id : ids) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) continue;
    STAS_ASSIGN_OR_RETURN(JobRecord r, JobRecord::FromFields(id, it->second));
    out.push_back(std::move(r));
  }
  return out;
}

Result<bool> MemoryJobStore::Delete(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return false;
  UnreadyLocked(id);
  jobs_.erase(it);
  leases_.erase(id);
  delayed_.erase(id);
  return true;
}

bool MemoryJobStore::MatchesLocked(const IndexRef& index, const Fields& fields) const {
  switch (index.kind) {
    case IndexRef::Kind::kAll: return true;
    case IndexRef::Kind::kState: return FieldOr(fields, "state") == JobStateName(index.state);
    case IndexRef::Kind::kDataset: return FieldOr(fields, "dataset") == index.dataset;
    case IndexRef::Kind::kDatasetState:
      return FieldOr(fields, "dataset") == index.dataset && FieldOr(fields, "state") == JobStateName(index.state);
  }
  return false;
}

std::vector<std::pair<int64_t, std::string>> MemoryJobStore::IndexLocked(const IndexRef& index) const {
  std::vector<std::pair<int64_t, std::string>> out;
  for (const auto& [id, fields] : jobs_)
    if (MatchesLocked(index, fields)) out.emplace_back(NumberOr(fields, "created_ms"), id);
  // Newest first; ties by id descending, as ZREVRANGE orders equal scores.
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a > b; });
  return out;
}

Result<std::vector<std::string>> MemoryJobStore::ListIds(const IndexRef& index, int64_t offset, int64_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::vector<std::string> out;
  auto all = IndexLocked(index);
  for (int64_t i = std::max<int64_t>(0, offset); i < static_cast<int64_t>(all.size()) &&
                                                 static_cast<int64_t>(out.size()) < limit;
       ++i)
    out.push_back(all[i].second);
  return out;
}

Result<std::vector<std::string>> MemoryJobStore::ListIdsAfter(const IndexRef& index, const std::string& after_id,
                                                             int64_t limit, bool oldest_first) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::optional<std::pair<int64_t, std::string>> cursor;
  if (!after_id.empty()) {
    auto job = jobs_.find(after_id);
    if (job == jobs_.end()) return InvalidArgument("cursor '" + after_id + "' is not a job");
    cursor = std::make_pair(NumberOr(job->second, "created_ms"), after_id);
  }
  auto entries = IndexLocked(index);  // newest first
  if (oldest_first) std::reverse(entries.begin(), entries.end());
  std::vector<std::string> out;
  for (const auto& entry : entries) {
    if (static_cast<int64_t>(out.size()) >= limit) break;
    if (!cursor || (oldest_first ? *cursor < entry : entry < *cursor)) out.push_back(entry.second);
  }
  return out;
}

Result<std::map<JobState, int64_t>> MemoryJobStore::CountByState(const std::string& dataset) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::map<JobState, int64_t> out;
  for (JobState s : kAllJobStates) out[s] = 0;
  for (const auto& [id, fields] : jobs_) {
    if (!dataset.empty() && FieldOr(fields, "dataset") != dataset) continue;
    auto s = ParseJobState(FieldOr(fields, "state"));
    if (s) ++out[*s];
  }
  return out;
}

Result<int64_t> MemoryJobStore::Count(const IndexRef& index) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  return static_cast<int64_t>(IndexLocked(index).size());
}

Result<std::vector<std::string>> MemoryJobStore::Datasets() {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::vector<std::string> out;
  for (const auto& [name, first] : datasets_) out.push_back(name);
  return out;
}

Result<std::map<std::string, int64_t>> MemoryJobStore::ReadyDepths() {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::map<std::string, int64_t> out;
  for (const auto& [name, queue] : ready_) out[name] = static_cast<int64_t>(queue.size());
  return out;
}

Result<std::vector<std::string>> MemoryJobStore::ReadyHead(const std::string& queue, int64_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::vector<std::string> out;
  auto it = ready_.find(queue);
  if (it == ready_.end()) return out;
  for (const auto& [score, id] : it->second) {
    if (static_cast<int64_t>(out.size()) >= limit) break;
    out.push_back(id);
  }
  return out;
}

Result<int64_t> MemoryJobStore::RepairReadyQueues() {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  int64_t repaired = 0;
  for (const auto& [id, fields] : jobs_) {
    if (FieldOr(fields, "state") != "queued" || delayed_.count(id) || readied_.count(id)) continue;
    EnqueueLocked(id, fields);
    ++repaired;
  }
  return repaired;
}

Result<std::vector<bool>> MemoryJobStore::LeasesAlive(const std::vector<std::string>& ids) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::vector<bool> out;
  for (const auto& id : ids) out.push_back(LeaseAliveLocked(id));
  return out;
}

Result<std::vector<std::string>> MemoryJobStore::DueDelayed(int64_t now_ms, int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::vector<std::pair<int64_t, std::string>> due;
  for (const auto& [id, at] : delayed_)
    if (at <= now_ms) due.emplace_back(at, id);
  std::sort(due.begin(), due.end());
  std::vector<std::string> out;
  for (const auto& d : due) {
    if (static_cast<int>(out.size()) >= limit) break;
    out.push_back(d.second);
  }
  return out;
}

Result<int64_t> MemoryJobStore::DelayedCount() {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  return static_cast<int64_t>(delayed_.size());
}

Result<std::vector<DeadLetter>> MemoryJobStore::DeadLetters(int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::vector<DeadLetter> out;
  for (auto it = dead_.rbegin(); it != dead_.rend() && static_cast<int>(out.size()) < limit; ++it) out.push_back(*it);
  return out;
}

Status MemoryJobStore::IncrementStats(const std::map<std::string, int64_t>& deltas) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  for (const auto& [k, v] : deltas) stats_[k] += v;
  return Status::Ok();
}

Result<std::map<std::string, int64_t>> MemoryJobStore::Stats() {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  return stats_;
}

size_t MemoryJobStore::ReadyLength() const {
  std::lock_guard<std::mutex> lock(mu_);
  return readied_.size();
}

}  // namespace stas::coordinator

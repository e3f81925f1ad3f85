#include "coordinator/memory_job_store.h"

#include <algorithm>
#include <cstdlib>

namespace stas::coordinator {

namespace {

using EntryKey = std::pair<uint64_t, uint64_t>;

std::string EntryString(const EntryKey& k) { return std::to_string(k.first) + "-" + std::to_string(k.second); }

EntryKey ParseEntry(const std::string& id) {
  const size_t dash = id.find('-');
  if (dash == std::string::npos) return {std::strtoull(id.c_str(), nullptr, 10), 0};
  return {std::strtoull(id.substr(0, dash).c_str(), nullptr, 10),
          std::strtoull(id.substr(dash + 1).c_str(), nullptr, 10)};
}

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

std::string MemoryJobStore::AddEntryLocked(const std::string& job) {
  const uint64_t now = static_cast<uint64_t>(std::max<int64_t>(0, clock_->NowMs()));
  EntryKey k = now > last_id_.first ? EntryKey{now, 0} : EntryKey{last_id_.first, last_id_.second + 1};
  last_id_ = k;
  stream_[k] = job;
  return EntryString(k);
}

void MemoryJobStore::AckLocked(const std::string& entry_id) {
  const EntryKey k = ParseEntry(entry_id);
  pending_.erase(k);
  stream_.erase(k);
}

Result<TransitionResult> MemoryJobStore::Apply(const Transition& t) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  TransitionResult result;
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
    if (t.ticket_is && FieldOr(cur, "ticket") != *t.ticket_is) return result;
    if (t.lease_key_expired && LeaseAliveLocked(t.job_id)) return result;
  }
  // Effects.
  Fields& f = jobs_[t.job_id];
  if (t.ack_ticket) {
    const std::string ticket = FieldOr(f, "ticket");
    if (!ticket.empty()) AckLocked(ticket);
    f.erase("ticket");
  }
  for (const auto& [k, v] : t.set) f[k] = v;
  for (const auto& k : t.clear) f.erase(k);
  for (const auto& [k, v] : t.incr) f[k] = std::to_string(NumberOr(f, k) + v);
  f["updated_ms"] = std::to_string(t.now_ms);
  if (t.to) {
    f["state"] = JobStateName(*t.to);
    if (*t.to != JobState::kQueued) delayed_.erase(t.job_id);
  }
  if (t.lease_op == Transition::LeaseOp::kSet) {
    leases_[t.job_id] = {t.lease_token, clock_->NowMs() + t.lease_ttl_ms};
  } else if (t.lease_op == Transition::LeaseOp::kDelete) {
    leases_.erase(t.job_id);
  }
  if (t.delay_until_ms) delayed_[t.job_id] = *t.delay_until_ms;
  if (t.enqueue_ticket) {
    delayed_.erase(t.job_id);
    f["ticket"] = AddEntryLocked(t.job_id);
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
  const std::string ticket = FieldOr(it->second, "ticket");
  if (!ticket.empty()) AckLocked(ticket);
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

Result<std::vector<Ticket>> MemoryJobStore::ReadNewTickets(const std::string& consumer, int count) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::vector<Ticket> out;
  for (auto it = stream_.upper_bound(last_delivered_); it != stream_.end() && static_cast<int>(out.size()) < count;
       ++it) {
    last_delivered_ = it->first;
    pending_[it->first] = {consumer, clock_->NowMs(), 1};
    out.push_back({EntryString(it->first), it->second});
  }
  return out;
}

Result<std::vector<Ticket>> MemoryJobStore::ReadPendingTickets(const std::string& consumer, const std::string& after,
                                                               int count) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::vector<Ticket> out;
  for (auto it = pending_.upper_bound(ParseEntry(after)); it != pending_.end() && static_cast<int>(out.size()) < count;
       ++it) {
    if (it->second.consumer != consumer) continue;
    auto entry = stream_.find(it->first);
    if (entry == stream_.end()) continue;
    // XREADGROUP with an explicit id re-delivers: the delivery count grows, the idle time resets.
    it->second.delivered_ms = clock_->NowMs();
    ++it->second.deliveries;
    out.push_back({EntryString(it->first), entry->second});
  }
  return out;
}

Result<std::vector<Ticket>> MemoryJobStore::ClaimStaleTickets(const std::string& consumer, int64_t min_idle_ms,
                                                              const std::string& cursor, int count,
                                                              std::string* next_cursor) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  std::vector<Ticket> out;
  const int64_t now = clock_->NowMs();
  auto it = pending_.lower_bound(ParseEntry(cursor));
  for (; it != pending_.end() && static_cast<int>(out.size()) < count; ++it) {
    if (now - it->second.delivered_ms < min_idle_ms) continue;
    auto entry = stream_.find(it->first);
    if (entry == stream_.end()) continue;
    it->second = {consumer, now, it->second.deliveries + 1};
    out.push_back({EntryString(it->first), entry->second});
  }
  if (next_cursor) *next_cursor = it == pending_.end() ? "0-0" : EntryString(it->first);
  return out;
}

Status MemoryJobStore::AckTickets(const std::vector<std::string>& entry_ids) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  for (const auto& id : entry_ids) AckLocked(id);
  return Status::Ok();
}

Result<int64_t> MemoryJobStore::PendingTicketCount() {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(CheckAvailable());
  return static_cast<int64_t>(pending_.size());
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

size_t MemoryJobStore::StreamLength() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stream_.size();
}

}  // namespace stas::coordinator

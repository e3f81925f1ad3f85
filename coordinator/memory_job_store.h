// MemoryJobStore: JobStore in process memory, with Redis semantics and an injectable clock: lease keys
// expire and pending tickets age by Clock::NowMs(), so lease/reaper/backoff logic is testable without a
// server and without sleeping. SetUnavailable(true) makes every call fail with kUnavailable, like a
// Redis outage. Nothing persists: this store is for tests and experiments, not for service.
// Thread-safety: all methods are safe to call from several threads.
#pragma once

#include <map>
#include <mutex>
#include <utility>

#include "coordinator/clock.h"
#include "coordinator/job_store.h"

namespace stas::coordinator {

class MemoryJobStore : public JobStore {
 public:
  explicit MemoryJobStore(const Clock* clock);

  void SetUnavailable(bool unavailable);

  Status Ping() override;
  Status Initialize() override;
  Result<TransitionResult> Apply(const Transition& t) override;
  Result<std::optional<JobRecord>> Get(const std::string& id) override;
  Result<std::vector<JobRecord>> GetMany(const std::vector<std::string>& ids) override;
  Result<bool> Delete(const std::string& id) override;
  Result<std::vector<std::string>> ListIds(const IndexRef& index, int64_t offset, int64_t limit) override;
  Result<int64_t> Count(const IndexRef& index) override;
  Result<std::vector<std::string>> Datasets() override;
  Result<std::vector<Ticket>> ReadNewTickets(const std::string& consumer, int count) override;
  Result<std::vector<Ticket>> ReadPendingTickets(const std::string& consumer, const std::string& after,
                                                 int count) override;
  Result<std::vector<Ticket>> ClaimStaleTickets(const std::string& consumer, int64_t min_idle_ms,
                                                const std::string& cursor, int count,
                                                std::string* next_cursor) override;
  Status AckTickets(const std::vector<std::string>& entry_ids) override;
  Result<int64_t> PendingTicketCount() override;
  Result<std::vector<bool>> LeasesAlive(const std::vector<std::string>& ids) override;
  Result<std::vector<std::string>> DueDelayed(int64_t now_ms, int limit) override;
  Result<int64_t> DelayedCount() override;
  Result<std::vector<DeadLetter>> DeadLetters(int limit) override;
  Status IncrementStats(const std::map<std::string, int64_t>& deltas) override;
  Result<std::map<std::string, int64_t>> Stats() override;

  // Test inspection: the number of entries in the ticket stream (acknowledged ones are deleted).
  size_t StreamLength() const;

 private:
  using EntryKey = std::pair<uint64_t, uint64_t>;
  struct Pending {
    std::string consumer;
    int64_t delivered_ms = 0;
    int64_t deliveries = 0;
  };
  using Fields = std::map<std::string, std::string>;

  Status CheckAvailable() const;
  bool LeaseAliveLocked(const std::string& id) const;
  std::string AddEntryLocked(const std::string& job);
  void AckLocked(const std::string& entry_id);
  bool MatchesLocked(const IndexRef& index, const Fields& fields) const;
  std::vector<std::pair<int64_t, std::string>> IndexLocked(const IndexRef& index) const;

  const Clock* clock_;
  mutable std::mutex mu_;
  bool unavailable_ = false;
  std::map<std::string, Fields> jobs_;
  std::map<std::string, std::pair<std::string, int64_t>> leases_;  // id -> (token, expires_ms)
  std::map<std::string, int64_t> delayed_;
  std::vector<DeadLetter> dead_;
  std::map<std::string, int64_t> stats_;
  std::map<std::string, int64_t> datasets_;
  std::map<EntryKey, std::string> stream_;  // entry -> job id
  EntryKey last_id_{0, 0};
  EntryKey last_delivered_{0, 0};
  std::map<EntryKey, Pending> pending_;
};

}  // namespace stas::coordinator

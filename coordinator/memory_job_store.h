// MemoryJobStore: JobStore in process memory, with Redis semantics and an injectable clock: lease keys
// expire and pending tickets age by Clock::NowMs(), so lease/reaper/backoff logic is testable without a
// server and without sleeping. SetUnavailable(true) makes every call fail with kUnavailable, like a
// Redis outage. Nothing persists: this store is for tests and experiments, not for service.
// Thread-safety: all methods are safe to call from several threads.
#pragma once

#include <map>
#include <mutex>
#include <set>
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
  Result<std::vector<BriefResult>> ApplyBrief(const std::vector<Transition>& ts) override;
  Result<std::vector<std::optional<JobState>>> GetStates(const std::vector<std::string>& ids) override;
  Result<std::optional<JobRecord>> Get(const std::string& id) override;
  Result<std::vector<JobRecord>> GetMany(const std::vector<std::string>& ids) override;
  Result<bool> Delete(const std::string& id) override;
  Result<std::vector<std::string>> ListIds(const IndexRef& index, int64_t offset, int64_t limit) override;
  Result<std::vector<std::string>> ListIdsAfter(const IndexRef& index, const std::string& after_id,
                                                int64_t limit, bool oldest_first = false) override;
  Result<int64_t> Count(const IndexRef& index) override;
  Result<std::map<JobState, int64_t>> CountByState(const std::string& dataset) override;
  Result<std::vector<std::string>> Datasets() override;
  Result<std::map<std::string, int64_t>> ReadyDepths() override;
  Result<std::vector<std::string>> ReadyHead(const std::string& queue, int64_t limit) override;
  Result<int64_t> RepairReadyQueues() override;
  Result<std::vector<bool>> LeasesAlive(const std::vector<std::string>& ids) override;
  Result<std::vector<std::string>> DueDelayed(int64_t now_ms, int limit) override;
  Result<int64_t> DelayedCount() override;
  Result<std::vector<DeadLetter>> DeadLetters(int limit) override;
  Status IncrementStats(const std::map<std::string, int64_t>& deltas) override;
  Result<std::map<std::string, int64_t>> Stats() override;

  // Test inspection: jobs in all ready queues together.
  size_t ReadyLength() const;

 private:
  using Fields = std::map<std::string, std::string>;
  // A ready queue: (score, id), lowest first.
  using ReadySet = std::set<std::pair<double, std::string>>;

  Status CheckAvailable() const;
  Result<TransitionResult> ApplyLocked(const Transition& t);
  bool LeaseAliveLocked(const std::string& id) const;
  void EnqueueLocked(const std::string& id, const Fields& f);
  void UnreadyLocked(const std::string& id);
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
  std::map<std::string, ReadySet> ready_;                          // queue name -> queue
  std::map<std::string, std::pair<std::string, double>> readied_;  // id -> (queue, score)
  uint64_t sequence_ = 0;
};

}  // namespace stas::coordinator

// RedisJobStore: JobStore on Redis (hashes, sorted sets, one dead-letter stream; layout in job_store.h).
//
// Every Transition runs as one Lua script (atomic on the server), so two coordinators, or a coordinator
// racing a reaper, can never both move the same job; dispatch pops a ready queue inside the same script.
// Requires Redis >= 5 (ZPOPMIN, Streams). Keys are not hash-tagged: this
// store targets one Redis server (or a primary with replicas), not Redis Cluster. A batch of transitions
// (ApplyBrief) runs a few hundred per script call.
// Lease keys expire on the Redis server's clock (SET PX), not on the coordinator's Clock.
// Built without hiredis, every call returns NotImplemented (RedisClient's answer).
// Thread-safety: as RedisClient (calls are serialized on its connection).
#pragma once

#include <memory>

#include "coordinator/job_store.h"
#include "coordinator/redis_client.h"

namespace stas::coordinator {

class RedisJobStore : public JobStore {
 public:
  explicit RedisJobStore(std::shared_ptr<RedisClient> client);
  RedisClient& client() { return *client_; }

  Status Ping() override;
  Status Initialize() override;
  Result<TransitionResult> Apply(const Transition& t) override;
  Result<std::vector<BriefResult>> ApplyBrief(const std::vector<Transition>& ts) override;
  Result<std::vector<BriefResult>> CreateQueued(std::vector<NewJob> jobs, int64_t now_ms) override;
  Result<std::vector<std::optional<JobState>>> GetStates(const std::vector<std::string>& ids) override;
  Result<std::optional<JobRecord>> Get(const std::string& id) override;
  Result<std::vector<JobRecord>> GetMany(const std::vector<std::string>& ids) override;
  Result<std::vector<JobRecord>> GetManyForListing(const std::vector<std::string>& ids) override;
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

  // Key names (with the client's prefix).
  std::string JobKey(const std::string& id) const { return client_->Key("job:" + id); }
  std::string LeaseKey(const std::string& id) const { return client_->Key("lease:" + id); }
  std::string ReadyKey(const std::string& queue) const { return client_->Key("ready:" + queue); }
  std::string DeadKey() const { return client_->Key("dead"); }
  std::string IndexKey(const IndexRef& index) const;

 private:
  // Runs transitions in one script call; the script's per-transition replies.
  Result<std::vector<RedisValue>> RunTransitions(const std::vector<Transition>& ts, bool brief);
  // The records of `ids` that exist, in one pipelined round trip; `expand`: rebuild each full spec.
  Result<std::vector<JobRecord>> ReadRecords(const std::vector<std::string>& ids, bool expand);

  std::shared_ptr<RedisClient> client_;
};

}  // namespace stas::coordinator

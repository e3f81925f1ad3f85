// RedisJobStore: JobStore on Redis (Streams, hashes, sorted sets; layout in job_store.h).
//
// Every Transition runs as one Lua script (atomic on the server), so two coordinators, or a coordinator
// racing a reaper, can never both move the same job. Requires Redis >= 5 (Streams); XAUTOCLAIM is used
// on Redis >= 6.2 and replaced by XPENDING + XCLAIM on older servers. Keys are not hash-tagged: this
// store targets one Redis server (or a primary with replicas), not Redis Cluster.
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
  static constexpr const char* kGroup = "coordinators";

  explicit RedisJobStore(std::shared_ptr<RedisClient> client);
  RedisClient& client() { return *client_; }

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

  // Key names (with the client's prefix).
  std::string JobKey(const std::string& id) const { return client_->Key("job:" + id); }
  std::string LeaseKey(const std::string& id) const { return client_->Key("lease:" + id); }
  std::string StreamKey() const { return client_->Key("jobs"); }
  std::string DeadKey() const { return client_->Key("dead"); }
  std::string IndexKey(const IndexRef& index) const;

  // Claims through XPENDING + XCLAIM even on servers that have XAUTOCLAIM (tests of the fallback).
  void set_force_xpending_claim(bool force) { force_xpending_claim_ = force; }

 private:
  Result<std::vector<Ticket>> ReadGroup(const std::string& consumer, const std::string& id, int count);
  Result<std::vector<Ticket>> ClaimWithXPending(const std::string& consumer, int64_t min_idle_ms,
                                                const std::string& cursor, int count, std::string* next_cursor);

  std::shared_ptr<RedisClient> client_;
  bool force_xpending_claim_ = false;
};

}  // namespace stas::coordinator

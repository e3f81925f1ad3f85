// InstrumentedCommunicator: a Communicator decorator that counts and times every collective, for
// benchmarks (the all-to-all share of a step) and metrics.
//
// With `synchronize`, each collective is bracketed by Synchronize() of the wrapped communicator, so
// the time is that of the transfer alone rather than of whatever GPU work was queued before it; this
// removes any overlap and is meant for measurement runs. Thread-safety: as the wrapped communicator.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "parallel/communicator.h"

namespace stas::parallel {

struct CollectiveStats {
  int64_t calls = 0;
  double seconds = 0.0;
  int64_t bytes = 0;  // input bytes of this rank
};

class InstrumentedCommunicator final : public Communicator {
 public:
  // `inner` is not owned and must outlive this object.
  InstrumentedCommunicator(Communicator& inner, bool synchronize) : inner_(inner), synchronize_(synchronize) {}

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string backend() const override { return inner_.backend(); }
  at::Tensor AllToAll(const at::Tensor& input) override;
  at::Tensor AllReduce(const at::Tensor& input, ReduceOp op) override;
  at::Tensor AllGather(const at::Tensor& input) override;
  at::Tensor Broadcast(const at::Tensor& input, int root) override;
  void Barrier() override;
  void Synchronize() override { inner_.Synchronize(); }

  // Keyed by collective: "all_to_all", "all_reduce(max)", "all_gather", "broadcast", "barrier".
  const std::map<std::string, CollectiveStats>& stats() const { return stats_; }
  double total_seconds() const;
  void Reset() { stats_.clear(); }
  void set_synchronize(bool synchronize) { synchronize_ = synchronize; }

 private:
  template <typename Fn>
  auto Timed(const std::string& name, int64_t bytes, Fn&& fn);

  Communicator& inner_;
  bool synchronize_;
  std::map<std::string, CollectiveStats> stats_;
};

}  // namespace stas::parallel

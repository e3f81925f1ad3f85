// Simulated sequence parallelism in one process: each shard runs on its own thread and the collectives
// (GatherSequence, AllReduceMax) meet in memory. Lets tests check that sharded hooks agree with one rank
// without MPI. SelfAttention is not provided (steering never calls it).
#pragma once

#include <ATen/ATen.h>

#include <condition_variable>
#include <mutex>
#include <vector>

#include "common/check.h"
#include "models/dit.h"

namespace stas::testing {

// A rendezvous of `size` threads: every rank contributes a tensor and all get every contribution.
class ThreadGroup {
 public:
  explicit ThreadGroup(int size) : size_(size), slots_(size) {}
  // Returns all contributions in rank order once every rank has arrived.
  std::vector<at::Tensor> Exchange(int rank, const at::Tensor& t) {
    std::unique_lock<std::mutex> lock(mu_);
    slots_[rank] = t.clone();
    const int64_t generation = generation_;
    if (++arrived_ == size_) {
      result_ = slots_;
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
    ++exchanges_;
    return result_;
  }
  // Calls of Exchange over all ranks.
  int64_t exchanges() const { return exchanges_; }

 private:
  int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<at::Tensor> slots_, result_;
  int arrived_ = 0;
  int64_t generation_ = 0;
  int64_t exchanges_ = 0;
};

class ThreadSequenceParallel : public models::SequenceParallel {
 public:
  ThreadSequenceParallel(ThreadGroup* group, int rank, int size) : group_(group), rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  at::Tensor SelfAttention(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, int64_t) override {
    STAS_CHECK(false) << "ThreadSequenceParallel has no attention";
    return {};
  }
  JointOutput JointSelfAttention(const Qkv&, const Qkv&, double, int64_t) override {
    STAS_CHECK(false) << "ThreadSequenceParallel has no attention";
    return {};
  }
  at::Tensor GatherSequence(const at::Tensor& x) override { return at::cat(group_->Exchange(rank_, x), 1); }
  at::Tensor AllReduceMax(const at::Tensor& x) override {
    return std::get<0>(at::stack(group_->Exchange(rank_, x)).max(0));
  }

 private:
  ThreadGroup* group_;
  int rank_, size_;
};

}  // namespace stas::testing

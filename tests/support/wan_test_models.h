// Test helpers for the transformers: random Wan weights under the upstream names for any config, and a
// sequence-parallel group and a CFG pair simulated by threads of one process (each thread plays one rank).
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/torch_compat.h"
#include "models/dit.h"
#include "models/wan/transformer.h"

namespace stas::testing {

inline std::map<std::string, at::Tensor> RandomWanTensors(const models::wan::WanTransformerConfig& c, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  auto rnd = [&](std::vector<int64_t> shape, double stddev) {
    return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)) * stddev;
  };
  const int64_t D = c.dim(), F = c.ffn_dim, P = c.patch_volume();
  const double s = 1.0 / std::sqrt(static_cast<double>(D));
  std::map<std::string, at::Tensor> t;
  t["patch_embedding.weight"] = rnd({D, c.in_channels, c.patch_size[0], c.patch_size[1], c.patch_size[2]}, 0.3);
  t["patch_embedding.bias"] = rnd({D}, 0.1);
  const std::string ce = "condition_embedder.";
  t[ce + "time_embedder.linear_1.weight"] = rnd({D, c.freq_dim}, 0.2);
  t[ce + "time_embedder.linear_1.bias"] = rnd({D}, 0.05);
  t[ce + "time_embedder.linear_2.weight"] = rnd({D, D}, s);
  t[ce + "time_embedder.linear_2.bias"] = rnd({D}, 0.05);
  t[ce + "time_proj.weight"] = rnd({6 * D, D}, s);
  t[ce + "time_proj.bias"] = rnd({6 * D}, 0.05);
  t[ce + "text_embedder.linear_1.weight"] = rnd({D, c.text_dim}, 0.3);
  t[ce + "text_embedder.linear_1.bias"] = rnd({D}, 0.05);
  t[ce + "text_embedder.linear_2.weight"] = rnd({D, D}, s);
  t[ce + "text_embedder.linear_2.bias"] = rnd({D}, 0.05);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    for (const char* attn : {"attn1.", "attn2."}) {
      for (const char* p : {"to_q", "to_k", "to_v", "to_out.0"}) {
        t[b + attn + p + ".weight"] = rnd({D, D}, s);
        t[b + attn + p + ".bias"] = rnd({D}, 0.05);
      }
      t[b + attn + "norm_q.weight"] = 1 + rnd({D}, 0.1);
      t[b + attn + "norm_k.weight"] = 1 + rnd({D}, 0.1);
    }
    if (c.cross_attn_norm) {
      t[b + "norm2.weight"] = 1 + rnd({D}, 0.1);
      t[b + "norm2.bias"] = rnd({D}, 0.1);
    }
    t[b + "ffn.net.0.proj.weight"] = rnd({F, D}, s);
    t[b + "ffn.net.0.proj.bias"] = rnd({F}, 0.05);
    t[b + "ffn.net.2.weight"] = rnd({D, F}, 1.0 / std::sqrt(static_cast<double>(F)));
    t[b + "ffn.net.2.bias"] = rnd({D}, 0.05);
    t[b + "scale_shift_table"] = rnd({1, 6, D}, s);
  }
  t["scale_shift_table"] = rnd({1, 2, D}, s);
  t["proj_out.weight"] = rnd({c.out_channels * P, D}, s);
  t["proj_out.bias"] = rnd({c.out_channels * P}, 0.05);
  return t;
}

// Every rank contributes a tensor and gets all contributions in rank order (a reusable barrier).
class Rendezvous {
 public:
  explicit Rendezvous(int size) : size_(size), slots_(size) {}
  std::vector<at::Tensor> AllGather(int rank, const at::Tensor& x) {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t generation = generation_;
    slots_[rank] = x;
    if (++arrived_ == size_) {
      result_ = slots_;
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return result_;
    }
    cv_.wait(lock, [&] { return generation_ != generation; });
    return result_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int size_;
  int arrived_ = 0;
  int64_t generation_ = 0;
  std::vector<at::Tensor> slots_, result_;
};

// One simulated rank: gathers the keys/values of all ranks and attends over the real ones.
class ThreadedSequenceParallel final : public models::SequenceParallel {
 public:
  ThreadedSequenceParallel(int rank, int size, Rendezvous& group) : rank_(rank), size_(size), group_(group) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  at::Tensor SelfAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                           int64_t valid_tokens) override {
    const at::Tensor keys = at::cat(group_.AllGather(rank_, k), 1).narrow(1, 0, valid_tokens);
    const at::Tensor values = at::cat(group_.AllGather(rank_, v), 1).narrow(1, 0, valid_tokens);
    ++attention_calls;
    return compat::ScaledDotProductAttention(q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), scale)
        .transpose(1, 2);
  }
  JointOutput JointSelfAttention(const Qkv& prefix, const Qkv& local, double scale, int64_t valid_tokens) override {
    const at::Tensor keys = at::cat({prefix.k, at::cat(group_.AllGather(rank_, local.k), 1).narrow(1, 0, valid_tokens)}, 1);
    const at::Tensor values =
        at::cat({prefix.v, at::cat(group_.AllGather(rank_, local.v), 1).narrow(1, 0, valid_tokens)}, 1);
    ++attention_calls;
    const at::Tensor out = compat::ScaledDotProductAttention(at::cat({prefix.q, local.q}, 1).transpose(1, 2),
                                                             keys.transpose(1, 2), values.transpose(1, 2), scale)
                               .transpose(1, 2);
    const int64_t lp = prefix.q.size(1);
    return {out.narrow(1, 0, lp), out.narrow(1, lp, out.size(1) - lp)};
  }
  at::Tensor GatherSequence(const at::Tensor& x) override { return at::cat(group_.AllGather(rank_, x), 1); }
  at::Tensor AllReduceMax(const at::Tensor& x) override { return std::get<0>(at::stack(group_.AllGather(rank_, x)).max(0)); }
  int attention_calls = 0;

 private:
  int rank_, size_;
  Rendezvous& group_;
};

// The two halves of a CFG pair, simulated by two threads swapping predictions.
class ThreadCfgPartner final : public models::CfgPartner {
 public:
  ThreadCfgPartner(models::CfgBranch branch, Rendezvous& pair) : branch_(branch), pair_(pair) {}
  models::CfgBranch branch() const override { return branch_; }
  at::Tensor Exchange(const at::Tensor& mine) override {
    const int me = branch_ == models::CfgBranch::kCond ? 0 : 1;
    return pair_.AllGather(me, mine)[1 - me];
  }

 private:
  models::CfgBranch branch_;
  Rendezvous& pair_;
};

// Runs fn(rank, parallel) on `size` threads, one simulated rank each, and waits for all.
inline void RunRanks(int size, const std::function<void(int, models::SequenceParallel&)>& fn) {
  Rendezvous group(size);
  std::vector<std::unique_ptr<ThreadedSequenceParallel>> ranks;
  for (int r = 0; r < size; ++r) ranks.push_back(std::make_unique<ThreadedSequenceParallel>(r, size, group));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) threads.emplace_back([&, r] { fn(r, *ranks[r]); });
  for (auto& th : threads) th.join();
}

}  // namespace stas::testing

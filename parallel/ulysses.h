// UlyssesAttention: sequence-parallel self-attention (DeepSpeed-Ulysses) over a Communicator.
//
// Each of the sp ranks of a sequence group holds L_local = padded L / sp consecutive tokens. In
// SelfAttention one all-to-all turns q, k, v [B, L_local, H, Dh] into [B, padded L, H / sp, Dh]
// (scatter heads, gather sequence; q, k and v travel in one message), each rank attends over the
// whole sequence for its H / sp heads, and a second all-to-all brings the output back to
// [B, L_local, H, Dh]. Padding sits at the global tail, so the keys and values of padded tokens are
// simply cut off before attention: padded keys cannot be attended to, no mask is needed (the fused
// kernels stay usable), and padded queries still produce finite values that callers discard.
//
// JointSelfAttention (CogVideoX) adds a prefix that every rank holds whole: each rank attends with its
// head group of the prefix prepended to the gathered sequence, keeps its tokens' output as above, and
// the prefix's output is put back together from every rank's head group with one all-gather.
//
// All methods are collective over the sequence group. Not thread-safe (one forward at a time).
#pragma once

#include "common/status.h"
#include "models/dit.h"
#include "parallel/communicator.h"

namespace stas::parallel {

class UlyssesAttention final : public models::SequenceParallel {
 public:
  // `sequence_group` (not owned) must outlive this object.
  explicit UlyssesAttention(Communicator& sequence_group) : comm_(sequence_group) {}

  // OK iff `heads` attention heads split evenly over `sp` ranks; otherwise InvalidArgument such as
  // "12 attention heads do not split over 8 ranks: use --sp in {1,2,3,4,6,12}".
  static Status CheckHeads(int64_t heads, int sp);

  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  // Throws CheckFailure (on every rank alike) when heads % size() != 0, with CheckHeads' message.
  at::Tensor SelfAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                           int64_t valid_tokens) override;
  JointOutput JointSelfAttention(const Qkv& prefix, const Qkv& local, double scale, int64_t valid_tokens) override;
  // [B, L_local, ...] -> [B, L_local * size(), ...] via one all-gather.
  at::Tensor GatherSequence(const at::Tensor& x) override;
  at::Tensor AllReduceMax(const at::Tensor& x) override;

  Communicator& communicator() { return comm_; }

 private:
  // This rank's head group of the whole sequence, [B, H / sp, L, Dh] (keys and values cut at valid_tokens).
  struct HeadShards {
    at::Tensor q, k, v;
  };
  HeadShards ScatterHeads(const Qkv& local, int64_t valid_tokens);
  // Attention output of this rank's head group [B, H / sp, padded L, Dh] -> this rank's tokens, all heads.
  at::Tensor GatherHeads(const at::Tensor& attended, int64_t local_tokens);

  Communicator& comm_;
};

}  // namespace stas::parallel

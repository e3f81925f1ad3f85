// CfgParallel: classifier-free guidance with the two branches on two halves of a group.
//
// Instead of running the conditional and unconditional forwards one after the other (or as a batch
// of two), the ranks of the CFG pair each run one branch at the same time and then exchange their
// noise predictions once per step. Both ranks compute the guided prediction from the same two
// tensors with the same operations, so their latents stay bit-identical and the sampler needs no
// further synchronisation.
//
// Collective over the CFG pair (size 2: rank 0 = conditional, rank 1 = unconditional). Not thread-safe.
#pragma once

#include <utility>

#include "models/dit.h"
#include "parallel/communicator.h"

namespace stas::parallel {

class CfgParallel {
 public:
  // `pair` (not owned, must outlive this object) has exactly two ranks.
  explicit CfgParallel(Communicator& pair);

  // The branch this rank computes.
  models::CfgBranch branch() const { return pair_.rank() == 0 ? models::CfgBranch::kCond : models::CfgBranch::kUncond; }

  // Exchanges the predictions: returns (cond, uncond) on both ranks. `local_prediction` is this
  // rank's branch's prediction; both ranks pass the same shape and dtype.
  std::pair<at::Tensor, at::Tensor> Exchange(const at::Tensor& local_prediction);
  // uncond + guidance * (cond - uncond), identical on both ranks (the pipelines' CFG formula).
  at::Tensor Combine(const at::Tensor& local_prediction, double guidance);

 private:
  Communicator& pair_;
};

// What a sampler sees of a CfgParallel (models::CfgPartner): this rank's branch, and the partner's
// prediction in exchange for this rank's. Not owned: `pair` must outlive it.
class CfgPartnerOverPair final : public models::CfgPartner {
 public:
  explicit CfgPartnerOverPair(CfgParallel* pair) : pair_(pair) {}
  models::CfgBranch branch() const override { return pair_->branch(); }
  at::Tensor Exchange(const at::Tensor& mine) override {
    auto [cond, uncond] = pair_->Exchange(mine);
    return branch() == models::CfgBranch::kCond ? uncond : cond;
  }

 private:
  CfgParallel* pair_;
};

}  // namespace stas::parallel

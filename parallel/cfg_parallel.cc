#include "parallel/cfg_parallel.h"

#include "common/check.h"

namespace stas::parallel {

CfgParallel::CfgParallel(Communicator& pair) : pair_(pair) {
  STAS_CHECK(pair_.size() == 2) << "CFG-parallel needs a pair of ranks (cond, uncond), got a group of "
                                << pair_.size();
}

std::pair<at::Tensor, at::Tensor> CfgParallel::Exchange(const at::Tensor& local_prediction) {
  const at::Tensor both = pair_.AllGather(local_prediction.unsqueeze(0));  // [2, ...]: rank order
  return {both[0], both[1]};
}

at::Tensor CfgParallel::Combine(const at::Tensor& local_prediction, double guidance) {
  auto [cond, uncond] = Exchange(local_prediction);
  return uncond + guidance * (cond - uncond);
}

}  // namespace stas::parallel

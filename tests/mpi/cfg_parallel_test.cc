// CFG-parallel: the two branches on the two halves of a group, alone and combined with Ulysses.
#include <gtest/gtest.h>

#include <cmath>

#include "common/check.h"
#include "mpi_test_support.h"
#include "parallel/cfg_parallel.h"
#include "parallel/process_groups.h"
#include "parallel/ulysses.h"

namespace stas::testing {
namespace {

constexpr double kGuidance = 5.0;

// The noise prediction of `branch` (0 cond, 1 uncond) in rendering group `group`.
at::Tensor Prediction(int group, int branch) { return SeededRandn({1, 4, 3, 5, 6}, 1000 + 10 * group + branch); }

TEST(CfgParallel, CombineGivesTheGuidedPredictionOnBothHalves) {
  const int n = WorldSize();
  if (n % 2 != 0) {
    // An odd world cannot hold CFG pairs; the split says so on every rank.
    auto refused = parallel::ProcessGroups::Create(MPI_COMM_WORLD, 1, 2);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find("--cfg-parallel"), std::string::npos) << refused.status().message();
    return;
  }
  auto groups = parallel::ProcessGroups::Create(MPI_COMM_WORLD, 1, 2);
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  auto pair = MakeCommunicator(groups->cfg_pair(), "cfg pair");
  parallel::CfgParallel cfg(*pair);
  const int group = groups->layout().group_index();
  const int branch = groups->layout().cfg_rank();
  EXPECT_EQ(cfg.branch(), groups->layout().branch());

  const at::Tensor guided = cfg.Combine(Prediction(group, branch), kGuidance);
  const at::Tensor cond = Prediction(group, 0);
  const at::Tensor uncond = Prediction(group, 1);
  EXPECT_TRUE(at::allclose(guided, uncond + kGuidance * (cond - uncond), 1e-6, 1e-6));
  // Both halves hold bit-identical latents afterwards.
  auto [mine, other] = cfg.Exchange(guided);
  EXPECT_TRUE(at::equal(mine, other));
}

TEST(CfgParallel, RefusesAGroupThatIsNotAPair) {
  if (WorldSize() == 2) GTEST_SKIP() << "the world is a pair";
  auto world = MakeCommunicator(MPI_COMM_WORLD, "world");
  EXPECT_THROW(parallel::CfgParallel cfg(*world), CheckFailure);
}

// sp x 2 ranks per group: each branch runs sequence-parallel attention over its half, gathers its
// prediction, and the pairs combine it; every rank ends with the single-process CFG result.
TEST(CfgParallel, WithUlyssesEqualsTheSingleProcessGuidedAttention) {
  const int n = WorldSize();
  if (n % 2 != 0 || n < 4) GTEST_SKIP() << "needs sp >= 2 with CFG pairs (4 ranks)";
  const int sp = n / 2;
  auto groups = parallel::ProcessGroups::Create(MPI_COMM_WORLD, sp, 2);
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  auto sequence = MakeCommunicator(groups->sequence(), "sequence group");
  auto pair = MakeCommunicator(groups->cfg_pair(), "cfg pair");
  parallel::UlyssesAttention ulysses(*sequence);
  parallel::CfgParallel cfg(*pair);

  const int64_t batch = 1, tokens = 5 * sp + 1, heads = 6, head_dim = 8;
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  auto inputs = [&](int branch) {
    std::vector<at::Tensor> qkv;
    for (int i = 0; i < 3; ++i) qkv.push_back(SeededRandn({batch, tokens, heads, head_dim}, 7000 + 10 * branch + i));
    return qkv;
  };
  auto reference = [&](int branch) {
    auto qkv = inputs(branch);
    return ReferenceAttention(qkv[0].transpose(1, 2), qkv[1].transpose(1, 2), qkv[2].transpose(1, 2), scale)
        .transpose(1, 2);
  };

  const auto shard = models::ShardLayout::For(tokens, groups->layout().sequence_rank(), sp);
  auto qkv = inputs(groups->layout().cfg_rank());
  for (auto& x : qkv) {
    x = at::cat({x, at::zeros({batch, shard.padded_tokens - tokens, heads, head_dim})}, 1)
            .narrow(1, shard.begin, shard.local_tokens);
  }
  const at::Tensor local = ulysses.SelfAttention(qkv[0], qkv[1], qkv[2], scale, tokens);
  const at::Tensor prediction = ulysses.GatherSequence(local).narrow(1, 0, tokens);
  const at::Tensor guided = cfg.Combine(prediction, kGuidance);

  const at::Tensor cond = reference(0);
  const at::Tensor uncond = reference(1);
  const at::Tensor expected = uncond + kGuidance * (cond - uncond);
  EXPECT_TRUE(at::allclose(guided, expected, 1e-4, 1e-4)) << "max abs error "
                                                           << (guided - expected).abs().max().item<float>();
}

}  // namespace
}  // namespace stas::testing

// ProcessGroups: the split of the MPI world into rendering groups, sequence groups and CFG pairs.
#include <gtest/gtest.h>

#include "mpi_test_support.h"
#include "parallel/process_groups.h"

namespace stas::testing {
namespace {

// World ranks of the members of `comm`, in the communicator's rank order.
std::vector<int64_t> Members(MPI_Comm comm) {
  auto gathered = MakeCommunicator(comm, "members")->AllGather(at::full({1}, int64_t{WorldRank()}));
  return std::vector<int64_t>(gathered.data_ptr<int64_t>(), gathered.data_ptr<int64_t>() + gathered.numel());
}

TEST(ProcessGroups, EveryValidSplitHasTheDocumentedMembers) {
  const int n = WorldSize();
  for (int cfg : {1, 2}) {
    for (int sp = 1; sp <= n; ++sp) {
      if (n % (sp * cfg) != 0) continue;
      SCOPED_TRACE("sp " + std::to_string(sp) + " cfg " + std::to_string(cfg));
      auto groups = parallel::ProcessGroups::Create(MPI_COMM_WORLD, sp, cfg);
      ASSERT_TRUE(groups.ok()) << groups.status().ToString();  // same on every rank
      const parallel::GroupLayout& layout = groups->layout();
      const int g = sp * cfg;
      const int first = WorldRank() / g * g;  // first world rank of my group

      std::vector<int64_t> group, sequence, pair;
      for (int r = first; r < first + g; ++r) group.push_back(r);
      const int branch_first = first + (WorldRank() - first) / sp * sp;
      for (int r = branch_first; r < branch_first + sp; ++r) sequence.push_back(r);
      for (int c = 0; c < cfg; ++c) pair.push_back(first + c * sp + (WorldRank() - first) % sp);

      EXPECT_EQ(Members(groups->group()), group);
      EXPECT_EQ(Members(groups->sequence()), sequence);
      EXPECT_EQ(Members(groups->cfg_pair()), pair);
      EXPECT_EQ(layout.group_count(), n / g);
      EXPECT_EQ(layout.is_group_leader(), WorldRank() == first);
      EXPECT_EQ(layout.branch() == models::CfgBranch::kCond, WorldRank() < first + sp);
      EXPECT_EQ(groups->local_size(), n);  // one node under mpirun here
      EXPECT_GE(groups->local_rank(), 0);
    }
  }
}

TEST(ProcessGroups, SizesThatDoNotTileTheWorldFailOnEveryRankWithoutCommunicating) {
  const int n = WorldSize();
  auto too_big = parallel::ProcessGroups::Create(MPI_COMM_WORLD, n + 1, 1);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_big.status().message().find("launch a multiple of " + std::to_string(n + 1)), std::string::npos)
      << too_big.status().message();
  if (n % 2 == 1) {
    EXPECT_FALSE(parallel::ProcessGroups::Create(MPI_COMM_WORLD, 1, 2).ok());
  }
  EXPECT_FALSE(parallel::ProcessGroups::Create(MPI_COMM_WORLD, 1, 3).ok());
  EXPECT_FALSE(parallel::ProcessGroups::Create(MPI_COMM_WORLD, 0, 1).ok());
  // Nobody was left inside a split: the world still agrees.
  EXPECT_EQ(Members(MPI_COMM_WORLD).size(), static_cast<size_t>(n));
}

}  // namespace
}  // namespace stas::testing

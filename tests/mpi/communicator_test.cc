// MpiCommunicator: every collective against values each rank computes on its own.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "common/check.h"
#include "mpi_test_support.h"
#include "parallel/mpi_communicator.h"

namespace stas::testing {
namespace {

using parallel::ReduceOp;

// What rank `source` sends to rank `destination` in the all-to-all test: [rows, cols].
at::Tensor Payload(int source, int destination, int64_t rows, int64_t cols) {
  const at::Tensor index = at::arange(rows * cols, at::kDouble).view({rows, cols});
  return index + 1000.0 * source + 100.0 * destination;
}

// Rank r's contribution to the reductions: differs per rank and per element, with sign changes.
at::Tensor Contribution(int rank, int64_t n) {
  return at::arange(n, at::kDouble).mul(rank + 1).remainder(7).sub(rank).mul(0.5);
}

TEST(MpiCommunicator, ReportsRankAndSize) {
  auto comm = MakeCommunicator(MPI_COMM_WORLD, "world");
  EXPECT_EQ(comm->rank(), WorldRank());
  EXPECT_EQ(comm->size(), WorldSize());
  EXPECT_EQ(comm->backend(), "mpi");
}

TEST(MpiCommunicator, AllToAllSendsChunkIToRankI) {
  auto comm = MakeCommunicator(MPI_COMM_WORLD, "world");
  const int n = WorldSize();
  const int me = WorldRank();
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kLong, at::kInt}) {
    std::vector<at::Tensor> outgoing;
    std::vector<at::Tensor> expected;
    for (int peer = 0; peer < n; ++peer) {
      outgoing.push_back(Payload(me, peer, 2, 3));
      expected.push_back(Payload(peer, me, 2, 3));
    }
    const at::Tensor received = comm->AllToAll(at::cat(outgoing).to(dtype));
    EXPECT_EQ(received.scalar_type(), dtype);
    EXPECT_TRUE(at::equal(received, at::cat(expected).to(dtype))) << "dtype " << dtype;
  }
}

TEST(MpiCommunicator, AllToAllAcceptsNonContiguousInputAndLeavesItAlone) {
  auto comm = MakeCommunicator(MPI_COMM_WORLD, "world");
  const int n = WorldSize();
  const int me = WorldRank();
  std::vector<at::Tensor> outgoing;
  std::vector<at::Tensor> expected;
  for (int peer = 0; peer < n; ++peer) {
    outgoing.push_back(Payload(me, peer, 3, 2).t());  // [2, 3], transposed storage
    expected.push_back(Payload(peer, me, 3, 2).t());
  }
  const at::Tensor input = at::cat(outgoing, 1).t();  // [3n, 2]... rows grouped per peer after transpose
  const at::Tensor input_copy = input.clone();
  ASSERT_FALSE(input.is_contiguous());
  const at::Tensor received = comm->AllToAll(input);
  EXPECT_TRUE(at::equal(received, at::cat(expected, 1).t()));
  EXPECT_TRUE(at::equal(input, input_copy));
}

TEST(MpiCommunicator, AllReduceSumAndMax) {
  auto comm = MakeCommunicator(MPI_COMM_WORLD, "world");
  const int n = WorldSize();
  at::Tensor sum = at::zeros({13}, at::kDouble);
  at::Tensor max = at::full({13}, -1e9, at::kDouble);
  for (int r = 0; r < n; ++r) {
    sum += Contribution(r, 13);
    max = at::maximum(max, Contribution(r, 13));
  }
  const at::Tensor mine = Contribution(WorldRank(), 13);
  const at::Tensor mine_before = mine.clone();
  EXPECT_TRUE(at::allclose(comm->AllReduce(mine.to(at::kFloat), ReduceOp::kSum), sum.to(at::kFloat)));
  EXPECT_TRUE(at::equal(comm->AllReduce(mine.to(at::kFloat), ReduceOp::kMax), max.to(at::kFloat)));
  EXPECT_TRUE(at::equal(comm->AllReduce(mine, ReduceOp::kSum), sum));
  EXPECT_TRUE(at::equal(comm->AllReduce(mine.mul(2).to(at::kLong), ReduceOp::kSum), sum.mul(2).to(at::kLong)));
  EXPECT_TRUE(at::equal(comm->AllReduce(mine.mul(2).to(at::kLong), ReduceOp::kMax), max.mul(2).to(at::kLong)));
  EXPECT_TRUE(at::equal(mine, mine_before));  // inputs are never modified

  // bfloat16 reduces in float32 and rounds once.
  const at::Tensor bf16 = comm->AllReduce(mine.to(at::kBFloat16), ReduceOp::kSum);
  EXPECT_EQ(bf16.scalar_type(), at::kBFloat16);
  at::Tensor bf16_expected = at::zeros({13}, at::kFloat);
  for (int r = 0; r < n; ++r) bf16_expected += Contribution(r, 13).to(at::kBFloat16).to(at::kFloat);
  EXPECT_TRUE(at::equal(bf16, bf16_expected.to(at::kBFloat16)));

  // bool: any rank true -> true, for sum and max alike.
  const at::Tensor flags = at::zeros({n + 1}, at::kBool).index_fill_(0, at::tensor({int64_t{WorldRank()}}), true);
  at::Tensor expected_flags = at::ones({n + 1}, at::kBool);
  expected_flags[n] = false;
  EXPECT_TRUE(at::equal(comm->AllReduce(flags, ReduceOp::kMax), expected_flags));
  EXPECT_TRUE(at::equal(comm->AllReduce(flags, ReduceOp::kSum), expected_flags));

  // A scalar (0-d) tensor.
  EXPECT_EQ(comm->AllReduce(at::scalar_tensor(WorldRank() + 1.0, at::kDouble), ReduceOp::kSum).item<double>(),
            n * (n + 1) / 2.0);
}

TEST(MpiCommunicator, AllGatherConcatenatesInRankOrder) {
  auto comm = MakeCommunicator(MPI_COMM_WORLD, "world");
  std::vector<at::Tensor> expected;
  for (int r = 0; r < WorldSize(); ++r) expected.push_back(Payload(r, 0, 2, 5).view({2, 5, 1}));
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kLong}) {
    const at::Tensor gathered = comm->AllGather(Payload(WorldRank(), 0, 2, 5).view({2, 5, 1}).to(dtype));
    EXPECT_TRUE(at::equal(gathered, at::cat(expected).to(dtype))) << dtype;
  }
  // A zero-size tensor gathers to a zero-size tensor.
  EXPECT_EQ(comm->AllGather(at::zeros({0, 3})).sizes(), (std::vector<int64_t>{0, 3}));
}

TEST(MpiCommunicator, BroadcastReturnsTheRootsTensorEverywhere) {
  auto comm = MakeCommunicator(MPI_COMM_WORLD, "world");
  const int root = WorldSize() - 1;
  const at::Tensor mine = Payload(WorldRank(), 7, 4, 3).to(at::kFloat);
  const at::Tensor got = comm->Broadcast(mine, root);
  EXPECT_TRUE(at::equal(got, Payload(root, 7, 4, 3).to(at::kFloat)));
  EXPECT_TRUE(at::equal(mine, Payload(WorldRank(), 7, 4, 3).to(at::kFloat)));
  comm->Barrier();
}

TEST(MpiCommunicator, DisagreeingShapesFailOnEveryRankAndLeaveTheCommunicatorUsable) {
  auto comm = MakeCommunicator(MPI_COMM_WORLD, "world");
  const int n = WorldSize();
  const at::Tensor odd = at::zeros({n, WorldRank() == 0 ? 4 : 3});
  try {
    comm->AllGather(odd);
    ADD_FAILURE() << "expected a CheckFailure";
  } catch (const CheckFailure& e) {
    EXPECT_NE(std::string(e.what()).find("different tensors"), std::string::npos) << e.what();
  }
  try {
    comm->AllToAll(WorldRank() == 0 ? at::zeros({n}, at::kDouble) : at::zeros({n}, at::kFloat));
    ADD_FAILURE() << "expected a CheckFailure";
  } catch (const CheckFailure& e) {
    EXPECT_NE(std::string(e.what()).find("different tensors"), std::string::npos) << e.what();
  }
  // dim 0 that does not split into size() chunks: the same error everywhere (size 1 always splits).
  if (n > 1) {
    EXPECT_THROW(comm->AllToAll(at::zeros({n + 1})), CheckFailure);
  }
  // Non-CPU tensors are refused by every rank.
  EXPECT_THROW(comm->AllReduce(at::empty({2}, at::TensorOptions().device(at::kMeta)), ReduceOp::kSum), CheckFailure);
  // Still in step afterwards.
  EXPECT_EQ(comm->AllReduce(at::ones({1}), ReduceOp::kSum).item<float>(), static_cast<float>(n));
}

TEST(MpiCommunicator, CommunicatorsOnDuplicatesDoNotMixMessages) {
  auto a = MakeCommunicator(MPI_COMM_WORLD, "a");
  auto b = MakeCommunicator(MPI_COMM_WORLD, "b");
  const at::Tensor from_a = a->AllGather(at::full({1}, 1.0 + WorldRank()));
  const at::Tensor from_b = b->AllGather(at::full({1}, -1.0 - WorldRank()));
  EXPECT_TRUE(at::equal(from_a, at::arange(1, WorldSize() + 1).to(at::kFloat)));
  EXPECT_TRUE(at::equal(from_b, -at::arange(1, WorldSize() + 1).to(at::kFloat)));
}

// A real collective that does not complete in time is reported by the watchdog (with a recording
// action instead of the abort), then completes once the late rank arrives.
TEST(Watchdog, ReportsABarrierThatALateRankHoldsUp) {
  std::vector<parallel::TimeoutReport> reports;
  std::mutex mutex;
  parallel::Watchdog watchdog(
      parallel::Watchdog::Options{std::chrono::milliseconds(200), std::chrono::milliseconds(20), true},
      [&](const parallel::TimeoutReport& r) {
        std::lock_guard<std::mutex> lock(mutex);
        reports.push_back(r);
      });
  parallel::MpiCommunicator comm(parallel::MpiComm::Duplicate(MPI_COMM_WORLD), &watchdog, "world");
  if (WorldRank() == WorldSize() - 1) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  comm.Barrier();
  std::lock_guard<std::mutex> lock(mutex);
  if (WorldRank() == WorldSize() - 1 || WorldSize() == 1) {
    EXPECT_TRUE(reports.empty());
  } else {
    ASSERT_EQ(reports.size(), 1u);
    EXPECT_EQ(reports[0].collective, "barrier");
    EXPECT_EQ(reports[0].backend, "mpi");
    EXPECT_EQ(reports[0].rank, WorldRank());
    EXPECT_GE(reports[0].elapsed.count(), 200);
    EXPECT_NE(reports[0].ToString().find("world of " + std::to_string(WorldSize())), std::string::npos)
        << reports[0].ToString();
  }
  EXPECT_EQ(watchdog.pending(), 0u);
}

}  // namespace
}  // namespace stas::testing

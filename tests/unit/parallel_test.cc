// parallel/ pieces that need no MPI: the watchdog's timeout logic (fake clock), the group layout
// arithmetic, the heads check, and Ulysses on a group of one.
#include <gtest/gtest.h>

#include <cmath>

#include "common/check.h"
#include "parallel/instrumented_communicator.h"
#include "parallel/process_groups.h"
#include "parallel/ulysses.h"
#include "parallel/watchdog.h"

namespace stas::parallel {
namespace {

using std::chrono::milliseconds;

struct FakeClock {
  Watchdog::TimePoint now{};
  Watchdog::Clock fn() {
    return [this] { return now; };
  }
};

Watchdog::Operation Op(const std::string& name, int rank) {
  Watchdog::Operation op;
  op.collective = name;
  op.backend = "mpi";
  op.rank = rank;
  op.context = "sequence group of 4";
  return op;
}

TEST(Watchdog, ReportsOnlyOperationsOlderThanTheTimeoutAndOnlyOnce) {
  FakeClock clock;
  std::vector<TimeoutReport> fired;
  Watchdog watchdog({milliseconds(1000), milliseconds(10), /*start_thread=*/false},
                    [&](const TimeoutReport& r) { fired.push_back(r); }, clock.fn());
  const auto a = watchdog.Begin(Op("all_to_all", 3));
  clock.now += milliseconds(600);
  const auto b = watchdog.Begin(Op("all_gather", 3));
  EXPECT_TRUE(watchdog.CheckNow().empty());
  clock.now += milliseconds(500);  // a: 1100 ms, b: 500 ms
  auto reports = watchdog.CheckNow();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].collective, "all_to_all");
  EXPECT_EQ(reports[0].rank, 3);
  EXPECT_EQ(reports[0].elapsed, milliseconds(1100));
  EXPECT_EQ(reports[0].timeout, milliseconds(1000));
  ASSERT_EQ(fired.size(), 1u);
  const std::string text = fired[0].ToString();
  EXPECT_NE(text.find("all_to_all (mpi) on rank 3 [sequence group of 4]"), std::string::npos) << text;
  EXPECT_NE(text.find("after 1.1 s (timeout 1.0 s)"), std::string::npos) << text;
  EXPECT_TRUE(watchdog.CheckNow().empty());  // reported once
  watchdog.End(a);                           // ending a reported ticket is harmless
  watchdog.End(b);                           // b finished in time
  clock.now += milliseconds(5000);
  EXPECT_TRUE(watchdog.CheckNow().empty());
  EXPECT_EQ(watchdog.pending(), 0u);
  EXPECT_EQ(fired.size(), 1u);
}

TEST(Watchdog, PollsAsynchronousOperationsAndRunsTheAbortHookBeforeTheAction) {
  FakeClock clock;
  std::vector<std::string> events;
  Watchdog watchdog({milliseconds(100), milliseconds(10), false},
                    [&](const TimeoutReport& r) { events.push_back("action " + r.collective); }, clock.fn());
  bool done = false;
  auto finishing = Op("broadcast", 0);
  finishing.is_complete = [&] { return done; };
  watchdog.Begin(std::move(finishing));
  auto hung = Op("all_reduce(max)", 0);
  hung.is_complete = [] { return false; };
  hung.abort = [&] { events.push_back("abort hook"); };
  watchdog.Begin(std::move(hung));
  EXPECT_EQ(watchdog.pending(), 2u);
  done = true;
  EXPECT_TRUE(watchdog.CheckNow().empty());
  EXPECT_EQ(watchdog.pending(), 1u);  // the completed one retired itself
  clock.now += milliseconds(100);
  ASSERT_EQ(watchdog.CheckNow().size(), 1u);
  EXPECT_EQ(events, (std::vector<std::string>{"abort hook", "action all_reduce(max)"}));
}

TEST(Watchdog, BackgroundThreadFiresWithoutAnyoneAsking) {
  std::mutex mutex;
  std::condition_variable fired_cv;
  bool fired = false;
  Watchdog watchdog({milliseconds(50), milliseconds(5), true}, [&](const TimeoutReport&) {
    std::lock_guard<std::mutex> lock(mutex);
    fired = true;
    fired_cv.notify_all();
  });
  WatchdogScope scope(&watchdog, Op("barrier", 1));
  std::unique_lock<std::mutex> lock(mutex);
  EXPECT_TRUE(fired_cv.wait_for(lock, std::chrono::seconds(10), [&] { return fired; }));
}

TEST(WatchdogDeathTest, DefaultActionAbortsWithTheReport) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  FakeClock clock;
  EXPECT_DEATH(
      {
        Watchdog watchdog({milliseconds(10), milliseconds(10), false}, &Watchdog::AbortProcess, clock.fn());
        watchdog.Begin(Op("all_to_all", 2));
        clock.now += milliseconds(20);
        watchdog.CheckNow();
      },
      "collective all_to_all \\(mpi\\) on rank 2.*aborting the process");
}

TEST(GroupLayout, SplitsTheWorldIntoGroupsBranchesAndShards) {
  // 8 ranks, sp 4 x cfg 2: one group; ranks 0-3 cond, 4-7 uncond.
  auto layout = GroupLayout::For(8, 6, 4, 2);
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->group_count(), 1);
  EXPECT_EQ(layout->sequence_rank(), 2);
  EXPECT_EQ(layout->cfg_rank(), 1);
  EXPECT_EQ(layout->branch(), models::CfgBranch::kUncond);
  EXPECT_FALSE(layout->is_group_leader());
  // 6 ranks, sp 3: two data-parallel groups.
  layout = GroupLayout::For(6, 4, 3, 1);
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->group_index(), 1);
  EXPECT_EQ(layout->rank_in_group(), 1);
  EXPECT_EQ(layout->branch(), models::CfgBranch::kCond);
  EXPECT_EQ(layout->ToString(), "world rank 4 of 6: group 1 of 2, sequence rank 1 of 3");

  auto bad = GroupLayout::For(4, 0, 3, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "--sp 3 makes groups of 3 ranks, which do not tile the 4 MPI ranks: launch a multiple of 3 ranks "
            "(mpirun -np 3, 6, ...)");
  EXPECT_FALSE(GroupLayout::For(4, 0, 1, 3).ok());
  EXPECT_FALSE(GroupLayout::For(4, 4, 1, 1).ok());
  EXPECT_FALSE(GroupLayout::For(4, 0, 0, 1).ok());
}

TEST(UlyssesAttention, CheckHeadsNamesTheDegreesThatWork) {
  EXPECT_TRUE(UlyssesAttention::CheckHeads(12, 4).ok());
  const Status s = UlyssesAttention::CheckHeads(12, 8);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "12 attention heads do not split over 8 ranks: use --sp in {1,2,3,4,6,12} (or --sp 4 with --cfg-parallel)");
  EXPECT_EQ(UlyssesAttention::CheckHeads(2, 3).message(), "2 attention heads do not split over 3 ranks: use --sp in {1,2}");
  EXPECT_FALSE(UlyssesAttention::CheckHeads(12, 0).ok());
}

// On one rank, SelfAttention is plain attention over the real keys: padded keys are dropped.
TEST(UlyssesAttention, OneRankIgnoresPaddedKeys) {
  LocalCommunicator local;
  InstrumentedCommunicator counted(local, /*synchronize=*/false);
  UlyssesAttention ulysses(counted);
  const int64_t real = 5, padded = 7, heads = 2, dim = 4;
  at::manual_seed(3);
  const at::Tensor q = at::randn({1, padded, heads, dim});
  const at::Tensor k = at::randn({1, padded, heads, dim});
  const at::Tensor v = at::randn({1, padded, heads, dim});
  const at::Tensor k_junk = k.clone();
  k_junk.narrow(1, real, padded - real).fill_(100.0);
  const double scale = 0.5;
  const at::Tensor out = ulysses.SelfAttention(q, k_junk, v, scale, real);
  // Reference over the real keys, written out.
  const at::Tensor qh = q.transpose(1, 2), kh = k.narrow(1, 0, real).transpose(1, 2),
                   vh = v.narrow(1, 0, real).transpose(1, 2);
  const at::Tensor expected = at::matmul(at::softmax(at::matmul(qh, kh.transpose(-2, -1)) * scale, -1), vh).transpose(1, 2);
  EXPECT_TRUE(at::allclose(out, expected, 1e-5, 1e-5));
  EXPECT_TRUE(at::equal(ulysses.GatherSequence(out), out));
  EXPECT_TRUE(counted.stats().empty());  // a group of one never communicates
  EXPECT_THROW(ulysses.SelfAttention(q, k, v, scale, padded + 1), CheckFailure);
  EXPECT_THROW(ulysses.SelfAttention(q, k.narrow(1, 0, 3), v, scale, real), CheckFailure);
}

TEST(InstrumentedCommunicator, CountsCallsAndBytesPerCollective) {
  LocalCommunicator local;
  InstrumentedCommunicator counted(local, true);
  counted.AllToAll(at::zeros({4, 2}));
  counted.AllToAll(at::zeros({4, 2}));
  counted.AllReduce(at::zeros({3}, at::kDouble), ReduceOp::kMax);
  ASSERT_EQ(counted.stats().count("all_to_all"), 1u);
  EXPECT_EQ(counted.stats().at("all_to_all").calls, 2);
  EXPECT_EQ(counted.stats().at("all_to_all").bytes, 2 * 8 * 4);
  EXPECT_EQ(counted.stats().at("all_reduce(max)").bytes, 24);
  EXPECT_GE(counted.total_seconds(), 0.0);
}

}  // namespace
}  // namespace stas::parallel

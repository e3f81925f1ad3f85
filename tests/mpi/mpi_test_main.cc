// main() of stas_mpi_tests: runs the GoogleTest suites on every rank of an MPI world.
//
// Every rank runs every test in the same order; tests call their collectives on all ranks before
// asserting, so one rank's failure does not leave the others waiting. Rank 0 prints the usual report,
// other ranks print only their failures (tagged with the rank). The exit code is the same on every
// rank: non-zero if any rank failed.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdio>

#include "mpi_test_support.h"
#include "parallel/mpi_environment.h"

namespace stas::testing {

namespace {
int g_rank = 0;
int g_size = 1;

// Failures of ranks other than 0, so a rank-specific failure is not lost in the noise.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", g_rank, result.file_name() ? result.file_name() : "?",
                 result.line_number(), result.summary());
  }
};
}  // namespace

int WorldRank() { return g_rank; }
int WorldSize() { return g_size; }

parallel::Watchdog& TestWatchdog() {
  static parallel::Watchdog watchdog(
      parallel::Watchdog::Options{std::chrono::seconds(120), std::chrono::milliseconds(500), true});
  return watchdog;
}

std::unique_ptr<parallel::MpiCommunicator> MakeCommunicator(MPI_Comm comm, const std::string& context) {
  return std::make_unique<parallel::MpiCommunicator>(parallel::MpiComm::Duplicate(comm), &TestWatchdog(), context);
}

}  // namespace stas::testing

int main(int argc, char** argv) {
  auto env = stas::parallel::MpiEnvironment::Initialize(&argc, &argv);
  if (!env.ok()) {
    std::fprintf(stderr, "stas_mpi_tests: %s\n", env.status().ToString().c_str());
    return 1;
  }
  // Two cores are shared by all ranks in CI.
  at::set_num_threads(1);
  stas::testing::g_rank = (*env)->world_rank();
  stas::testing::g_size = (*env)->world_size();
  ::testing::InitGoogleTest(&argc, argv);
  if (stas::testing::g_rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new stas::testing::RankFailurePrinter());
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = failed;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (stas::testing::g_rank == 0) {
    std::printf("stas_mpi_tests: %d ranks, %s\n", stas::testing::g_size, any_failed ? "FAILED" : "all passed");
  }
  return any_failed;
}

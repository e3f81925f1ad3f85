// `stas loadtest --small` against a live coordinator (redis-server + `stas coordinator`, no workers):
// the control plane's bulk behaviour end to end over HTTP and the worker protocol. The assertions are
// functional (the checks the load test makes), not timings: a served job starts behind an unserved
// backlog and after a cancelled one, a priority-100 job goes first, resubmitted ids are the same.
#include <gtest/gtest.h>

#include "service_stack.h"

namespace stas::testing {
namespace {

TEST(LoadTest, SmallRunHoldsEveryCheck) {
  StackOptions options;
  options.lease_ms = 600000;  // the load test's fake group does not heartbeat
  ServiceStack stack(options);
  ASSERT_TRUE(stack.StartRedis()) << stack.Logs();
  ASSERT_TRUE(stack.StartCoordinator()) << stack.Logs();
  auto run = stack.Stas("loadtest --small --server " + stack.server() + " --worker " + stack.worker_address() +
                        " --redis redis://127.0.0.1:" + std::to_string(stack.redis_port()) +
                        " --secret-file " + stack.storage() + "/.stas/worker-secret");
  EXPECT_EQ(run.exit_code, 0) << run.output << stack.Logs();
  for (const char* line : {"check: served job started within 2 s behind the unserved backlog: yes",
                           "check: served job started within 2 s after the cancellations: yes",
                           "check: priority-100 job dispatched next behind 200 priority-0 jobs: yes",
                           "check: resubmitted ids are the same: yes", "redis bytes per queued job:",
                           "GET /jobs cursor page (after=) median", "GET /v1/videos cursor page median",
                           "submit new jobs/s", "resubmit existing jobs/s", "/healthz worst latency during the batches",
                           "stas watch --dataset first line",
                           "all checks held"})
    EXPECT_NE(run.output.find(line), std::string::npos) << line << "\n" << run.output;
  // Every job the load test made is accounted for: nothing lost, nothing twice.
  Json counts = stack.GetJson("/counts");
  EXPECT_EQ(counts["total"], counts["counts"]["queued"].get<int64_t>() + counts["counts"]["running"].get<int64_t>() +
                                 counts["counts"]["failed"].get<int64_t>() +
                                 counts["counts"]["cancelled"].get<int64_t>());
  EXPECT_EQ(counts["counts"]["cancelled"], 500);
  EXPECT_EQ(counts["counts"]["running"], 1) << "the fake group holds the priority job";
}

}  // namespace
}  // namespace stas::testing

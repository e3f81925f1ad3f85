// Hostile clients against the real processes on loopback (redis-server, `stas coordinator`, a tiny
// `stas worker` group): a coordinator out of file descriptors backs off instead of spinning and
// recovers; a cancel lands inside one long denoising step. Skipped without Redis (CI requires it).
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "service/service_stack.h"
#include "support/loopback.h"
#include "support/optional_dependency.h"

namespace stas::testing {
namespace {

int PortOf(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

// User + system CPU seconds a process has used so far (/proc/PID/stat fields 14 and 15).
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  long ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i)
    if (i >= 14) ticks += std::stol(field);
  return static_cast<double>(ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

uintmax_t FileSize(const std::string& path) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : n;
}

double SecondsSince(SteadyClock::time_point t) { return std::chrono::duration<double>(SteadyClock::now() - t).count(); }

bool RedisUsable() { return STAS_HAVE_REDIS && RunCommand("command -v redis-server").exit_code == 0; }

// Finding 3: with its descriptors exhausted (ulimit -n 64, 200 connections that never say hello) the
// coordinator's accept fails with EMFILE. It must pause that listener instead of retrying in a busy
// loop (before the backoff: 100% CPU and hundreds of MB of log in seconds), and once the connections
// are gone it must serve /healthz and take a real worker group again.
TEST(HostileStack, DescriptorExhaustionBacksOffAndRecovers) {
  STAS_NEEDS_REDIS(RedisUsable(), "redis-server or hiredis is missing");
  ServiceStack stack;
  ASSERT_TRUE(stack.StartRedis()) << stack.Logs();
  const std::string log = stack.log_dir() + "/coordinator.log";
  const std::string http = stack.server().substr(std::string("http://").size());
  // A long hello deadline and high caps, so the connections stay open and only the descriptor limit
  // stops the coordinator.
  Child coordinator({"/bin/sh", "-c", "ulimit -n 64 && exec \"$0\" \"$@\"", STAS_BINARY, "coordinator", "--redis",
                     "redis://127.0.0.1:" + std::to_string(stack.redis_port()), "--listen", stack.worker_address(),
                     "--http", http, "--storage", stack.storage(), "--hello-timeout-ms", "60000",
                     "--max-worker-connections", "1000", "--max-worker-connections-per-peer", "1000"},
                    log);
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.Healthy(); }, 30s)) << stack.Logs();

  std::vector<int> clients;
  for (int i = 0; i < 200; ++i) {
    const int fd = ConnectLoopback(PortOf(stack.worker_address()));
    if (fd >= 0) clients.push_back(fd);
  }
  ASSERT_GE(clients.size(), 100u) << "the kernel's backlog should take the connections the coordinator cannot";
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return coordinator.Log().find("accept failed") != std::string::npos; },
                                      10s))
      << "the coordinator never ran out of descriptors\n" << stack.Logs();

  // Out of descriptors for 3 s: a paused listener costs next to no CPU and writes a line a second.
  std::this_thread::sleep_for(300ms);
  const double cpu_before = CpuSeconds(coordinator.pid());
  const uintmax_t log_before = FileSize(log);
  const auto window_start = SteadyClock::now();
  std::this_thread::sleep_for(3s);
  const double cpu = CpuSeconds(coordinator.pid()) - cpu_before;
  const uintmax_t logged = FileSize(log) - log_before;
  const double window = SecondsSince(window_start);
  std::printf("SECURITY fd_exhaustion cpu_s=%.3f log_bytes=%ju window_s=%.1f\n", cpu, logged, window);
  EXPECT_LT(cpu, 0.5) << "the coordinator spins while accept fails (" << cpu << " CPU s in " << window << " s)";
  EXPECT_LT(logged, 4096u) << "accept errors are not rate-limited: " << logged << " bytes of log in " << window
                           << " s";
  EXPECT_TRUE(coordinator.Running());

  for (int fd : clients) ::close(fd);
  const auto closed = SteadyClock::now();
  EXPECT_TRUE(ServiceStack::WaitUntil([&] { return stack.Healthy(); }, 10s))
      << "/healthz does not answer after the connections closed\n" << stack.Logs();
  std::printf("SECURITY fd_exhaustion healthz_after_s=%.2f\n", SecondsSince(closed));

  stack.StartWorkers("late", 1);
  EXPECT_TRUE(ServiceStack::WaitUntil([&] { return stack.ConnectedWorkers() == 1; }, 60s))
      << "a worker group cannot connect after the exhaustion\n" << stack.Logs();
}

// Finding 7: a cancel takes effect within one transformer block, not at the end of the step. Each
// transformer block of the worker sleeps 1.5 s (--fault-block-delay-ms), so one step of the tiny model
// (three blocks) takes at least 4.5 s; the cancel must stop the group within about one block, before
// step 0 ever completes. /workers must show the group busy with
// the job while it computes and free once it stopped; nothing may be left in the storage folder.
TEST(HostileStack, CancelStopsARenderInsideItsStep) {
  STAS_NEEDS_REDIS(RedisUsable(), "redis-server or hiredis is missing");
  ServiceStack stack;
  ASSERT_TRUE(stack.StartRedis()) << stack.Logs();
  ASSERT_TRUE(stack.StartCoordinator()) << stack.Logs();
  const int block_ms = 1500;
  stack.StartWorkers("slow", 1, {"--fault-block-delay-ms", std::to_string(block_ms), "--checkpoint-every", "0"});
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.ConnectedWorkers() == 1; }, 60s)) << stack.Logs();

  auto ids = stack.Submit("--prompt 'one very long step' --steps 3 --frames 9 --height 32 --width 32");
  ASSERT_EQ(ids.size(), 1u) << stack.Logs();
  const std::string id = ids[0];

  // Wait until the group is inside the denoising stage of this job, as /workers reports it.
  Json group;
  ASSERT_TRUE(ServiceStack::WaitUntil(
      [&] {
        Json w = stack.GetJson("/workers");
        if (!w.is_object() || !w.contains("workers") || w["workers"].empty()) return false;
        group = w["workers"][0];
        return group["job"].is_object() && group["job"].value("stage", "") == "denoise";
      },
      30s, 50ms))
      << stack.Logs();
  EXPECT_EQ(group["state"], "busy");
  EXPECT_EQ(group["job"]["id"], id);
  EXPECT_EQ(stack.State(id), "running");

  // "denoise" is reported as step 0 begins; a moment later the group is inside its first block.
  std::this_thread::sleep_for(300ms);
  const auto cancelled_at = SteadyClock::now();
  auto cancel = RunCommand("curl -s -m 10 -X DELETE " + ShellQuote(stack.server() + "/jobs/" + id));
  ASSERT_EQ(cancel.exit_code, 0) << cancel.output;
  EXPECT_EQ(stack.State(id), "cancelled");

  // Until the group answers it is still computing: "stopping", never idle; then free again.
  int max_step = 0;
  bool saw_stopping = false;
  std::string state;
  ASSERT_TRUE(ServiceStack::WaitUntil(
      [&] {
        Json w = stack.GetJson("/workers");
        if (!w.is_object() || !w.contains("workers") || w["workers"].empty()) return false;
        const Json& g = w["workers"][0];
        state = g.value("state", "");
        if (g["job"].is_object()) max_step = std::max(max_step, g["job"].value("step", 0));
        saw_stopping = saw_stopping || state == "stopping";
        return state != "busy" && state != "stopping";
      },
      20s, 50ms))
      << "the group never stopped; last state " << state << "\n" << stack.Logs();
  const double stop_s = SecondsSince(cancelled_at);
  std::printf("SECURITY cancel_inside_step stop_s=%.2f block_s=%.1f\n", stop_s, block_ms / 1000.0);
  // One block (1.5 s) plus a heartbeat (250 ms) and scheduling slack; step 0 would have gone on for
  // about 4 s more.
  EXPECT_LT(stop_s, 3.0) << "the cancel waited for the step to end";
  EXPECT_TRUE(saw_stopping) << "the cancelled group was never reported as stopping";
  EXPECT_EQ(max_step, 0) << "step 0 completed before the group stopped";
  EXPECT_EQ(stack.State(id), "cancelled");
  EXPECT_NE(stack.Logs(100000).find("cancelled inside a step"), std::string::npos) << stack.Logs();
  EXPECT_EQ(stack.CountVideos(), 0);
  EXPECT_EQ(stack.CountTemporaryFiles(), 0);
}

// Finding 9: a token that is given must be a real one. `--token ''` or an empty STAS_TOKEN (an unset
// shell variable, a blank line of an env file) used to start a coordinator without authentication.
TEST(HostileStack, AnEmptyOrBlankTokenStopsTheCoordinatorAtStartUp) {
  TempDir storage;
  // Nothing listens on port 1: a coordinator that got past the token check would start and keep
  // retrying Redis until `timeout` ends it (exit 124).
  const std::string coordinator = std::string(STAS_BINARY) + " coordinator --redis redis://127.0.0.1:1 --listen " +
                                  "127.0.0.1:0 --http 127.0.0.1:0 --storage " + ShellQuote(storage.path());
  for (const std::string& run : {"env -u STAS_TOKEN timeout 20 " + coordinator + " --token ''",
                                 "env -u STAS_TOKEN timeout 20 " + coordinator + " --token ' '",
                                 "env STAS_TOKEN= timeout 20 " + coordinator,
                                 "env 'STAS_TOKEN=  ' timeout 20 " + coordinator}) {
    auto r = RunCommand(run);
    EXPECT_EQ(r.exit_code, 64) << run << "\n" << r.output;
    EXPECT_NE(r.output.find("must not be empty or blank"), std::string::npos) << run << "\n" << r.output;
  }
}

}  // namespace
}  // namespace stas::testing

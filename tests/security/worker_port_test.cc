// The worker port before authentication, on a real CoordinatorServer (in-process, in-memory store):
// the hello deadline, the pre-hello frame limit, the per-peer connection cap; a worker's link
// backing off from a coordinator that keeps closing on it; and a worker refusing a job message whose
// assigned output path is missing or unsafe.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "coordinator/memory_job_store.h"
#include "coordinator/server.h"
#include "protocol/protocol.h"
#include "support/loopback.h"
#include "support/temp_dir.h"
#include "worker/coordinator_link.h"
#include "worker/worker_process.h"

namespace stas::coordinator {
namespace {

using namespace std::chrono_literals;

// True when the peer closed the connection within `timeout` (reads past any error frame).
bool ClosedWithin(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return true;
  }
  return false;
}

class WorkerPortTest : public ::testing::Test {
 protected:
  void Start(ServerOptions o) {
    store_ = std::make_unique<MemoryJobStore>(DefaultClock());
    queue_ = std::make_unique<JobQueue>(store_.get(), DefaultClock(), QueueOptions());
    DispatcherOptions d;
    d.storage = "/tmp";
    d.token = "secret";
    dispatcher_ = std::make_unique<Dispatcher>(queue_.get(), DefaultClock(), d);
    api_ = std::make_unique<HttpApi>(queue_.get(), dispatcher_.get(), DefaultClock(), HttpApiOptions());
    o.listen_port = 0;
    o.http_port = 0;
    o.handle_signals = false;
    server_ = std::make_unique<CoordinatorServer>(dispatcher_.get(), api_.get(), o);
    ASSERT_TRUE(server_->Start().ok());
    thread_ = std::thread([this] { server_->Run(); });
  }
  ~WorkerPortTest() override {
    if (server_) server_->Stop();
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return server_->worker_port(); }

  std::unique_ptr<MemoryJobStore> store_;
  std::unique_ptr<JobQueue> queue_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<HttpApi> api_;
  std::unique_ptr<CoordinatorServer> server_;
  std::thread thread_;
};

TEST_F(WorkerPortTest, ASilentConnectionIsClosedAfterTheHelloDeadline) {
  ServerOptions o;
  o.hello_timeout_ms = 300;
  Start(o);
  const int fd = testing::ConnectLoopback(port());
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(ClosedWithin(fd, 3000ms)) << "a connection that never says hello must not stay open";
  ::close(fd);
}

TEST_F(WorkerPortTest, ALargeFrameBeforeHelloIsRefusedAtOnce) {
  Start(ServerOptions());
  const int fd = testing::ConnectLoopback(port());
  ASSERT_GE(fd, 0);
  const uint32_t n = 2u << 20;
  const unsigned char header[4] = {static_cast<unsigned char>(n >> 24), static_cast<unsigned char>(n >> 16),
                                   static_cast<unsigned char>(n >> 8), static_cast<unsigned char>(n)};
  ASSERT_EQ(::send(fd, header, 4, MSG_NOSIGNAL), 4);
  EXPECT_TRUE(ClosedWithin(fd, 2000ms)) << "a 2 MiB pre-hello frame must close the connection, not be buffered";
  ::close(fd);
}

TEST_F(WorkerPortTest, ConnectionsPerPeerAreCapped) {
  ServerOptions o;
  o.max_worker_connections_per_peer = 4;
  Start(o);
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) fds.push_back(testing::ConnectLoopback(port()));
  std::this_thread::sleep_for(200ms);
  const int extra = testing::ConnectLoopback(port());
  ASSERT_GE(extra, 0);
  EXPECT_TRUE(ClosedWithin(extra, 2000ms)) << "the fifth connection from one address must be closed";
  for (int fd : fds) EXPECT_FALSE(ClosedWithin(fd, 10ms));
  for (int fd : fds) ::close(fd);
  ::close(extra);
}

TEST(WorkerLink, BacksOffFromACoordinatorThatKeepsClosing) {
  // A coordinator that welcomes, then answers with an error and closes: the reconnect storm of a
  // worker re-sending what the coordinator chokes on.
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 64), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  std::atomic<int> accepted{0};
  std::atomic<bool> stop{false};
  std::thread server([&] {
    while (!stop) {
      pollfd p{listener, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int fd = ::accept(listener, nullptr, nullptr);
      if (fd < 0) continue;
      ++accepted;
      protocol::FrameDecoder decoder;
      if (protocol::ReadFrame(fd, decoder, 1000).ok()) {
        (void)protocol::WriteFrame(fd, {{"type", "welcome"}, {"worker", "w"}, {"heartbeat_ms", 1000}, {"lease_ms", 5000}});
        (void)protocol::WriteFrame(fd, {{"type", "error"}, {"message", "go away"}});
      }
      ::close(fd);
    }
  });
  worker::LinkOptions o;
  o.coordinator = {"127.0.0.1", ntohs(addr.sin_port)};
  o.hello = {{"model", "tiny"}};
  o.backoff_initial_ms = 50;
  o.backoff_max_ms = 1000;
  {
    worker::CoordinatorLink link(o);
    link.Start();
    std::this_thread::sleep_for(2000ms);
  }
  stop = true;
  server.join();
  ::close(listener);
  // 50 + 100 + 200 + 400 + 800 ms of waits fit in 2 s: about 6 connections, not thousands.
  EXPECT_LE(accepted.load(), 10) << "the link reconnected " << accepted << " times in 2 s";
  EXPECT_GE(accepted.load(), 2);
}

// An executor that must never run: the jobs of this test are refused before rendering.
class MustNotRender : public worker::JobExecutor {
 public:
  Result<std::optional<worker::StagedOutput>> Render(const worker::JobContext& job,
                                                     const worker::RenderCallbacks&) override {
    ++renders;
    return Internal("rendered job " + job.job_id + " despite its output path");
  }
  std::atomic<int> renders{0};
};

// Reads frames until one of `type` (others, e.g. heartbeats, are skipped); null on timeout or close.
Json NextFrame(int fd, protocol::FrameDecoder& decoder, const std::string& type) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto m = protocol::ReadFrame(fd, decoder, 200);
    if (!m.ok() && m.status().code() == StatusCode::kTimeout) continue;
    if (!m.ok()) return Json();
    if ((*m)["type"] == type) return *m;
  }
  return Json();
}

TEST(WorkerJobMessage, AMissingOrUnsafeOutputPathIsRefusedWithoutRendering) {
  testing::TempDir storage;
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);

  // A coordinator (forged, or broken) that assigns paths outside the storage folder, then none.
  const std::vector<std::string> outputs = {"../../escaped.mp4", "/tmp/escaped.mp4", "single/.hidden.mp4", ""};
  std::vector<Json> failures;
  std::thread coordinator([&] {
    pollfd p{listener, POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) return;
    const int fd = ::accept(listener, nullptr, nullptr);
    protocol::FrameDecoder decoder;
    if (!NextFrame(fd, decoder, "hello").is_object()) {
      ::close(fd);
      return;
    }
    (void)protocol::WriteFrame(fd, {{"type", "welcome"}, {"worker", "w"}, {"heartbeat_ms", 200}, {"lease_ms", 5000},
                                    {"storage", storage.File("videos")}});
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!NextFrame(fd, decoder, "ready").is_object()) break;
      Json job = {{"type", "job"}, {"job_id", "job" + std::to_string(i)}, {"lease", "lease" + std::to_string(i)},
                  {"attempt", 1}, {"spec", {{"prompt", "p"}, {"model", "tiny"}, {"steps", 2}, {"frames", 9}}},
                  {"resume", nullptr}};
      if (!outputs[i].empty()) job["output"] = outputs[i];
      (void)protocol::WriteFrame(fd, job);
      Json failed = NextFrame(fd, decoder, "failed");
      if (!failed.is_object()) break;
      failures.push_back(failed);
    }
    ::close(fd);
  });
  worker::WorkerOptions o;
  o.coordinator = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  o.name = "test";
  o.link.backoff_initial_ms = 20;
  o.link.backoff_max_ms = 100;
  MustNotRender executor;
  worker::WorkerProcess process(o, nullptr, &executor);
  int exit_code = -1;
  std::thread run([&] { exit_code = process.Run(); });
  coordinator.join();
  process.RequestStop(true);
  run.join();
  ::close(listener);

  EXPECT_EQ(exit_code, 0);
  EXPECT_EQ(executor.renders.load(), 0) << "a job with an unsafe output path was rendered";
  ASSERT_EQ(failures.size(), outputs.size());
  for (size_t i = 0; i < failures.size(); ++i) {
    EXPECT_FALSE(failures[i].value("retryable", true)) << failures[i].dump();
    EXPECT_NE(failures[i].value("error", "").find("output path"), std::string::npos) << failures[i].dump();
  }
  EXPECT_FALSE(std::filesystem::exists(storage.File("escaped.mp4")));
  EXPECT_FALSE(std::filesystem::exists("/tmp/escaped.mp4"));
}

}  // namespace
}  // namespace stas::coordinator

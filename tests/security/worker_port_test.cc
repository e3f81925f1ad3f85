// The worker port before authentication, on a real CoordinatorServer (in-process, in-memory store):
// the hello deadline, the pre-hello frame limit, the per-peer connection cap; and a worker's link
// backing off from a coordinator that keeps closing on it.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "coordinator/memory_job_store.h"
#include "coordinator/server.h"
#include "protocol/protocol.h"
#include "worker/coordinator_link.h"

namespace stas::coordinator {
namespace {

using namespace std::chrono_literals;

int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

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
  const int fd = Connect(port());
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(ClosedWithin(fd, 3000ms)) << "a connection that never says hello must not stay open";
  ::close(fd);
}

TEST_F(WorkerPortTest, ALargeFrameBeforeHelloIsRefusedAtOnce) {
  Start(ServerOptions());
  const int fd = Connect(port());
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
  for (int i = 0; i < 4; ++i) fds.push_back(Connect(port()));
  std::this_thread::sleep_for(200ms);
  const int extra = Connect(port());
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

}  // namespace
}  // namespace stas::coordinator

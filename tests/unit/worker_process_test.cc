// The worker group leader against a scripted fake coordinator (a socket server in a thread) and a
// fake executor: framing, hello/ready/job, heartbeats, commit grant/deny, cancel, bad input, and
// reconnects after the coordinator goes away (its kill -9 + restart, as the leader sees it).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "common/check.h"
#include "storage/mp4_writer.h"
#include "storage/output_layout.h"
#include "support/temp_dir.h"
#include "worker/coordinator_link.h"
#include "protocol/protocol.h"
#include "worker/worker_process.h"

namespace stas::worker {
namespace {

using namespace std::chrono_literals;

// A coordinator that speaks the protocol on loopback, answers hello with welcome by itself and lets
// the test read the worker's frames in order and send frames back.
class FakeCoordinator {
 public:
  explicit FakeCoordinator(std::string storage, int port = 0) : storage_(std::move(storage)) {
    Listen(port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~FakeCoordinator() {
    stop_ = true;
    thread_.join();
    CloseAll();
  }

  int port() const { return port_; }
  int hellos() const { return hellos_.load(); }

  // Next frame of `type` from the worker; frames of other types before it are skipped.
  std::optional<Json> Next(const std::string& type, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock<std::mutex> lock(mu_);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      while (!inbox_.empty()) {
        Json m = std::move(inbox_.front());
        inbox_.pop_front();
        if (m["type"] == type) return m;
      }
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && inbox_.empty()) return std::nullopt;
    }
  }
  // Frames received so far that are still unread, of one type.
  int Pending(const std::string& type) {
    std::lock_guard<std::mutex> lock(mu_);
    int n = 0;
    for (const auto& m : inbox_) n += m["type"] == type;
    return n;
  }
  void Send(const Json& message) {
    std::lock_guard<std::mutex> lock(mu_);
    ASSERT_GE(client_, 0) << "no worker connected";
    ASSERT_TRUE(protocol::WriteFrame(client_, message).ok());
  }
  // The coordinator process dies: listener and connection close at once.
  void GoDown() {
    std::lock_guard<std::mutex> lock(mu_);
    down_ = true;
    CloseAll();
  }
  // ... and comes back on the same port.
  void ComeUp() {
    std::lock_guard<std::mutex> lock(mu_);
    Listen(port_);
    down_ = false;
  }

 private:
  void Listen(int port) {
    listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listen_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    STAS_CHECK(::bind(listen_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) << "bind";
    STAS_CHECK(::listen(listen_, 4) == 0) << "listen";
    socklen_t len = sizeof(addr);
    ::getsockname(listen_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  void CloseAll() {
    if (client_ >= 0) ::close(client_);
    if (listen_ >= 0) ::close(listen_);
    client_ = listen_ = -1;
  }
  void Loop() {
    protocol::FrameDecoder decoder;
    while (!stop_) {
      int listen_fd, client_fd;
      {
        std::lock_guard<std::mutex> lock(mu_);
        listen_fd = listen_;
        client_fd = client_;
      }
      if (listen_fd < 0) {
        std::this_thread::sleep_for(5ms);
        continue;
      }
      pollfd fds[2] = {{listen_fd, POLLIN, 0}, {client_fd, POLLIN, 0}};
      if (::poll(fds, client_fd >= 0 ? 2 : 1, 20) <= 0) continue;
      std::lock_guard<std::mutex> lock(mu_);
      if (down_ || listen_ != listen_fd) continue;  // went down while polling
      if (fds[0].revents & POLLIN) {
        const int fd = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          if (client_ >= 0) ::close(client_);
          client_ = fd;
          decoder = protocol::FrameDecoder();
        }
        continue;
      }
      if (client_fd >= 0 && client_ == client_fd && (fds[1].revents & (POLLIN | POLLHUP))) {
        char buf[4096];
        const ssize_t n = ::recv(client_, buf, sizeof(buf), 0);
        if (n <= 0) {
          ::close(client_);
          client_ = -1;
          continue;
        }
        decoder.Append(buf, static_cast<size_t>(n));
        while (true) {
          auto next = decoder.Next();
          STAS_CHECK(next.ok()) << next.status().ToString();
          if (!next->has_value()) break;
          Json m = **next;
          if (m["type"] == "hello") {
            ++hellos_;
            STAS_CHECK(protocol::WriteFrame(client_, {{"type", "welcome"}, {"worker", m["worker"]},
                                                      {"heartbeat_ms", 100}, {"lease_ms", 1000},
                                                      {"storage", storage_}}).ok());
          }
          inbox_.push_back(std::move(m));
          cv_.notify_all();
        }
      }
    }
  }

  std::string storage_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Json> inbox_;
  int listen_ = -1;
  int client_ = -1;
  int port_ = 0;
  bool down_ = false;
  std::atomic<int> hellos_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Renders nothing: `steps` steps of `step_ms` each, then a small file staged as the MP4.
class FakeExecutor : public JobExecutor {
 public:
  int step_ms = 20;
  bool throw_exception = false;
  std::atomic<int> renders{0};
  std::atomic<int> last_step{-1};
  std::mutex mu;
  std::vector<std::string> upcoming_prompts;  // of the last job rendered

  Result<std::optional<StagedOutput>> Render(const JobContext& job, const RenderCallbacks& callbacks) override {
    {
      std::lock_guard<std::mutex> lock(mu);
      upcoming_prompts = job.upcoming_prompts;
    }
    ++renders;
    if (throw_exception) throw std::runtime_error("simulated renderer crash");
    const int steps = job.spec.steps.value_or(4);
    for (int step = 0; step < steps; ++step) {
      if (callbacks.should_stop()) return Aborted("stopped at step " + std::to_string(step));
      std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
      last_step = step;
      callbacks.progress({step + 1, steps, "denoise"});
    }
    StagedOutput out;
    out.paths = job.output;  // the coordinator's assignment, as the real executor uses it
    STAS_RETURN_IF_ERROR(storage::OutputLayout::EnsureFolder(out.paths));
    out.temp_video = storage::TemporaryPathFor(out.paths.video);
    std::ofstream(out.temp_video) << "not really an mp4 of " << job.job_id;
    out.manifest.job_id = job.job_id;
    out.manifest.prompt = job.spec.prompt;
    out.manifest.timings_s["total"] = 0.1;
    return std::optional<StagedOutput>(std::move(out));
  }
};

Json Spec(const std::string& prompt, int steps = 4) {
  return {{"prompt", prompt}, {"seed", 7}, {"model", "tiny"}, {"steps", steps}, {"frames", 9}};
}

int CountFiles(const std::string& dir, const std::string& suffix) {
  int n = 0;
  if (!std::filesystem::exists(dir)) return 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name.size() >= suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      ++n;
  }
  return n;
}

int CountTemporaryFiles(const std::string& dir) {
  int n = 0;
  if (!std::filesystem::exists(dir)) return 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    n += e.path().filename().string().find(".tmp.") != std::string::npos;
  return n;
}

class WorkerLeaderTest : public ::testing::Test {
 protected:
  void StartWorker() {
    WorkerOptions options;
    options.coordinator = "127.0.0.1:" + std::to_string(coordinator_.port());
    options.name = "test";
    options.commit_timeout_ms = 5000;
    options.link.backoff_initial_ms = 20;
    options.link.backoff_max_ms = 100;
    process_ = std::make_unique<WorkerProcess>(options, nullptr, &executor_);
    thread_ = std::thread([this] { exit_code_ = process_->Run(); });
  }
  void TearDown() override {
    if (process_) {
      process_->RequestStop(true);
      thread_.join();
      EXPECT_EQ(exit_code_, 0);
    }
  }
  // Sends a job and returns the lease it used.
  std::string Dispatch(const std::string& id, const Json& spec, const std::string& lease = "lease-1") {
    auto ready = coordinator_.Next("ready");
    EXPECT_TRUE(ready) << "worker never asked for work";
    coordinator_.Send({{"type", "job"}, {"job_id", id}, {"lease", lease}, {"attempt", 1}, {"spec", spec},
                       {"resume", nullptr}, {"output", "single/" + id + ".mp4"}});
    return lease;
  }

  testing::TempDir storage_;
  FakeCoordinator coordinator_{storage_.path()};
  FakeExecutor executor_;
  std::unique_ptr<WorkerProcess> process_;
  std::thread thread_;
  int exit_code_ = -1;
};

TEST_F(WorkerLeaderTest, HelloThenJobHeartbeatsCommitAndDone) {
  StartWorker();
  auto hello = coordinator_.Next("hello");
  ASSERT_TRUE(hello);
  EXPECT_EQ((*hello)["model"], "tiny");
  EXPECT_EQ((*hello)["group_size"], 1);
  EXPECT_TRUE((*hello)["worker"].get<std::string>().rfind("test-g0-", 0) == 0) << hello->dump();
  EXPECT_EQ((*hello)["pid"], static_cast<int64_t>(::getpid()));

  Dispatch("job-a", Spec("a red fox", 4));
  // Progress: one heartbeat per step at least, carrying the lease, with the step growing to 4.
  int last_step = -1;
  while (last_step < 4) {
    auto hb = coordinator_.Next("heartbeat");
    ASSERT_TRUE(hb) << "heartbeats stopped at step " << last_step;
    EXPECT_EQ((*hb)["job_id"], "job-a");
    EXPECT_EQ((*hb)["lease"], "lease-1");
    EXPECT_GE((*hb)["step"].get<int>(), last_step);
    last_step = (*hb)["step"];
  }
  auto commit = coordinator_.Next("commit");
  ASSERT_TRUE(commit);
  EXPECT_EQ((*commit)["lease"], "lease-1");
  EXPECT_EQ(CountFiles(storage_.path(), ".mp4"), 0) << "published before the commit was granted";
  coordinator_.Send({{"type", "commit_ack"}, {"job_id", "job-a"}, {"granted", true}});
  auto done = coordinator_.Next("done");
  ASSERT_TRUE(done);
  EXPECT_EQ((*done)["job_id"], "job-a");
  EXPECT_EQ((*done)["lease"], "lease-1");
  EXPECT_EQ((*done)["output"], "single/job-a.mp4");
  EXPECT_EQ((*done)["commit"], "committed");
  EXPECT_TRUE(std::filesystem::exists(storage_.File("single/job-a.mp4")));
  EXPECT_TRUE(std::filesystem::exists(storage_.File("single/job-a.json")));
  EXPECT_EQ(CountTemporaryFiles(storage_.path()), 0);
  EXPECT_TRUE(coordinator_.Next("ready")) << "worker did not ask for the next job";
}

// The coordinator's look-ahead reaches the executor, cut to what a worker accepts: at most four
// non-empty strings, none longer than a prompt may be.
TEST_F(WorkerLeaderTest, UpcomingPromptsReachTheExecutorBounded) {
  StartWorker();
  ASSERT_TRUE(coordinator_.Next("ready"));
  const Json upcoming = {"next one", 42, "", std::string(jobspec::kMaxPromptBytes + 1, 'x'), "b", "c", "d", "e"};
  coordinator_.Send({{"type", "job"}, {"job_id", "job-u"}, {"lease", "lease-1"}, {"attempt", 1},
                     {"spec", Spec("a red fox", 1)}, {"resume", nullptr}, {"output", "single/job-u.mp4"},
                     {"upcoming_prompts", upcoming}});
  auto commit = coordinator_.Next("commit");
  ASSERT_TRUE(commit);
  {
    std::lock_guard<std::mutex> lock(executor_.mu);
    EXPECT_EQ(executor_.upcoming_prompts, (std::vector<std::string>{"next one", "b", "c", "d"}));
  }
  coordinator_.Send({{"type", "commit_ack"}, {"job_id", "job-u"}, {"granted", true}});
  ASSERT_TRUE(coordinator_.Next("done"));
}

TEST_F(WorkerLeaderTest, HeartbeatsKeepComingWithoutProgress) {
  executor_.step_ms = 700;  // one slow step: heartbeats every 100 ms come from the link's thread
  StartWorker();
  Dispatch("job-slow", Spec("slow", 1));
  ASSERT_TRUE(coordinator_.Next("heartbeat"));
  const auto start = std::chrono::steady_clock::now();
  int beats = 0;
  while (std::chrono::steady_clock::now() - start < 500ms)
    if (coordinator_.Next("heartbeat", 300ms)) ++beats;
  EXPECT_GE(beats, 3);
}

TEST_F(WorkerLeaderTest, DeniedCommitDiscardsTheOutputAndReportsNothing) {
  StartWorker();
  Dispatch("job-b", Spec("late worker"));
  ASSERT_TRUE(coordinator_.Next("commit"));
  coordinator_.Send({{"type", "commit_ack"}, {"job_id", "job-b"}, {"granted", false}});
  ASSERT_TRUE(coordinator_.Next("ready"));
  EXPECT_EQ(CountFiles(storage_.path(), ".mp4"), 0);
  EXPECT_EQ(CountTemporaryFiles(storage_.path()), 0);
  EXPECT_EQ(coordinator_.Pending("done") + coordinator_.Pending("failed"), 0);
}

TEST_F(WorkerLeaderTest, CancelStopsBetweenStepsAndIsNotRetryable) {
  executor_.step_ms = 50;
  StartWorker();
  Dispatch("job-c", Spec("to be cancelled", 200));
  auto hb = coordinator_.Next("heartbeat");
  ASSERT_TRUE(hb);
  coordinator_.Send({{"type", "heartbeat_ack"}, {"job_id", "job-c"}, {"cancel", true}});
  auto failed = coordinator_.Next("failed");
  ASSERT_TRUE(failed);
  EXPECT_EQ((*failed)["error"], "cancelled");
  EXPECT_EQ((*failed)["retryable"], false);
  EXPECT_LT(executor_.last_step.load(), 100);
  EXPECT_EQ(CountFiles(storage_.path(), ".mp4"), 0);
}

TEST_F(WorkerLeaderTest, BadSpecFailsWithoutRetryAndWithoutRendering) {
  StartWorker();
  Json spec = Spec("x");
  spec["frames"] = 10;
  Dispatch("job-d", spec);
  auto failed = coordinator_.Next("failed");
  ASSERT_TRUE(failed);
  EXPECT_EQ((*failed)["retryable"], false);
  EXPECT_NE((*failed)["error"].get<std::string>().find("4k+1"), std::string::npos) << failed->dump();
  Json unknown = Spec("y");
  unknown["colour"] = "red";
  Dispatch("job-e", unknown, "lease-2");
  failed = coordinator_.Next("failed");
  ASSERT_TRUE(failed);
  EXPECT_EQ((*failed)["lease"], "lease-2");
  EXPECT_NE((*failed)["error"].get<std::string>().find("colour"), std::string::npos) << failed->dump();
  EXPECT_EQ(executor_.renders.load(), 0);
}

TEST_F(WorkerLeaderTest, ExecutorExceptionBecomesARetryableFailure) {
  executor_.throw_exception = true;
  StartWorker();
  Dispatch("job-f", Spec("crash"));
  auto failed = coordinator_.Next("failed");
  ASSERT_TRUE(failed);
  EXPECT_EQ((*failed)["retryable"], true);
  EXPECT_NE((*failed)["error"].get<std::string>().find("simulated renderer crash"), std::string::npos);
  EXPECT_TRUE(coordinator_.Next("ready")) << "the worker must carry on after a failed job";
}

TEST_F(WorkerLeaderTest, CoordinatorRestartMidJobKeepsTheJobAndItsLease) {
  executor_.step_ms = 100;
  StartWorker();
  Dispatch("job-g", Spec("survives a restart", 12));
  ASSERT_TRUE(coordinator_.Next("heartbeat"));
  coordinator_.GoDown();
  std::this_thread::sleep_for(400ms);
  coordinator_.ComeUp();
  // The new coordinator hears hello, then the running job's heartbeat with the original lease, and
  // no ready: the group is still busy.
  auto hello = coordinator_.Next("hello");
  ASSERT_TRUE(hello);
  auto hb = coordinator_.Next("heartbeat");
  ASSERT_TRUE(hb);
  EXPECT_EQ((*hb)["job_id"], "job-g");
  EXPECT_EQ((*hb)["lease"], "lease-1");
  EXPECT_EQ(coordinator_.Pending("ready"), 0);
  auto commit = coordinator_.Next("commit");
  ASSERT_TRUE(commit);
  coordinator_.Send({{"type", "commit_ack"}, {"job_id", "job-g"}, {"granted", true}});
  ASSERT_TRUE(coordinator_.Next("done"));
  EXPECT_EQ(CountFiles(storage_.path(), ".mp4"), 1);
}

TEST_F(WorkerLeaderTest, CommitRequestIsRepeatedAfterAReconnect) {
  StartWorker();
  Dispatch("job-h", Spec("commit across restart"));
  ASSERT_TRUE(coordinator_.Next("commit"));
  coordinator_.GoDown();  // the commit_ack never comes from this instance
  std::this_thread::sleep_for(200ms);
  coordinator_.ComeUp();
  ASSERT_TRUE(coordinator_.Next("hello"));
  auto commit = coordinator_.Next("commit");
  ASSERT_TRUE(commit) << "the unanswered commit request was not repeated";
  EXPECT_EQ((*commit)["lease"], "lease-1");
  coordinator_.Send({{"type", "commit_ack"}, {"job_id", "job-h"}, {"granted", true}});
  ASSERT_TRUE(coordinator_.Next("done"));
}

TEST_F(WorkerLeaderTest, ResultIsRepeatedAfterAReconnectUntilTheNextJob) {
  StartWorker();
  Dispatch("job-i", Spec("result across restart"));
  ASSERT_TRUE(coordinator_.Next("commit"));
  coordinator_.Send({{"type", "commit_ack"}, {"job_id", "job-i"}, {"granted", true}});
  ASSERT_TRUE(coordinator_.Next("done"));
  ASSERT_TRUE(coordinator_.Next("ready"));
  coordinator_.GoDown();
  std::this_thread::sleep_for(200ms);
  coordinator_.ComeUp();
  ASSERT_TRUE(coordinator_.Next("hello"));
  auto again = coordinator_.Next("done");
  ASSERT_TRUE(again) << "a result whose delivery is unproven must be repeated";
  EXPECT_EQ((*again)["lease"], "lease-1");
  // A new job proves the repeat arrived: after the next reconnect only hello and ready come.
  Dispatch("job-j", Spec("next"), "lease-2");
  ASSERT_TRUE(coordinator_.Next("commit"));
  coordinator_.Send({{"type", "commit_ack"}, {"job_id", "job-j"}, {"granted", true}});
  auto done_j = coordinator_.Next("done");
  ASSERT_TRUE(done_j);
  EXPECT_EQ((*done_j)["job_id"], "job-j");
  EXPECT_EQ(CountFiles(storage_.path(), ".mp4"), 2);
}

TEST(CoordinatorLinkTest, RetriesUntilTheCoordinatorAppears) {
  // Reserve a free port, then release it so nothing listens there at first.
  testing::TempDir storage;
  int port;
  {
    FakeCoordinator probe(storage.path());
    port = probe.port();
    probe.GoDown();
  }
  LinkOptions options;
  options.coordinator = {"127.0.0.1", port};
  options.backoff_initial_ms = 20;
  options.backoff_max_ms = 100;
  options.hello = {{"worker", "w"}};
  CoordinatorLink link(options);
  link.Start();
  EXPECT_EQ(link.WaitForWelcome(300).status().code(), StatusCode::kTimeout);
  EXPECT_FALSE(link.connected());
  FakeCoordinator late(storage.path(), port);
  auto welcome = link.WaitForWelcome(5000);
  ASSERT_TRUE(welcome.ok()) << welcome.status().ToString();
  EXPECT_EQ(welcome->storage, storage.path());
  EXPECT_EQ(welcome->lease_ms, 1000);
  EXPECT_TRUE(link.connected());
  EXPECT_EQ(link.handshakes(), 1);
  link.Stop();
  EXPECT_EQ(link.WaitForJob(10).status().code(), StatusCode::kAborted);
}

TEST(CoordinatorLinkTest, ParsesHostPort) {
  auto hp = ParseHostPort("example.org:7070");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "example.org");
  EXPECT_EQ(hp->port, 7070);
  auto v6 = ParseHostPort("[::1]:80");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_FALSE(ParseHostPort("nohost").ok());
  EXPECT_FALSE(ParseHostPort("h:0").ok());
  EXPECT_FALSE(ParseHostPort("h:99999").ok());
  EXPECT_FALSE(ParseHostPort("h:12ab").ok());
}

}  // namespace
}  // namespace stas::worker

// `stas coordinator` as a process, against its own redis-server: the HTTP API over real sockets, a
// scripted worker group speaking the wire protocol, kill -9 + restart, auth, graceful shutdown.
// Skipped when redis-server is not installed.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "common/json.h"
#include "support/loopback.h"
#include "support/optional_dependency.h"
#include "support/redis_test_server.h"
#include "support/run_command.h"
#include "support/temp_dir.h"
#include "protocol/protocol.h"

namespace stas {
namespace {

using namespace std::chrono_literals;

struct HttpResult {
  int status = 0;
  std::string body;
  std::string headers;  // raw, lower-cased
  Json json() const { return Json::parse(body, nullptr, false); }
};

// Sends `req` as is on a fresh connection and reads the response until the server closes.
HttpResult RawHttp(int port, const std::string& req) {
  HttpResult r;
  int fd = testing::ConnectLoopback(port);
  if (fd < 0) return r;
  size_t sent = 0;
  while (sent < req.size()) {
    ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[65536];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) break;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  const size_t end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos) return r;
  r.status = std::atoi(raw.substr(9, 3).c_str());
  r.headers = raw.substr(0, end);
  for (char& c : r.headers) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  r.body = raw.substr(end + 4);
  return r;
}

// One HTTP/1.1 request (Connection: close).
HttpResult Http(int port, const std::string& method, const std::string& path, const std::string& body = "",
                const std::string& extra_headers = "") {
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra_headers;
  if (!body.empty() || method == "POST")
    req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  return RawHttp(port, req + "\r\n" + body);
}

// `stas coordinator ...` as a child process; stdout is read for the "listening" line.
class Coordinator {
 public:
  Coordinator(const std::vector<std::string>& args, const std::string& log_path) {
    int out[2];
    if (::pipe(out) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (log >= 0) ::dup2(log, 2);
      ::close(out[0]);
      std::vector<std::string> all = {STAS_BINARY, "coordinator"};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = out[0];
  }
  ~Coordinator() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }

  // Waits for "stas coordinator listening: workers=HOST:P http=HOST:Q ...".
  bool WaitListening(int timeout_ms = 20000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    std::string text;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, 100) > 0) {
        char buf[4096];
        ssize_t n = ::read(out_, buf, sizeof(buf));
        if (n <= 0) return false;
        text.append(buf, static_cast<size_t>(n));
        std::smatch m;
        if (std::regex_search(text, m, std::regex(R"(workers=[^ ]+:(\d+) http=[^ ]+:(\d+))"))) {
          worker_port = std::stoi(m[1]);
          http_port = std::stoi(m[2]);
          return true;
        }
      }
    }
    return false;
  }
  void Signal(int sig) { ::kill(pid_, sig); }
  // Exit code, or -1 on timeout / signal.
  int Wait(int timeout_ms = 10000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(20ms);
    }
    return -1;
  }

  int worker_port = 0;
  int http_port = 0;

 private:
  pid_t pid_ = -1;
  int out_ = -1;
};

// A worker group leader scripted by the test.
class FakeWorker {
 public:
  explicit FakeWorker(int port) : fd_(testing::ConnectLoopback(port)) {}
  ~FakeWorker() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return fd_ >= 0; }
  void Send(const Json& m) { ASSERT_TRUE(protocol::WriteFrame(fd_, m).ok()); }
  // The next message of `type` (others are skipped), or null after the timeout.
  Json Expect(const std::string& type, int timeout_ms = 10000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      const int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
      if (left <= 0) return nullptr;
      auto m = protocol::ReadFrame(fd_, decoder_, left);
      if (!m.ok()) return nullptr;
      if ((*m)["type"] == type) return *m;
    }
  }
  Json Hello(const std::string& name, const std::string& token = "") {
    Json hello = {{"type", "hello"}, {"worker", name}, {"group_size", 1}, {"model", "tiny"}, {"host", "test"}, {"pid", 1}};
    if (!token.empty()) hello["token"] = token;
    Send(hello);
    return Expect("welcome");
  }

 private:
  int fd_;
  protocol::FrameDecoder decoder_;
};

class CoordinatorServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    STAS_NEEDS_REDIS(STAS_HAVE_REDIS, "built without Redis");
    STAS_NEEDS_REDIS(redis_.available(), "redis-server is not installed");
  }

  std::vector<std::string> Args(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> a = {"--redis", redis_.url(), "--key-prefix", redis_.prefix(), "--listen", "127.0.0.1:0",
                                  "--http", "127.0.0.1:0", "--storage", storage_.path(), "--lease-ms", "3000",
                                  "--backoff-ms", "100"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  std::unique_ptr<Coordinator> Start(const std::vector<std::string>& extra = {}) {
    auto c = std::make_unique<Coordinator>(Args(extra), logs_.File("coordinator.log"));
    EXPECT_TRUE(c->WaitListening()) << Logs();
    return c;
  }
  // The worker secret a coordinator without --token created in its storage folder.
  std::string Secret() {
    auto secret = protocol::ReadSecretFile(storage_.path() + "/.stas/worker-secret");
    EXPECT_TRUE(secret.ok()) << secret.status().ToString();
    return secret.ok() ? *secret : "";
  }
  std::string Logs() {
    auto text = testing::RunCommand("cat " + logs_.File("coordinator.log"));
    return text.output;
  }
  Json WaitForState(int port, const std::string& id, const std::string& state) {
    Json job;
    for (int i = 0; i < 200; ++i) {
      job = Http(port, "GET", "/jobs/" + id).json();
      if (job.is_object() && job.value("state", "") == state) return job;
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << "job " << id << " never reached " << state << ": " << job.dump();
    return job;
  }

  testing::RedisTestServer redis_;
  testing::TempDir storage_;
  testing::TempDir logs_;
};

TEST_F(CoordinatorServiceTest, AJobGoesFromSubmissionToVideo) {
  auto c = Start();
  const int http = c->http_port;
  auto health = Http(http, "GET", "/healthz");
  ASSERT_EQ(health.status, 200) << health.body << Logs();
  EXPECT_EQ(health.json()["redis"], "ok");
  auto page = Http(http, "GET", "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("<title>stas"), std::string::npos);
  EXPECT_NE(page.headers.find("content-type: text/html"), std::string::npos);

  auto posted = Http(http, "POST", "/jobs", R"({"prompt":"a lighthouse at dusk","steps":2,"seed":4})");
  ASSERT_EQ(posted.status, 201) << posted.body;
  const std::string id = posted.json()["id"];
  auto got = Http(http, "GET", "/jobs/" + id);
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.json()["state"], "queued");
  EXPECT_EQ(got.json()["attempts"], 0);

  FakeWorker w(c->worker_port);
  ASSERT_TRUE(w.connected());
  Json welcome = w.Hello("group-a", Secret());
  ASSERT_TRUE(welcome.is_object()) << Logs();
  EXPECT_EQ(welcome["lease_ms"], 3000);
  EXPECT_EQ(std::filesystem::weakly_canonical(welcome["storage"].get<std::string>()),
            std::filesystem::weakly_canonical(storage_.path()));
  w.Send({{"type", "ready"}});
  Json job = w.Expect("job");
  ASSERT_TRUE(job.is_object()) << Logs();
  EXPECT_EQ(job["job_id"], id);
  EXPECT_EQ(job["spec"]["prompt"], "a lighthouse at dusk");
  const std::string lease = job["lease"];
  EXPECT_EQ(Http(http, "GET", "/jobs/" + id).json()["state"], "running");
  auto workers = Http(http, "GET", "/workers").json();
  ASSERT_EQ(workers["count"], 1);
  EXPECT_EQ(workers["workers"][0]["worker"], "group-a");
  EXPECT_EQ(workers["workers"][0]["state"], "busy");

  w.Send({{"type", "heartbeat"}, {"job_id", id}, {"lease", lease}, {"step", 1}, {"steps", 2}, {"stage", "denoise"}});
  Json ack = w.Expect("heartbeat_ack");
  ASSERT_TRUE(ack.is_object());
  EXPECT_FALSE(ack["cancel"].get<bool>());
  EXPECT_EQ(Http(http, "GET", "/jobs/" + id).json()["progress"]["step"], 1);
  w.Send({{"type", "commit"}, {"job_id", id}, {"lease", lease}});
  Json commit = w.Expect("commit_ack");
  ASSERT_TRUE(commit.is_object());
  EXPECT_TRUE(commit["granted"].get<bool>());
  const std::string video = storage_.Write("single/" + id + ".mp4", std::string("\0\0\0\x18" "ftypisom fake", 17));
  w.Send({{"type", "done"}, {"job_id", id}, {"lease", lease}, {"output", video}, {"timings", {{"total_s", 1.0}}}});
  Json done = WaitForState(http, id, "done");
  // Recorded relative to the storage folder, from the job's spec, whatever path the worker reports.
  EXPECT_EQ(done["output"], "single/" + id + ".mp4");
  EXPECT_EQ(done["progress"]["step"], 2);
  auto mp4 = Http(http, "GET", "/jobs/" + id + "/video");
  ASSERT_EQ(mp4.status, 200);
  EXPECT_EQ(mp4.body, std::string("\0\0\0\x18" "ftypisom fake", 17));
  EXPECT_NE(mp4.headers.find("content-type: video/mp4"), std::string::npos);
  EXPECT_EQ(Http(http, "GET", "/v1/videos/" + id + "/content").body, mp4.body);
  auto metrics = Http(http, "GET", "/metrics");
  ASSERT_EQ(metrics.status, 200);
  for (const char* line : {"stas_jobs_completed_total 1", "stas_workers_connected 1", "stas_jobs{state=\"done\"} 1",
                           "stas_steps_total 2", "stas_redis_up 1"})
    EXPECT_NE(metrics.body.find(line), std::string::npos) << line << "\n" << metrics.body;

  // Cancel, OpenAI, bad input.
  const std::string second = Http(http, "POST", "/jobs", R"({"prompt":"second"})").json()["id"];
  auto cancelled = Http(http, "DELETE", "/jobs/" + second);
  ASSERT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_EQ(Http(http, "GET", "/jobs/" + second).json()["state"], "cancelled");
  auto video_job = Http(http, "POST", "/v1/videos", R"({"prompt":"a kite","size":"96x64","seconds":"1"})");
  ASSERT_EQ(video_job.status, 200) << video_job.body;
  EXPECT_EQ(video_job.json()["object"], "video");
  EXPECT_EQ(Http(http, "GET", "/v1/videos/" + video_job.json()["id"].get<std::string>()).json()["status"], "queued");
  auto bad = Http(http, "POST", "/jobs", R"({"prompt":"x","frames":10})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.json()["field"], "frames");
  EXPECT_EQ(Http(http, "GET", "/jobs/0123456789abcdef0123456789abcdef").status, 404);
  // A body over the limit is refused from its Content-Length, before it is read.
  auto huge = RawHttp(http, "POST /jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
                                std::to_string(9u << 20) + "\r\n\r\n");
  EXPECT_EQ(huge.status, 413) << huge.body;
  EXPECT_EQ(Http(http, "GET", "/healthz").status, 200) << "still serving after a 413";
}

TEST_F(CoordinatorServiceTest, KillNineAndRestartLosesNothing) {
  auto c = Start();
  const std::string running = Http(c->http_port, "POST", "/jobs", R"({"prompt":"running"})").json()["id"];
  FakeWorker w1(c->worker_port);
  ASSERT_TRUE(w1.Hello("group-1", Secret()).is_object());
  w1.Send({{"type", "ready"}});
  Json job = w1.Expect("job");
  ASSERT_EQ(job["job_id"], running);
  const std::string lease = job["lease"];
  const std::string queued = Http(c->http_port, "POST", "/jobs", R"({"prompt":"queued"})").json()["id"];
  std::this_thread::sleep_for(300ms);  // let the coordinator tick with the second job queued
  c.reset();                           // SIGKILL

  auto again = Start();
  EXPECT_EQ(Http(again->http_port, "GET", "/jobs/" + running).json()["state"], "running");
  EXPECT_EQ(Http(again->http_port, "GET", "/jobs/" + queued).json()["state"], "queued");
  FakeWorker back(again->worker_port);  // group-1 reconnects and reports its job with its lease
  ASSERT_TRUE(back.Hello("group-1", Secret()).is_object());
  back.Send({{"type", "heartbeat"}, {"job_id", running}, {"lease", lease}, {"step", 1}, {"steps", 8}});
  Json ack = back.Expect("heartbeat_ack");
  ASSERT_TRUE(ack.is_object());
  EXPECT_FALSE(ack["cancel"].get<bool>()) << "the lease survived the restart";
  FakeWorker w2(again->worker_port);
  ASSERT_TRUE(w2.Hello("group-2", Secret()).is_object());
  w2.Send({{"type", "ready"}});
  Json second = w2.Expect("job");
  ASSERT_TRUE(second.is_object()) << Logs();
  EXPECT_EQ(second["job_id"], queued) << "the queued job survived in its ready queue";
  back.Send({{"type", "commit"}, {"job_id", running}, {"lease", lease}});
  EXPECT_TRUE(back.Expect("commit_ack")["granted"].get<bool>());
  back.Send({{"type", "done"}, {"job_id", running}, {"lease", lease}, {"output", "single/running.mp4"}});
  WaitForState(again->http_port, running, "done");
}

TEST_F(CoordinatorServiceTest, ATokenIsRequiredOffLoopbackAndEnforced) {
  auto refused = testing::RunCommand("env -u STAS_TOKEN " + std::string(STAS_BINARY) + " coordinator --redis " + redis_.url() +
                                     " --listen 0.0.0.0:0 --http 127.0.0.1:0 --storage " + storage_.path());
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("token is required"), std::string::npos) << refused.output;

  auto c = Start({"--token", "s3cret"});
  EXPECT_EQ(Http(c->http_port, "GET", "/jobs").status, 401);
  EXPECT_EQ(Http(c->http_port, "GET", "/jobs", "", "Authorization: Bearer s3cret\r\n").status, 200);
  EXPECT_EQ(Http(c->http_port, "GET", "/healthz").status, 200);
  FakeWorker anonymous(c->worker_port);
  anonymous.Send({{"type", "hello"}, {"worker", "x"}, {"model", "tiny"}});
  Json error = anonymous.Expect("error");
  ASSERT_TRUE(error.is_object());
  EXPECT_NE(error["message"].get<std::string>().find("token"), std::string::npos);
  FakeWorker trusted(c->worker_port);
  EXPECT_TRUE(trusted.Hello("x", "s3cret").is_object());
}

TEST_F(CoordinatorServiceTest, SigtermStopsGracefully) {
  auto c = Start();
  FakeWorker w(c->worker_port);
  ASSERT_TRUE(w.Hello("g", Secret()).is_object());
  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0) << Logs();
}

TEST(CoordinatorCommand, HelpListsTheContractFlags) {
  auto r = testing::RunCommand(std::string(STAS_BINARY) + " coordinator --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag : {"--redis", "--redis-password", "--key-prefix", "--listen", "--http", "--storage", "--lease-ms",
                           "--max-attempts", "--token"})
    EXPECT_NE(r.output.find(flag), std::string::npos) << flag;
}

// A headless browser renders the status page (skipped without chromium).
TEST_F(CoordinatorServiceTest, TheStatusPageRendersInAHeadlessBrowser) {
  std::string browser;
  for (const char* b : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (::access(b, X_OK) == 0) browser = b;
  if (browser.empty()) GTEST_SKIP() << "chromium is not installed";
  auto c = Start();
  Http(c->http_port, "POST", "/jobs", R"({"prompt":"a lighthouse","dataset":"coast"})");
  const std::string png = logs_.File("status.png");
  auto r = testing::RunCommand("timeout 60 " + browser +
                               " --headless --no-sandbox --disable-gpu --disable-background-networking "
                               "--disable-component-update --disable-sync --no-first-run --virtual-time-budget=3000 "
                               "--window-size=1280,900 --screenshot=" + png + " http://127.0.0.1:" +
                               std::to_string(c->http_port) + "/");
  ASSERT_TRUE(std::filesystem::exists(png)) << r.output;
  EXPECT_GT(std::filesystem::file_size(png), 10000u) << "a blank page would compress to almost nothing";
  // The page's own requests reached the API.
  auto dom = testing::RunCommand("timeout 60 " + browser +
                                 " --headless --no-sandbox --disable-gpu --disable-background-networking "
                                 "--disable-component-update --disable-sync --no-first-run --virtual-time-budget=3000 "
                                 "--dump-dom http://127.0.0.1:" + std::to_string(c->http_port) + "/");
  EXPECT_NE(dom.output.find("a lighthouse"), std::string::npos) << dom.output.substr(0, 2000);
  EXPECT_NE(dom.output.find("redis ok"), std::string::npos);
}

}  // namespace
}  // namespace stas

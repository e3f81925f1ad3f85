// `stas loadtest`: a bounded load test of a running coordinator's control plane (no rendering). It
// submits over HTTP, plays one worker group over the worker protocol (model "tiny"; it never renders,
// it only takes jobs and reports them failed) and reads Redis's INFO, then prints one line per figure:
//
//   time-to-start of a served job behind N jobs of a model no group serves, and after cancelling M
//   queued jobs; whether a priority-100 job submitted behind 200 priority-0 jobs is dispatched next;
//   /healthz worst latency during a batch submission; submitted jobs/s (new and existing); the median
//   GET /jobs?dataset=&state= page and cursor page at the final job count; `stas watch --dataset`'s first
//   line; Redis bytes per queued job.
//
// Use a scratch coordinator and Redis (the test adds ~100,000 jobs with --full sizes, ~3,000 with
// --small) and start the coordinator with a long --lease-ms (the fake group does not heartbeat).
// Exit 0 when every functional check held (served jobs started, priority held), 1 otherwise.
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "cli/http_client.h"
#include "coordinator/redis_client.h"
#include "protocol/protocol.h"

namespace stas::cli {
namespace {

using SteadyClock = std::chrono::steady_clock;

double MsSince(SteadyClock::time_point t) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

struct LoadFlags {
  std::string server = "http://127.0.0.1:8080";
  std::string worker = "127.0.0.1:7070";
  std::string redis = "redis://127.0.0.1:6379";
  std::string token;
  std::string secret_file;  // the coordinator's worker secret, when it runs without a token
  bool small = false;
};

struct Sizes {
  int unserved, cancelled, backlog, batch, total;
};

class LoadTest {
 public:
  explicit LoadTest(const LoadFlags& f) : flags_(f) {
    sizes_ = f.small ? Sizes{300, 500, 200, 1000, 3000} : Sizes{10000, 50000, 200, 10000, 100000};
  }

  int Run() {
    auto http = HttpClient::Create(flags_.server, flags_.token, 120000);
    if (!http.ok()) return Fail(http.status().message());
    http_ = std::move(*http);
    auto redis_options = coordinator::ParseRedisUrl(flags_.redis);
    if (!redis_options.ok()) return Fail(redis_options.status().message());
    redis_ = std::make_unique<coordinator::RedisClient>(*redis_options);
    const std::string run = std::to_string(::getpid()) + "-" + std::to_string(std::time(nullptr));
    std::cout << "stas loadtest (" << (flags_.small ? "small" : "full") << " sizes), run " << run << "\n";

    // 1. A backlog of jobs no group serves; Redis bytes per queued job.
    const int64_t mem0 = UsedMemory();
    std::vector<std::string> unserved;
    if (!SubmitMany("unserved-" + run, sizes_.unserved, "Wan2.1-T2V-1.3B-Diffusers", 0, &unserved)) return 1;
    const int64_t mem1 = UsedMemory();
    if (mem0 > 0 && mem1 > mem0)
      Figure("redis bytes per queued job", (mem1 - mem0) / static_cast<double>(unserved.size()), "B (INFO used_memory)");

    // 2. A served job behind that backlog.
    if (!ConnectGroup()) return 1;
    double start_ms = 0;
    std::string job_a;
    if (!SubmitAndWaitForStart("served-a-" + run, 0, &job_a, &start_ms)) return 1;
    Figure("time-to-start behind " + std::to_string(sizes_.unserved) + " unserved jobs", start_ms, "ms");
    Check("served job started within 2 s behind the unserved backlog", start_ms < 2000);

    // 3. Cancel a queued backlog of the group's own model, then a new job.
    std::vector<std::string> doomed;
    if (!SubmitMany("cancel-" + run, sizes_.cancelled, "tiny", 0, &doomed)) return 1;
    const auto cancel_start = SteadyClock::now();
    for (const auto& id : doomed) {
      auto r = http_->Delete("/jobs/" + id);
      if (!r.ok() || !r->ok()) return Fail("cancel " + id + " failed");
    }
    Figure("cancelled jobs/s (one DELETE each)", doomed.size() / (MsSince(cancel_start) / 1000.0), "");
    if (!FinishCurrent()) return 1;
    std::string job_b;
    if (!SubmitAndWaitForStart("served-b-" + run, 0, &job_b, &start_ms)) return 1;
    Figure("time-to-start after cancelling " + std::to_string(sizes_.cancelled) + " queued jobs", start_ms, "ms");
    Check("served job started within 2 s after the cancellations", start_ms < 2000);

    // 4. Priority over a backlog of the same model (the group is busy meanwhile).
    std::vector<std::string> low;
    if (!SubmitMany("low-" + run, sizes_.backlog, "tiny", 0, &low)) return 1;
    std::vector<std::string> high;
    if (!SubmitMany("high-" + run, 1, "tiny", 100, &high)) return 1;
    if (!FinishCurrent()) return 1;
    auto next = WaitForJob(5000);
    Check("priority-100 job dispatched next behind " + std::to_string(sizes_.backlog) + " priority-0 jobs",
          next && *next == high[0]);

    // 5. A big batch while /healthz is polled; then the same batch again.
    std::atomic<bool> polling{true};
    std::atomic<int64_t> worst_us{0}, polls{0};
    std::thread poller([&] {
      auto client = HttpClient::Create(flags_.server, flags_.token, 30000);
      if (!client.ok()) return;
      while (polling) {
        const auto t = SteadyClock::now();
        auto r = (*client)->Get("/healthz");
        const int64_t us = static_cast<int64_t>(MsSince(t) * 1000);
        if (r.ok()) worst_us = std::max<int64_t>(worst_us, us);
        ++polls;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
    // Timed from sending the request to having read the answer's ids (building the body is the client's).
    std::vector<std::string> batch;
    post_ms_ = 0;
    if (!SubmitMany("batch-" + run, sizes_.batch, "Wan2.1-T2V-1.3B-Diffusers", 0, &batch, sizes_.batch)) return 1;
    const double new_ms = post_ms_;
    post_ms_ = 0;
    std::vector<std::string> again;
    if (!SubmitMany("batch-" + run, sizes_.batch, "Wan2.1-T2V-1.3B-Diffusers", 0, &again, sizes_.batch)) return 1;
    const double existing_ms = post_ms_;
    auto t = SteadyClock::now();
    polling = false;
    poller.join();
    Figure("submit new jobs/s (one batch of " + std::to_string(sizes_.batch) + ")", sizes_.batch / (new_ms / 1000), "");
    Figure("resubmit existing jobs/s (same batch)", sizes_.batch / (existing_ms / 1000), "");
    Figure("/healthz worst latency during the batches (" + std::to_string(polls.load()) + " polls)",
           worst_us / 1000.0, "ms");
    Check("resubmitted ids are the same", again == batch);

    // 6. Listings at the final job count.
    auto counts = GetJson("/counts");
    int64_t total = counts ? counts->value("total", int64_t{0}) : 0;
    const std::string dataset = "list-" + run;
    if (total < sizes_.total) {
      std::vector<std::string> fill;
      if (!SubmitMany(dataset, static_cast<int>(sizes_.total - total), "Wan2.1-T2V-1.3B-Diffusers", 0, &fill))
        return 1;
    }
    counts = GetJson("/counts");
    total = counts ? counts->value("total", int64_t{0}) : 0;
    std::vector<double> first_pages, cursor_pages, video_pages;
    std::string after;
    for (int i = 0; i < 21; ++i) {
      t = SteadyClock::now();
      auto page = GetJson("/jobs?dataset=" + dataset + "&state=queued&limit=100");
      first_pages.push_back(MsSince(t));
      t = SteadyClock::now();
      auto cursor = GetJson("/jobs?dataset=" + dataset + "&state=queued&limit=100" + (after.empty() ? "" : "&after=" + after));
      cursor_pages.push_back(MsSince(t));
      if (cursor && (*cursor)["next"].is_string()) after = (*cursor)["next"];
      t = SteadyClock::now();
      GetJson("/v1/videos?limit=100" + std::string(after.empty() ? "" : "&after=" + after));
      video_pages.push_back(MsSince(t));
    }
    const std::string at = " at " + std::to_string(total) + " jobs";
    Figure("GET /jobs?dataset=&state=&limit=100 median" + at, Median(first_pages), "ms");
    Figure("GET /jobs cursor page (after=) median" + at, Median(cursor_pages), "ms");
    Figure("GET /v1/videos cursor page median" + at, Median(video_pages), "ms");

    // 7. `stas watch --dataset`: time to its first line.
    const double watch_ms = WatchFirstLine(dataset);
    if (watch_ms >= 0) Figure("stas watch --dataset first line" + at, watch_ms, "ms");
    const int64_t mem2 = UsedMemory();
    if (mem0 > 0 && mem2 > mem0)
      Figure("redis used_memory growth per job (all states)", (mem2 - mem0) / static_cast<double>(total), "B");
    std::cout << (failures_ == 0 ? "all checks held" : std::to_string(failures_) + " check(s) failed") << "\n";
    ::close(fd_);
    return failures_ == 0 ? 0 : 1;
  }

 private:
  int Fail(const std::string& message) {
    std::cerr << "stas loadtest: " << message << "\n";
    return 2;
  }
  void Figure(const std::string& name, double value, const std::string& unit) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.1f", value);
    std::cout << "  " << name << ": " << buf << (unit.empty() ? "" : " " + unit) << "\n" << std::flush;
  }
  void Check(const std::string& name, bool ok) {
    std::cout << "  check: " << name << ": " << (ok ? "yes" : "NO") << "\n" << std::flush;
    failures_ += ok ? 0 : 1;
  }
  static double Median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }

  int64_t UsedMemory() {
    auto info = redis_->Command({"INFO", "memory"});
    if (!info.ok()) return -1;
    const std::string text = info->AsString();
    const size_t at = text.find("used_memory:");
    return at == std::string::npos ? -1 : std::strtoll(text.c_str() + at + 12, nullptr, 10);
  }

  std::optional<Json> GetJson(const std::string& target) {
    auto r = http_->Get(target);
    if (!r.ok() || !r->ok()) return std::nullopt;
    try {
      return Json::parse(r->body);
    } catch (const Json::exception&) {
      return std::nullopt;
    }
  }

  // Submits `n` jobs (prompts "<tag> <i>") in batches of at most `batch`; their ids in order.
  bool SubmitMany(const std::string& tag, int n, const std::string& model, int priority,
                  std::vector<std::string>* ids, int batch = 10000) {
    for (int at = 0; at < n; at += batch) {
      Json body = {{"dataset", tag}, {"jobs", Json::array()}};
      for (int i = at; i < std::min(n, at + batch); ++i)
        body["jobs"].push_back({{"prompt", tag + " " + std::to_string(i)}, {"model", model}, {"priority", priority}});
      const std::string text = body.dump();
      const auto posted = SteadyClock::now();
      auto r = http_->Post("/jobs", text);
      if (!r.ok() || !r->ok()) {
        Fail("POST /jobs failed: " + (r.ok() ? r->body.substr(0, 300) : r.status().message()));
        return false;
      }
      const Json reply = Json::parse(r->body);
      for (const auto& id : reply["ids"]) ids->push_back(id);
      post_ms_ += MsSince(posted);
    }
    return true;
  }

  bool ConnectGroup() {
    const size_t colon = flags_.worker.rfind(':');
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (colon == std::string::npos ||
        ::getaddrinfo(flags_.worker.substr(0, colon).c_str(), flags_.worker.substr(colon + 1).c_str(), &hints, &found) != 0)
      return Fail("--worker must be HOST:PORT of the coordinator's worker listener"), false;
    fd_ = ::socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    const bool connected = fd_ >= 0 && ::connect(fd_, found->ai_addr, found->ai_addrlen) == 0;
    ::freeaddrinfo(found);
    if (!connected) return Fail("cannot connect to the worker port " + flags_.worker), false;
    Json hello = {{"type", "hello"}, {"worker", "loadtest"}, {"model", "tiny"}, {"group_size", 1}};
    if (!flags_.token.empty()) {
      hello["token"] = flags_.token;
    } else if (!flags_.secret_file.empty()) {
      auto secret = protocol::ReadSecretFile(flags_.secret_file);
      if (!secret.ok()) return false;
      hello["token"] = *secret;
    }
    if (!protocol::WriteFrame(fd_, hello).ok()) return false;
    auto welcome = protocol::ReadFrame(fd_, decoder_, 5000);
    if (!welcome.ok() || welcome->value("type", "") != "welcome") return Fail("no welcome from the coordinator"), false;
    return protocol::WriteFrame(fd_, {{"type", "ready"}}).ok();
  }

  // The next job sent to the fake group (its id), within timeout_ms.
  std::optional<std::string> WaitForJob(int timeout_ms) {
    const auto deadline = SteadyClock::now() + std::chrono::milliseconds(timeout_ms);
    while (SteadyClock::now() < deadline) {
      const int left = static_cast<int>(std::max(1.0, -MsSince(deadline)));
      auto m = protocol::ReadFrame(fd_, decoder_, left);
      if (!m.ok()) return std::nullopt;
      if (m->value("type", "") != "job") continue;
      current_job_ = m->value("job_id", "");
      current_lease_ = m->value("lease", "");
      return current_job_;
    }
    return std::nullopt;
  }

  // Reports the running job failed (not retryable) and says ready again.
  bool FinishCurrent() {
    if (current_job_.empty()) return true;
    Json failed = {{"type", "failed"}, {"job_id", current_job_}, {"lease", current_lease_},
                   {"error", "loadtest: not rendered"}, {"retryable", false}};
    current_job_.clear();
    return protocol::WriteFrame(fd_, failed).ok() && protocol::WriteFrame(fd_, {{"type", "ready"}}).ok();
  }

  bool SubmitAndWaitForStart(const std::string& tag, int priority, std::string* id, double* ms) {
    const auto t = SteadyClock::now();
    std::vector<std::string> ids;
    if (!SubmitMany(tag, 1, "tiny", priority, &ids)) return false;
    auto job = WaitForJob(10000);
    *ms = MsSince(t);
    *id = ids[0];
    if (!job || *job != ids[0]) {
      Check("the submitted job was the one dispatched", false);
      *ms = 1e9;
    }
    return true;
  }

  // Runs `stas watch --dataset` and times its first line; -1 when it cannot run.
  double WatchFirstLine(const std::string& dataset) {
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return -1;
    self[n] = '\0';
    const std::string command = std::string(self) + " watch --server " + flags_.server + " --dataset " + dataset +
                                " --timeout 2 --interval 0.5" + (flags_.token.empty() ? "" : " --token " + flags_.token) +
                                " 2>&1";
    const auto t = SteadyClock::now();
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) return -1;
    char line[4096];
    double ms = -1;
    if (std::fgets(line, sizeof(line), pipe)) ms = MsSince(t);
    while (std::fgets(line, sizeof(line), pipe)) {
    }
    ::pclose(pipe);
    return ms;
  }

  LoadFlags flags_;
  Sizes sizes_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<coordinator::RedisClient> redis_;
  int fd_ = -1;
  protocol::FrameDecoder decoder_;
  std::string current_job_, current_lease_;
  int failures_ = 0;
  double post_ms_ = 0;  // time spent in POST /jobs round trips (sending to reading the ids)
};

}  // namespace

void RegisterLoadTest(CLI::App& app) {
  static LoadFlags flags;
  CLI::App* cmd = AddCommand(app, "loadtest",
                             "Control-plane load test of a running coordinator (scratch instance: adds up to 100,000 jobs)",
                             [] { return LoadTest(flags).Run(); });
  cmd->add_option("--server", flags.server, "Coordinator HTTP URL")->capture_default_str();
  cmd->add_option("--worker", flags.worker, "Coordinator worker listener HOST:PORT")->capture_default_str();
  cmd->add_option("--redis", flags.redis, "The coordinator's Redis (for INFO memory)")->capture_default_str();
  cmd->add_option("--token", flags.token, "Bearer token of the coordinator");
  cmd->add_option("--secret-file", flags.secret_file,
                  "Worker secret of a coordinator without a token (STORAGE/.stas/worker-secret)");
  cmd->add_flag("--small", flags.small, "Small sizes (a few thousand jobs; for CI)");
}

}  // namespace stas::cli

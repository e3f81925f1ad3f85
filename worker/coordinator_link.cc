#include "worker/coordinator_link.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/text.h"
#include "jobspec/render_spec.h"

namespace stas::worker {

using Clock = std::chrono::steady_clock;

Result<HostPort> ParseHostPort(const std::string& text) {
  HostPort hp;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return InvalidArgument("expected [IPv6]:PORT, got '" + text + "'");
    hp.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) return InvalidArgument("expected HOST:PORT, got '" + text + "'");
    hp.host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit))
    return InvalidArgument("port must be a number in [1, 65535], got '" + port + "'");
  hp.port = std::stoi(port);
  if (hp.port < 1 || hp.port > 65535) return InvalidArgument("port must be in [1, 65535], got " + port);
  return hp;
}

namespace {

// Connects with a deadline; returns an owned, blocking socket with TCP_NODELAY.
Result<FileDescriptor> ConnectTcp(const HostPort& to, int timeout_ms) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(to.port);
  const int gai = ::getaddrinfo(to.host.c_str(), port.c_str(), &hints, &found);
  if (gai != 0) return Unavailable("cannot resolve " + to.host + ": " + ::gai_strerror(gai));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owned(found, &::freeaddrinfo);
  std::string last_error = "no address";
  for (addrinfo* a = found; a; a = a->ai_next) {
    FileDescriptor fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol));
    if (fd.get() < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    int rc = ::connect(fd.get(), a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd.get(), POLLOUT, 0};
      rc = ::poll(&p, 1, timeout_ms);
      if (rc == 0) {
        last_error = "connect timed out";
        continue;
      }
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (rc < 0 || err != 0) {
        last_error = std::strerror(rc < 0 ? errno : err);
        continue;
      }
    } else if (rc != 0) {
      last_error = std::strerror(errno);
      continue;
    }
    const int flags = ::fcntl(fd.get(), F_GETFL);
    ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ::setsockopt(fd.get(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    return fd;
  }
  return Unavailable("cannot connect to " + to.host + ":" + port + ": " + last_error);
}

int64_t MillisSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// A session shorter than this counts as failed for the reconnect backoff.
constexpr int64_t kStableSessionMs = 2000;

}  // namespace

CoordinatorLink::CoordinatorLink(LinkOptions options)
    : options_(std::move(options)), heartbeat_ms_(std::max(50, options_.heartbeat_ms)) {
  int fds[2];
  STAS_CHECK(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0) << "pipe2: " << std::strerror(errno);
  wake_read_fd_ = fds[0];
  wake_write_fd_ = fds[1];
}

CoordinatorLink::~CoordinatorLink() {
  Stop();
  ::close(wake_read_fd_);
  ::close(wake_write_fd_);
}

void CoordinatorLink::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_ || stopping_) return;
  started_ = true;
  thread_ = std::thread([this] {
    try {
      RunLoop();
    } catch (const std::exception& e) {  // never let an exception leave the thread
      STAS_LOG_ERROR("coordinator link stopped by an internal error: {}", e.what());
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      cv_.notify_all();
    }
  });
}

void CoordinatorLink::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    // A handshake blocks in a read: cut it short. A live session notices the wake-up instead, so it
    // can still hand back an untaken job.
    if (socket_fd_ >= 0 && !connected_) ::shutdown(socket_fd_, SHUT_RDWR);
    cv_.notify_all();
  }
  Wake();
  if (thread_.joinable()) thread_.join();
}

void CoordinatorLink::Wake() {
  const char byte = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_write_fd_, &byte, 1);  // a full pipe already wakes
}

void CoordinatorLink::RunLoop() {
  int backoff_ms = std::max(1, options_.backoff_initial_ms);
  int failures = 0;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    auto fd = ConnectTcp(options_.coordinator, options_.connect_timeout_ms);
    Status st = fd.ok() ? Status::Ok() : fd.status();
    protocol::FrameDecoder decoder;
    if (st.ok()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        socket_fd_ = fd->get();
      }
      st = Handshake(fd->get(), decoder);
    }
    bool session_failed = false;
    if (st.ok()) {
      if (failures > 0) STAS_LOG_INFO("reconnected to the coordinator after {} failed attempts", failures);
      failures = 0;
      const auto session_start = Clock::now();
      const bool clean = ServeConnection(fd->get(), decoder);
      // A session that ended in a protocol error, or was closed by the coordinator soon after it
      // began, is a failure too: reconnecting at once would repeat whatever ended it, as fast as the
      // network allows. The backoff resets only after a session that lasted.
      session_failed = !clean || MillisSince(session_start) < kStableSessionMs;
      if (!session_failed) backoff_ms = std::max(1, options_.backoff_initial_ms);
    } else {
      ++failures;
      if (failures == 1 || failures % 20 == 0)
        STAS_LOG_WARN("coordinator {}:{} not reachable ({}), retrying", options_.coordinator.host,
                      options_.coordinator.port, st.message());
    }
    std::unique_lock<std::mutex> lock(mu_);
    socket_fd_ = -1;
    if (connected_) STAS_LOG_WARN("lost the connection to the coordinator; reconnecting");
    connected_ = false;
    if (stopping_) return;
    if (!st.ok() || session_failed) {
      cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms), [&] { return stopping_; });
      backoff_ms = std::min(std::max(1, options_.backoff_max_ms), backoff_ms * 2);
    }
    // fd closes here (FileDescriptor), before the next attempt.
  }
}

Status CoordinatorLink::Handshake(int fd, protocol::FrameDecoder& decoder) {
  Json hello = options_.hello;
  hello["type"] = "hello";
  STAS_RETURN_IF_ERROR(protocol::WriteFrame(fd, hello));
  const auto start = Clock::now();
  while (true) {
    const int left = options_.welcome_timeout_ms - static_cast<int>(MillisSince(start));
    if (left <= 0) return Timeout("no welcome from the coordinator");
    STAS_ASSIGN_OR_RETURN(Json message, protocol::ReadFrame(fd, decoder, left));
    const std::string type = message["type"].get<std::string>();
    if (type == "error") return Unavailable("coordinator refused hello: " + JsonValueOr<std::string>(message, "message", "?"));
    if (type != "welcome") {
      STAS_LOG_WARN("ignoring a '{}' frame before welcome", type);
      continue;
    }
    Welcome w;
    Status parsed = CatchConfigErrors("welcome", [&] {
      w.worker = JsonValueOr<std::string>(message, "worker", "");
      w.heartbeat_ms = JsonValueOr<int>(message, "heartbeat_ms", 0);
      w.lease_ms = JsonValueOr<int>(message, "lease_ms", 0);
      w.storage = JsonValueOr<std::string>(message, "storage", "");
    });
    STAS_RETURN_IF_ERROR(parsed);
    std::lock_guard<std::mutex> lock(mu_);
    welcome_ = w;
    if (w.heartbeat_ms > 0) heartbeat_ms_ = std::max(50, w.heartbeat_ms);
    connected_ = true;
    ++handshakes_;
    ready_sent_ = false;
    commit_sent_ = false;
    result_sent_ = false;
    result_written_ = false;
    if (running_) running_->progress_dirty = true;  // tell the new coordinator about the job at once
    cv_.notify_all();
    STAS_LOG_INFO("connected to the coordinator as '{}' (heartbeat {} ms, lease {} ms)", w.worker, w.heartbeat_ms,
                  w.lease_ms);
    return Status::Ok();
  }
}

bool CoordinatorLink::ServeConnection(int fd, protocol::FrameDecoder& decoder) {
  auto last_heartbeat = Clock::now() - std::chrono::hours(1);
  coordinator_error_ = false;
  while (true) {
    std::vector<Json> out;
    int poll_ms = 1000;
    bool leaving = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        leaving = true;
        if (delivered_job_) {  // hand back a job nobody will run
          out.push_back({{"type", "failed"}, {"job_id", delivered_job_->job_id}, {"lease", delivered_job_->lease},
                         {"error", "worker shutting down before starting the job"}, {"retryable", true}});
          delivered_job_.reset();
        }
      } else {
        if (result_ && !result_sent_) {
          // done is accepted only after this lease's granted commit; a coordinator that restarted
          // since our commit was granted has forgotten it, so ask again first (the grant is
          // idempotent for the lease that holds the job).
          if ((*result_)["type"] == "done")
            out.push_back({{"type", "commit"}, {"job_id", (*result_)["job_id"]}, {"lease", (*result_)["lease"]}});
          out.push_back(*result_);
          result_sent_ = true;
          result_written_ = false;
        }
        if (running_) {
          const int64_t since = MillisSince(last_heartbeat);
          if (running_->progress_dirty || since >= heartbeat_ms_) {
            out.push_back({{"type", "heartbeat"}, {"job_id", running_->job_id}, {"lease", running_->lease},
                           {"step", running_->progress.step}, {"steps", running_->progress.steps},
                           {"stage", running_->progress.stage}});
            running_->progress_dirty = false;
            last_heartbeat = Clock::now();
            poll_ms = heartbeat_ms_;
          } else {
            poll_ms = static_cast<int>(heartbeat_ms_ - since);
          }
          if (commit_pending_ && !commit_sent_) {
            out.push_back({{"type", "commit"}, {"job_id", running_->job_id}, {"lease", running_->lease}});
            commit_sent_ = true;
          }
        }
        if (waiting_for_job_ && !ready_sent_ && !delivered_job_ && !running_) {
          out.push_back({{"type", "ready"}});
          ready_sent_ = true;
        }
      }
    }
    for (const Json& m : out) {
      Status st = protocol::WriteFrame(fd, m);
      if (!st.ok()) {
        STAS_LOG_WARN("sending '{}' to the coordinator failed: {}", m["type"].get<std::string>(), st.message());
        return false;
      }
      STAS_LOG_DEBUG("-> {}", m.dump());
    }
    if (!out.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (result_ && result_sent_) result_written_ = true;
      cv_.notify_all();  // FlushResult waits for writes
    }
    if (leaving) return true;

    pollfd fds[2] = {{fd, POLLIN, 0}, {wake_read_fd_, POLLIN, 0}};
    const int r = ::poll(fds, 2, std::max(1, poll_ms));
    if (r < 0 && errno != EINTR) {
      STAS_LOG_WARN("poll failed: {}", std::strerror(errno));
      return false;
    }
    if (r <= 0) continue;
    if (fds[1].revents & POLLIN) {
      char drain[64];
      while (::read(wake_read_fd_, drain, sizeof(drain)) > 0) {
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[65536];
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n == 0) return !coordinator_error_;
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return false;
      }
      decoder.Append(buf, static_cast<size_t>(n));
      while (true) {
        auto next = decoder.Next();
        if (!next.ok()) {
          STAS_LOG_WARN("bad frame from the coordinator: {}", next.status().message());
          return false;
        }
        if (!next->has_value()) break;
        Status st = HandleMessage(fd, **next);
        if (!st.ok()) {
          STAS_LOG_WARN("{}", st.message());
          return false;
        }
      }
    }
  }
}

Status CoordinatorLink::HandleMessage(int fd, const Json& message) {
  STAS_LOG_DEBUG("<- {}", message.dump());
  const std::string type = message["type"].get<std::string>();
  if (type == "job") {
    JobMessage job;
    Status parsed = CatchConfigErrors("job frame", [&] {
      job.job_id = message.at("job_id").get<std::string>();
      job.lease = message.at("lease").get<std::string>();
      job.attempt = JsonValueOr<int>(message, "attempt", 1);
      job.spec = message.value("spec", Json());
      job.resume = message.value("resume", Json());
      if (message.contains("output") && message["output"].is_string()) job.output = message["output"].get<std::string>();
      if (message.contains("upcoming_prompts") && message["upcoming_prompts"].is_array()) {
        for (const Json& prompt : message["upcoming_prompts"]) {
          if (job.upcoming_prompts.size() >= kMaxUpcomingPrompts) break;
          if (prompt.is_string() && !prompt.get<std::string>().empty() &&
              prompt.get<std::string>().size() <= jobspec::kMaxPromptBytes)
            job.upcoming_prompts.push_back(prompt.get<std::string>());
        }
      }
    });
    if (!parsed.ok()) return parsed;  // the coordinator speaks another protocol: reconnect
    std::unique_lock<std::mutex> lock(mu_);
    if (waiting_for_job_ && !delivered_job_ && !running_ && !stopping_) {
      delivered_job_ = std::move(job);
      waiting_for_job_ = false;
      ready_sent_ = false;
      result_.reset();  // a job after our ready proves the coordinator read the result sent before it
      cv_.notify_all();
      return Status::Ok();
    }
    lock.unlock();
    STAS_LOG_WARN("coordinator sent job {} while this group is busy; handing it back", job.job_id);
    return protocol::WriteFrame(fd, {{"type", "failed"}, {"job_id", job.job_id}, {"lease", job.lease},
                                     {"error", "worker group is busy"}, {"retryable", true}});
  }
  if (type == "heartbeat_ack") {
    std::lock_guard<std::mutex> lock(mu_);
    if (running_ && JsonValueOr<std::string>(message, "job_id", "") == running_->job_id &&
        JsonValueOr<bool>(message, "cancel", false) && !running_->cancel) {
      STAS_LOG_INFO("coordinator asked to stop job {}", running_->job_id);
      running_->cancel = true;
    }
    return Status::Ok();
  }
  if (type == "commit_ack") {
    std::lock_guard<std::mutex> lock(mu_);
    if (commit_pending_ && running_ && JsonValueOr<std::string>(message, "job_id", "") == running_->job_id) {
      commit_answer_ = JsonValueOr<bool>(message, "granted", false);
      commit_pending_ = false;
      cv_.notify_all();
    }
    return Status::Ok();
  }
  if (type == "welcome") {
    std::lock_guard<std::mutex> lock(mu_);
    if (welcome_) welcome_->storage = JsonValueOr<std::string>(message, "storage", welcome_->storage);
    return Status::Ok();
  }
  if (type == "error") {
    coordinator_error_ = true;  // the session then counts as failed for the reconnect backoff
    STAS_LOG_WARN("coordinator says: {}", JsonValueOr<std::string>(message, "message", "(no message)"));
    return Status::Ok();
  }
  STAS_LOG_DEBUG("ignoring unknown frame type '{}'", type);
  return Status::Ok();
}

Result<JobMessage> CoordinatorLink::WaitForJob(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) return Aborted("coordinator link stopped");
  if (!delivered_job_) {
    waiting_for_job_ = true;
    lock.unlock();
    Wake();
    lock.lock();
    auto ready = [&] { return delivered_job_.has_value() || stopping_; };
    if (timeout_ms < 0) {
      cv_.wait(lock, ready);
    } else if (!cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), ready)) {
      return Timeout("no job yet");
    }
    if (!delivered_job_) return Aborted("coordinator link stopped");
  }
  JobMessage job = std::move(*delivered_job_);
  delivered_job_.reset();
  Running r;
  r.job_id = job.job_id;
  r.lease = job.lease;
  running_ = std::move(r);
  commit_pending_ = false;
  commit_answer_.reset();
  lock.unlock();
  Wake();
  return job;
}

void CoordinatorLink::UpdateProgress(const JobProgress& progress) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!running_) return;
    running_->progress = progress;
    running_->progress_dirty = true;
  }
  Wake();
}

bool CoordinatorLink::cancel_requested() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_ && running_->cancel;
}

Result<bool> CoordinatorLink::RequestCommit(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!running_) return Internal("RequestCommit without a running job");
  commit_pending_ = true;
  commit_sent_ = false;
  commit_answer_.reset();
  lock.unlock();
  Wake();
  lock.lock();
  const bool answered = cv_.wait_for(lock, std::chrono::milliseconds(std::max(0, timeout_ms)),
                                     [&] { return commit_answer_.has_value() || stopping_; });
  commit_pending_ = false;
  if (commit_answer_) return *commit_answer_;
  if (!answered) return Timeout("the coordinator did not answer the commit request within " +
                                std::to_string(timeout_ms) + " ms");
  return Aborted("coordinator link stopped");
}

void CoordinatorLink::SetResult(Json message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!running_) return;
    message["job_id"] = running_->job_id;
    message["lease"] = running_->lease;
    result_ = std::move(message);
    result_sent_ = false;
    result_written_ = false;
    running_.reset();
    commit_pending_ = false;
  }
  Wake();
}

void CoordinatorLink::ReportDone(Json fields) {
  fields["type"] = "done";
  SetResult(std::move(fields));
}

void CoordinatorLink::ReportFailed(const std::string& error, bool retryable) {
  SetResult({{"type", "failed"}, {"error", TruncateUtf8(error, protocol::kMaxErrorBytes)}, {"retryable", retryable}});
}

void CoordinatorLink::Abandon() {
  std::lock_guard<std::mutex> lock(mu_);
  running_.reset();
  commit_pending_ = false;
}

bool CoordinatorLink::FlushResult(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(std::max(0, timeout_ms)),
                      [&] { return !result_ || result_written_ || stopping_; }) &&
         (!result_ || result_written_);
}

std::optional<Welcome> CoordinatorLink::welcome() const {
  std::lock_guard<std::mutex> lock(mu_);
  return welcome_;
}

Result<Welcome> CoordinatorLink::WaitForWelcome(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  auto ready = [&] { return welcome_.has_value() || stopping_; };
  if (timeout_ms < 0) {
    cv_.wait(lock, ready);
  } else if (!cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), ready)) {
    return Timeout("no welcome from the coordinator within " + std::to_string(timeout_ms) + " ms");
  }
  if (!welcome_) return Aborted("coordinator link stopped");
  return *welcome_;
}

bool CoordinatorLink::connected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return connected_;
}

int64_t CoordinatorLink::handshakes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return handshakes_;
}

}  // namespace stas::worker

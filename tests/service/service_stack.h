// The render service on loopback for the service tests: redis-server (deploy/redis.conf, AOF on),
// `stas coordinator`, and worker groups each launched by its own `mpirun` (so killing one group does
// not take the others down), all as child processes of the test with their logs in a temp folder.
// Everything is torn down in the destructor, including mpirun's ranks (they run in their own
// process groups).
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/json.h"
#include "support/run_command.h"
#include "support/temp_dir.h"

namespace stas::testing {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

inline int FreeTcpPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Direct children of `pid`, from /proc.
inline std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::vector<pid_t> out;
  DIR* proc = ::opendir("/proc");
  if (!proc) return out;
  while (dirent* e = ::readdir(proc)) {
    const pid_t p = static_cast<pid_t>(std::atoi(e->d_name));
    if (p <= 0) continue;
    std::ifstream stat("/proc/" + std::string(e->d_name) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const size_t close = line.rfind(')');  // the command name may hold spaces
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    char state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == pid) out.push_back(p);
  }
  ::closedir(proc);
  return out;
}

inline std::vector<pid_t> DescendantsOf(pid_t pid) {
  std::vector<pid_t> out;
  for (pid_t c : ChildrenOf(pid)) {
    out.push_back(c);
    for (pid_t g : DescendantsOf(c)) out.push_back(g);
  }
  return out;
}

// One child process; stdout and stderr go to `log`.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log) : log_(log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      const int null = ::open("/dev/null", O_RDONLY);
      ::dup2(null, 0);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      std::perror("execvp");
      ::_exit(127);
    }
  }
  ~Child() { Stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_; }
  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  bool Running() {
    if (exited_) return false;
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return !exited_;
  }
  void Signal(int sig) {
    if (Running()) ::kill(pid_, sig);
  }
  // Exit status (128 + signal when killed), or nullopt if still running after `timeout`.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    while (Running()) {
      if (SteadyClock::now() > deadline) return std::nullopt;
      std::this_thread::sleep_for(20ms);
    }
    return exit_status_;
  }
  // SIGTERM to the process, then SIGKILL to it and every descendant still alive.
  void Stop(std::chrono::milliseconds grace = 3000ms) {
    if (pid_ <= 0 || exited_) return;
    std::vector<pid_t> family = DescendantsOf(pid_);
    Signal(SIGCONT);
    Signal(SIGTERM);
    Wait(grace);
    for (pid_t p : family) ::kill(p, SIGKILL);
    if (Running()) {
      ::kill(pid_, SIGKILL);
      Wait(5000ms);
    }
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_status_ = -1;
};

struct StackOptions {
  int lease_ms = 2000;
  int heartbeat_ms = 250;
  int max_attempts = 3;
  int backoff_ms = 200;
  int backoff_max_ms = 1000;
};

class ServiceStack {
 public:
  explicit ServiceStack(StackOptions options = {}) : options_(options) {
    std::filesystem::create_directories(dir_.File("redis"));
    std::filesystem::create_directories(dir_.File("storage"));
    std::filesystem::create_directories(dir_.File("logs"));
    redis_port_ = FreeTcpPort();
    worker_port_ = FreeTcpPort();
    http_port_ = FreeTcpPort();
  }
  ~ServiceStack() {
    workers_.clear();  // drain workers first, then the coordinator, then Redis
    coordinator_.reset();
    redis_.reset();
  }

  std::string storage() const { return dir_.File("storage"); }
  std::string server() const { return "http://127.0.0.1:" + std::to_string(http_port_); }
  std::string worker_address() const { return "127.0.0.1:" + std::to_string(worker_port_); }
  std::string log_dir() const { return dir_.File("logs"); }
  int redis_port() const { return redis_port_; }
  const StackOptions& options() const { return options_; }

  // ---------------------------------------------------------------------------------------- Redis
  bool StartRedis() {
    redis_ = std::make_unique<Child>(
        std::vector<std::string>{"redis-server", std::string(STAS_SOURCE_DIR) + "/deploy/redis.conf", "--port",
                                 std::to_string(redis_port_), "--dir", dir_.File("redis")},
        dir_.File("logs/redis.log"));
    return WaitUntil([&] { return RunCommand("redis-cli -p " + std::to_string(redis_port_) + " ping").output.find("PONG") !=
                                  std::string::npos; },
                     20s);
  }
  Child* redis() { return redis_.get(); }
  std::string RedisCli(const std::string& args) {
    return RunCommand("redis-cli -p " + std::to_string(redis_port_) + " " + args).output;
  }

  // ---------------------------------------------------------------------------------- coordinator
  bool StartCoordinator() {
    coordinator_ = std::make_unique<Child>(
        std::vector<std::string>{STAS_BINARY,
                                 "coordinator",
                                 "--redis",
                                 "redis://127.0.0.1:" + std::to_string(redis_port_),
                                 "--listen",
                                 worker_address(),
                                 "--http",
                                 "127.0.0.1:" + std::to_string(http_port_),
                                 "--storage",
                                 storage(),
                                 "--lease-ms",
                                 std::to_string(options_.lease_ms),
                                 "--heartbeat-ms",
                                 std::to_string(options_.heartbeat_ms),
                                 "--max-attempts",
                                 std::to_string(options_.max_attempts),
                                 "--backoff-ms",
                                 std::to_string(options_.backoff_ms),
                                 "--backoff-max-ms",
                                 std::to_string(options_.backoff_max_ms)},
        dir_.File("logs/coordinator.log"));
    return WaitUntil([&] { return Healthy(); }, 30s);
  }
  Child* coordinator() { return coordinator_.get(); }
  bool Healthy() { return RunCommand("curl -sf " + server() + "/healthz").exit_code == 0; }

  // -------------------------------------------------------------------------------------- workers
  // One `mpirun -np np stas worker --model MODEL` launch: np / (sp*cfg) groups named "<name>-g<k>-<pid>".
  Child& StartWorkers(const std::string& name, int np = 1, const std::vector<std::string>& extra = {},
                      const std::string& model = "tiny") {
    std::vector<std::string> argv = {MPIEXEC, "--oversubscribe", "--bind-to", "none", "-x", "OMP_NUM_THREADS=1"};
    if (::geteuid() == 0) argv.push_back("--allow-run-as-root");
    for (const auto& a : std::vector<std::string>{"-np", std::to_string(np), STAS_BINARY, "worker", "--coordinator",
                                                  worker_address(), "--model", model, "--name", name,
                                                  "--secret-file", storage() + "/.stas/worker-secret"})
      argv.push_back(a);
    for (const auto& a : extra) argv.push_back(a);
    workers_.push_back(std::make_unique<Child>(argv, dir_.File("logs/workers-" + name + ".log")));
    return *workers_.back();
  }
  // Worker groups the coordinator knows (GET /workers).
  int ConnectedWorkers() {
    Json j = GetJson("/workers");
    return j.is_object() && j.contains("count") ? j["count"].get<int>() : -1;
  }

  // ----------------------------------------------------------------------------------------- HTTP
  Json GetJson(const std::string& path) {
    auto r = RunCommand("curl -s -m 10 " + ShellQuote(server() + path));
    if (r.exit_code != 0) return Json();
    try {
      return Json::parse(r.output);
    } catch (const Json::exception&) {
      return Json();
    }
  }
  Json Job(const std::string& id) { return GetJson("/jobs/" + id); }
  std::string State(const std::string& id) {
    Json j = Job(id);
    return j.is_object() && j.contains("state") ? j["state"].get<std::string>() : "";
  }
  // Runs the stas CLI with `args` (shell words, already quoted where needed).
  CommandResult Stas(const std::string& args) {
    return RunCommand(std::string(STAS_BINARY) + " " + args);
  }
  // `stas submit --server ... ARGS`; returns the printed ids (empty on failure, output in `log`).
  std::vector<std::string> Submit(const std::string& args, std::string* log = nullptr) {
    // stdout only (ids); stderr to a file so a progress bar or summary never mixes in.
    const std::string err = dir_.File("logs/submit.err");
    auto r = RunCommand(std::string(STAS_BINARY) + " submit --quiet --server " + server() + " " + args + " 2>" + err);
    if (log) *log = r.output;
    std::vector<std::string> ids;
    if (r.exit_code != 0) return ids;
    std::istringstream in(r.output);
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) ids.push_back(line);
    return ids;
  }

  // ---------------------------------------------------------------------------------------- files
  // MP4 files in the storage folder (not hidden temporaries) whose stem is `stem`, or all when empty.
  int CountVideos(const std::string& stem = "") const {
    int n = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(storage())) {
      const auto& p = e.path();
      if (!e.is_regular_file() || p.extension() != ".mp4" || p.filename().string()[0] == '.') continue;
      if (stem.empty() || p.stem() == stem) ++n;
    }
    return n;
  }
  int CountTemporaryFiles() const {
    int n = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(storage()))
      n += e.path().filename().string().find(".tmp.") != std::string::npos;
    return n;
  }

  static bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout,
                        std::chrono::milliseconds interval = 100ms) {
    const auto deadline = SteadyClock::now() + timeout;
    while (SteadyClock::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(interval);
    }
    return done();
  }

  // The tail of every log, for failure messages.
  std::string Logs(size_t tail = 3000) const {
    std::string out;
    for (const auto& e : std::filesystem::directory_iterator(dir_.File("logs"))) {
      std::ifstream in(e.path());
      std::stringstream ss;
      ss << in.rdbuf();
      std::string text = ss.str();
      if (text.size() > tail) text = "..." + text.substr(text.size() - tail);
      out += "==== " + e.path().filename().string() + "\n" + text + "\n";
    }
    return out;
  }

 private:
  StackOptions options_;
  TempDir dir_;
  int redis_port_ = 0, worker_port_ = 0, http_port_ = 0;
  std::unique_ptr<Child> redis_;
  std::unique_ptr<Child> coordinator_;
  std::vector<std::unique_ptr<Child>> workers_;
};

// The pid in a worker name "<name>-g<k>-<pid>" (the rank that leads the group), or -1.
inline pid_t PidOfWorker(const std::string& worker) {
  const size_t dash = worker.rfind('-');
  if (dash == std::string::npos) return -1;
  try {
    return static_cast<pid_t>(std::stol(worker.substr(dash + 1)));
  } catch (const std::exception&) {
    return -1;
  }
}

// One line per measured figure, easy to grep out of a test log for docs/RELIABILITY.md.
inline void ReportFigure(const std::string& scenario, const std::string& name, const std::string& value) {
  std::printf("RELIABILITY %s %s=%s\n", scenario.c_str(), name.c_str(), value.c_str());
  std::fflush(stdout);
}

}  // namespace stas::testing

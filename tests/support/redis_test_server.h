// A throw-away redis-server for tests: started on a free loopback port with its own temporary folder
// (no persistence unless asked), stopped and removed when the object goes away.
//
// With REDIS_URL set (e.g. redis://127.0.0.1:6379), no server is started: tests use that server and a
// unique key prefix instead. available() is false (tests skip) when neither works.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"

namespace stas::testing {

// A currently free TCP port on 127.0.0.1 (the kernel's choice; free a moment later, as tests need).
inline int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

// True when something accepts TCP connections on 127.0.0.1:port.
inline bool PortAccepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

inline std::string FindRedisServer() {
  if (const char* env = std::getenv("REDIS_SERVER")) return env;
  for (const char* p : {"/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

class RedisTestServer {
 public:
  struct Options {
    std::string password;
    bool appendonly = false;
    int port = 0;  // 0 = a free one
  };

  RedisTestServer() : RedisTestServer(Options{}) {}
  explicit RedisTestServer(Options options) : options_(std::move(options)) {
    if (const char* url = std::getenv("REDIS_URL"); url && *url && options_.password.empty() && !options_.appendonly) {
      url_ = url;
      external_ = true;
      return;
    }
    binary_ = FindRedisServer();
    if (binary_.empty()) return;
    port_ = options_.port ? options_.port : FreeLoopbackPort();
    Start();
  }
  ~RedisTestServer() { Stop(); }
  RedisTestServer(const RedisTestServer&) = delete;
  RedisTestServer& operator=(const RedisTestServer&) = delete;

  bool available() const { return external_ || pid_ > 0; }
  bool external() const { return external_; }
  int port() const { return port_; }
  std::string host() const { return "127.0.0.1"; }
  // redis://127.0.0.1:PORT (no password in it), or REDIS_URL.
  std::string url() const { return external_ ? url_ : "redis://127.0.0.1:" + std::to_string(port_); }
  std::string dir() const { return dir_.path(); }
  // A key prefix unique to this server object, so tests sharing REDIS_URL do not collide.
  std::string prefix() const { return prefix_; }

  // Starts (again) on the same port and folder; waits until it accepts connections.
  bool Start() {
    if (external_ || binary_.empty() || pid_ > 0) return available();
    std::vector<std::string> args = {binary_, "--port", std::to_string(port_), "--bind", "127.0.0.1", "--dir", dir_.path(),
                                     "--save", "", "--daemonize", "no", "--protected-mode", "no", "--logfile",
                                     dir_.File("redis.log")};
    args.push_back("--appendonly");
    args.push_back(options_.appendonly ? "yes" : "no");
    if (!options_.password.empty()) {
      args.push_back("--requirepass");
      args.push_back(options_.password);
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    if (pid < 0) return false;
    pid_ = pid;
    for (int i = 0; i < 200; ++i) {  // up to 10 s
      if (PortAccepts(port_)) return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    Stop();
    return false;
  }

  // SIGTERM (a clean shutdown: AOF flushed) or SIGKILL, then waits for the process.
  void Stop(bool kill = false) {
    if (pid_ <= 0) return;
    ::kill(pid_, kill ? SIGKILL : SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    for (int i = 0; i < 100 && PortAccepts(port_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }

 private:
  Options options_;
  TempDir dir_;
  std::string binary_;
  std::string url_;
  bool external_ = false;
  int port_ = 0;
  pid_t pid_ = -1;
  std::string prefix_ = "stastest:" + std::to_string(::getpid()) + ":" +
                        std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ":";
};

}  // namespace stas::testing

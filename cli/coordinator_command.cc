// `stas coordinator`: the Redis-backed queue, the worker-group dispatcher and the HTTP API in one process.
// All job state lives in Redis, so the process can be killed and restarted at any time (docs/API.md,
// "Restarts").
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "common/log.h"
#include "coordinator/auth.h"
#include "coordinator/dispatcher.h"
#include "coordinator/http_api.h"
#include "coordinator/job_queue.h"
#include "coordinator/redis_client.h"
#include "coordinator/redis_job_store.h"
#include "coordinator/server.h"

namespace stas::cli {

namespace {

struct CoordinatorFlags {
  std::string redis = "redis://127.0.0.1:6379";
  std::string redis_password;
  std::string key_prefix = "stas:";
  std::string listen = "127.0.0.1:7070";
  std::string http = "127.0.0.1:8080";
  std::string storage;
  int64_t lease_ms = 30000;
  int64_t heartbeat_ms = 0;
  int max_attempts = 3;
  int64_t backoff_ms = 5000;
  int64_t backoff_max_ms = 300000;
  std::string token;
  bool token_given = false;  // --token appeared on the command line (even as '')
  std::string default_model = "tiny";
  size_t max_body_bytes = 8u << 20;
  std::vector<std::string> allowed_hosts;
  std::vector<std::string> limits;
  int hello_timeout_ms = 5000;
  int max_worker_connections = 256;
  int max_worker_connections_per_peer = 32;
};

struct HostPort {
  std::string host;
  int port = 0;
};

Result<HostPort> ParseHostPort(const std::string& text, const char* flag) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    return InvalidArgument(std::string(flag) + " must be HOST:PORT, got '" + text + "'");
  HostPort hp;
  hp.host = text.substr(0, colon);
  if (hp.host.size() >= 2 && hp.host.front() == '[' && hp.host.back() == ']') hp.host = hp.host.substr(1, hp.host.size() - 2);
  const std::string port = text.substr(colon + 1);
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  if (!end || *end != '\0' || p < 0 || p > 65535)
    return InvalidArgument(std::string(flag) + ": port must be in [0, 65535], got '" + port + "'");
  hp.port = static_cast<int>(p);
  return hp;
}

int Fail(const std::string& message, int code = 64) {
  std::cerr << "stas coordinator: " << message << "\n";
  return code;
}

int RunCoordinator(const CoordinatorFlags& f) {
  using namespace stas::coordinator;
  if (!STAS_HAVE_REDIS)
    return Fail("built without Redis: this build has no hiredis, so the coordinator cannot run "
                "(install libhiredis-dev and rebuild with -DSTAS_WITH_REDIS=ON)",
                69);
  auto listen = ParseHostPort(f.listen, "--listen");
  if (!listen.ok()) return Fail(listen.status().message());
  auto http = ParseHostPort(f.http, "--http");
  if (!http.ok()) return Fail(http.status().message());
  // A token that is given, on the command line or in STAS_TOKEN, must be a real one: an empty value
  // (an unset shell variable, a blank line in an env file) is refused, never read as "no token".
  std::string token = f.token;
  bool token_given = f.token_given;
  if (!token_given) {
    const char* env = std::getenv("STAS_TOKEN");
    if (env) token = env;
    token_given = env != nullptr;
  }
  if (token_given) {
    Status text = CheckTokenText(token, "--token (or STAS_TOKEN)");
    if (!text.ok()) return Fail(text.message());
  }
  if (token.empty() && (!IsLoopbackHost(listen->host) || !IsLoopbackHost(http->host)))
    return Fail("--listen/--http bind a non-loopback address; a bearer token is required (--token or STAS_TOKEN)");
  if (f.storage.empty()) return Fail("--storage DIR is required");
  std::error_code ec;
  std::filesystem::create_directories(f.storage, ec);
  if (ec || !std::filesystem::is_directory(f.storage))
    return Fail("cannot create the storage folder '" + f.storage + "': " + ec.message());
  const std::string storage = std::filesystem::weakly_canonical(std::filesystem::absolute(f.storage)).string();
  // Worker groups always authenticate, on loopback too: with --token they send it, without one they
  // send the secret this coordinator keeps in its storage folder (created on the first start).
  std::string worker_secret = token;
  if (worker_secret.empty()) {
    auto secret = LoadOrCreateWorkerSecret(storage);
    if (!secret.ok()) return Fail("worker secret: " + secret.status().message());
    worker_secret = *secret;
  }

  auto redis_options = ParseRedisUrl(f.redis);
  if (!redis_options.ok()) return Fail(redis_options.status().message());
  if (!f.redis_password.empty()) {
    redis_options->password = f.redis_password;
  } else if (redis_options->password.empty()) {
    const char* env = std::getenv("STAS_REDIS_PASSWORD");
    if (env) redis_options->password = env;
  }
  redis_options->key_prefix = f.key_prefix;

  QueueOptions queue_options;
  queue_options.lease_ms = f.lease_ms;
  queue_options.max_attempts = f.max_attempts;
  queue_options.backoff_initial_ms = f.backoff_ms;
  queue_options.backoff_max_ms = std::max(f.backoff_ms, f.backoff_max_ms);
  Status valid = ValidateQueueOptions(queue_options);
  if (!valid.ok()) return Fail(valid.message());

  auto client = std::make_shared<RedisClient>(*redis_options);
  RedisJobStore store(client);
  Status init = store.Initialize();
  if (!init.ok())
    STAS_LOG_ERROR("redis at {} is not usable yet ({}); the coordinator starts anyway and keeps retrying",
                   client->address(), init.message());
  JobQueue queue(&store, DefaultClock(), queue_options);

  DispatcherOptions dispatcher_options;
  dispatcher_options.storage = storage;
  dispatcher_options.heartbeat_ms = f.heartbeat_ms;
  dispatcher_options.token = worker_secret;
  Dispatcher dispatcher(&queue, DefaultClock(), dispatcher_options);

  HttpApiOptions api_options;
  api_options.token = token;
  api_options.storage = storage;
  api_options.max_body_bytes = f.max_body_bytes;
  api_options.default_model = f.default_model;
  // Host names the API answers: loopback names, the address it binds (unless a wildcard) and the
  // operator's --allowed-hosts.
  api_options.allowed_hosts = {"localhost", "127.0.0.1", "::1"};
  if (http->host != "0.0.0.0" && http->host != "::") api_options.allowed_hosts.push_back(http->host);
  for (const auto& h : f.allowed_hosts) api_options.allowed_hosts.push_back(h);
  for (const auto& text : f.limits) {
    Status parsed = jobspec::ParseCostLimitOverride(text, &api_options.cost_limits);
    if (!parsed.ok()) return Fail(parsed.message());
  }
  HttpApi api(&queue, &dispatcher, DefaultClock(), api_options);
  // Requests that wait on Redis or files run on two worker threads, each with a Redis connection of its
  // own, so the event loop (health checks, heartbeats, dispatch) never waits behind them and a big batch
  // on one does not hold up listings and cancels on the other.
  struct OffloadLane {
    std::shared_ptr<RedisClient> client;
    std::unique_ptr<RedisJobStore> store;
    std::unique_ptr<JobQueue> queue;
    std::unique_ptr<HttpApi> api;
  };
  std::vector<OffloadLane> lanes(2);
  for (auto& lane : lanes) {
    lane.client = std::make_shared<RedisClient>(*redis_options);
    lane.store = std::make_unique<RedisJobStore>(lane.client);
    lane.queue = std::make_unique<JobQueue>(lane.store.get(), DefaultClock(), queue_options);
    lane.api = std::make_unique<HttpApi>(lane.queue.get(), nullptr, DefaultClock(), api_options);
  }

  ServerOptions server_options;
  server_options.listen_host = listen->host;
  server_options.listen_port = listen->port;
  server_options.http_host = http->host;
  server_options.http_port = http->port;
  for (auto& lane : lanes) server_options.offload_apis.push_back(lane.api.get());
  server_options.max_body_bytes = f.max_body_bytes;
  server_options.hello_timeout_ms = f.hello_timeout_ms;
  server_options.max_worker_connections = f.max_worker_connections;
  server_options.max_worker_connections_per_peer = f.max_worker_connections_per_peer;
  CoordinatorServer server(&dispatcher, &api, server_options);
  Status started = server.Start();
  if (!started.ok()) return Fail(started.message(), 69);
  auto show = [](const std::string& host, int port) {
    return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  };
  // One parseable line on stdout (scripts and tests read the actual ports when 0 was asked for).
  std::cout << "stas coordinator listening: workers=" << show(listen->host, server.worker_port())
            << " http=" << show(http->host, server.http_port()) << " redis=" << client->address()
            << " storage=" << storage << std::endl;
  STAS_LOG_INFO("lease {} ms, max attempts {}, auth {}", queue_options.lease_ms, queue_options.max_attempts,
                token.empty() ? "HTTP off (loopback only), workers by the secret in " + WorkerSecretPath(storage)
                              : "bearer token");
  const int signal = server.Run();
  STAS_LOG_INFO("coordinator stopped{}", signal ? " (signal " + std::to_string(signal) + ")" : "");
  return 0;
}

}  // namespace

void RegisterCoordinator(CLI::App& app) {
  static CoordinatorFlags flags;
  CLI::App* cmd = AddCommand(app, "coordinator",
                             "Run the coordinator: Redis job queue, worker-group dispatch, HTTP API and status page",
                             [] { return RunCoordinator(flags); });
  cmd->add_option("--redis", flags.redis, "Redis URL: redis://[[user]:password@]HOST:PORT[/DB]")->capture_default_str();
  cmd->add_option("--redis-password", flags.redis_password, "Redis AUTH password (or STAS_REDIS_PASSWORD)");
  cmd->add_option("--key-prefix", flags.key_prefix, "Prefix of every Redis key")->capture_default_str();
  cmd->add_option("--listen", flags.listen, "HOST:PORT for worker groups")->capture_default_str();
  cmd->add_option("--http", flags.http, "HOST:PORT for the HTTP API and status page")->capture_default_str();
  cmd->add_option("--storage", flags.storage, "Folder where worker groups commit videos (shared with them)")->required();
  cmd->add_option("--lease-ms", flags.lease_ms, "A job's lease: a group silent this long loses the job")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{100}, int64_t{86'400'000}));
  cmd->add_option("--heartbeat-ms", flags.heartbeat_ms, "Heartbeat interval told to groups (0 = lease/5)")
      ->check(CLI::Range(int64_t{0}, int64_t{3'600'000}));
  cmd->add_option("--max-attempts", flags.max_attempts, "Attempts before a job is dead-lettered")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--backoff-ms", flags.backoff_ms, "First retry delay; doubles per attempt")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{86'400'000}));
  cmd->add_option("--backoff-max-ms", flags.backoff_max_ms, "Longest retry delay")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{86'400'000}));
  cmd->add_option("--token", flags.token, "Bearer token for HTTP and workers (or STAS_TOKEN); required off loopback")
      ->each([](const std::string&) { flags.token_given = true; });
  cmd->add_option("--default-model", flags.default_model, "Model of POST /v1/videos requests without one")
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", flags.max_body_bytes, "Largest HTTP request body (413 above)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30));
  cmd->add_option("--allowed-hosts", flags.allowed_hosts,
                  "Host names the HTTP API answers besides loopback and the --http address (e.g. a DNS name "
                  "behind which it is reached; '*' = any)")
      ->delimiter(',');
  cmd->add_option("--limit", flags.limits,
                  "Cost limit per model family, FAMILY:frames=N,pixels=N,steps=N (repeatable; defaults: the "
                  "family's trained sizes, docs/SECURITY.md)");
  cmd->add_option("--hello-timeout-ms", flags.hello_timeout_ms, "A worker connection must say hello within this")
      ->capture_default_str()
      ->check(CLI::Range(100, 600000));
  cmd->add_option("--max-worker-connections", flags.max_worker_connections, "Open worker connections at most")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--max-worker-connections-per-peer", flags.max_worker_connections_per_peer,
                  "Open worker connections per remote address at most")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
}

}  // namespace stas::cli

// RedisClient over hiredis: the only file of the coordinator that includes hiredis.
// Works with hiredis 0.14 (Debian 12) and 1.x (RESP3 reply types are mapped when they exist).
#include <hiredis/hiredis.h>

#include <sys/time.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "common/log.h"
#include "coordinator/redis_client.h"

// The CHECK macro of this library, for use inside RedisClient::Impl: a hiredis call that returned no
// reply left the context unusable; turn that into kUnavailable naming the call, hiredis version and
// place, and drop the connection (see Impl::ConnectionLost).
#define STAS_REDIS_CHECK(reply, what) \
  if (!(reply)) return ConnectionLost(__FILE__, __LINE__, what)

namespace stas::coordinator {

namespace {

struct ContextDeleter {
  void operator()(redisContext* c) const {
    if (c) redisFree(c);
  }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

struct ReplyDeleter {
  void operator()(redisReply* r) const {
    if (r) freeReplyObject(r);
  }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

using SteadyClock = std::chrono::steady_clock;

timeval ToTimeval(int ms) {
  timeval tv{};
  tv.tv_sec = ms / 1000;
  tv.tv_usec = (ms % 1000) * 1000;
  return tv;
}

std::string HiredisVersion() { return std::to_string(HIREDIS_MAJOR) + "." + std::to_string(HIREDIS_MINOR); }

// Replies that mean "the server exists but cannot serve right now".
bool IsTransientError(const std::string& e) {
  for (const char* p : {"LOADING", "BUSY ", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOAUTH", "WRONGPASS"})
    if (e.rfind(p, 0) == 0) return true;
  return false;
}

Status ErrorReply(const std::string& text, const std::string& command) {
  const std::string message = "redis: " + text + " (command " + command + ")";
  return IsTransientError(text) ? Unavailable(message) : Internal(message);
}

Result<RedisValue> ConvertReply(const redisReply* r, const std::string& command) {
  RedisValue v;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      v.type = RedisValue::Type::kString;
      v.str.assign(r->str, r->len);
      return v;
    case REDIS_REPLY_STATUS:
      v.type = RedisValue::Type::kStatus;
      v.str.assign(r->str, r->len);
      return v;
    case REDIS_REPLY_INTEGER:
      v.type = RedisValue::Type::kInteger;
      v.integer = r->integer;
      return v;
    case REDIS_REPLY_NIL:
      return v;
    case REDIS_REPLY_ERROR:
      return ErrorReply(std::string(r->str, r->len), command);
    case REDIS_REPLY_ARRAY:
#ifdef REDIS_REPLY_MAP
    case REDIS_REPLY_MAP:
#endif
#ifdef REDIS_REPLY_SET
    case REDIS_REPLY_SET:
#endif
#ifdef REDIS_REPLY_PUSH
    case REDIS_REPLY_PUSH:
#endif
      v.type = RedisValue::Type::kArray;
      v.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) {
        STAS_ASSIGN_OR_RETURN(RedisValue e, ConvertReply(r->element[i], command));
        v.elements.push_back(std::move(e));
      }
      return v;
#ifdef REDIS_REPLY_DOUBLE
    case REDIS_REPLY_DOUBLE:
      v.type = RedisValue::Type::kDouble;
      v.str.assign(r->str, r->len);
      return v;
#endif
#ifdef REDIS_REPLY_BOOL
    case REDIS_REPLY_BOOL:
      v.type = RedisValue::Type::kInteger;
      v.integer = r->integer;
      return v;
#endif
#ifdef REDIS_REPLY_VERB
    case REDIS_REPLY_VERB:
#endif
#ifdef REDIS_REPLY_BIGNUM
    case REDIS_REPLY_BIGNUM:
#endif
      v.type = RedisValue::Type::kString;
      v.str.assign(r->str, r->len);
      return v;
    default:
      return Internal("redis: unknown reply type " + std::to_string(r->type) + " (command " + command + ")");
  }
}

}  // namespace

struct RedisClient::Impl {
  const RedisOptions& options;
  ContextPtr ctx;
  SteadyClock::time_point next_attempt = SteadyClock::now();
  int backoff_ms;
  std::string last_error;
  std::map<std::string, std::string> script_sha;  // script text -> SHA1 from SCRIPT LOAD

  explicit Impl(const RedisOptions& o) : options(o), backoff_ms(std::max(1, o.backoff_initial_ms)) {}

  std::string Address() const {
    return (options.host.find(':') != std::string::npos ? "[" + options.host + "]" : options.host) + ":" +
           std::to_string(options.port);
  }

  // STAS_REDIS_CHECK's failure path (hiredis set ctx->err): record the error, drop the connection so
  // the next command reconnects.
  Status ConnectionLost(const char* file, int line, const std::string& what) {
    std::string reason = ctx && ctx->err ? std::string(ctx->errstr) : "no reply";
    last_error = "redis at " + Address() + ": " + what + " failed: " + reason + " (hiredis " + HiredisVersion() +
                 ", " + file + ":" + std::to_string(line) + ")";
    ctx.reset();
    next_attempt = SteadyClock::now();  // a broken connection is retried at once, once
    return Unavailable(last_error);
  }

  Status ConnectFailed(const std::string& reason) {
    last_error = "redis at " + Address() + " unreachable: " + reason;
    ctx.reset();
    next_attempt = SteadyClock::now() + std::chrono::milliseconds(backoff_ms);
    backoff_ms = std::min(std::max(1, options.backoff_max_ms), backoff_ms * 2);
    return Unavailable(last_error);
  }

  // Runs a command on the current context without touching connection state beyond the CHECK path.
  Result<RedisValue> Raw(const std::vector<std::string>& argv) {
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    ptrs.reserve(argv.size());
    lens.reserve(argv.size());
    for (const auto& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    ReplyPtr reply(static_cast<redisReply*>(
        redisCommandArgv(ctx.get(), static_cast<int>(argv.size()), ptrs.data(), lens.data())));
    STAS_REDIS_CHECK(reply, argv.empty() ? std::string("command") : argv[0]);
    return ConvertReply(reply.get(), argv.empty() ? "" : argv[0]);
  }

  Status EnsureConnected() {
    if (ctx) return Status::Ok();
    const auto now = SteadyClock::now();
    if (now < next_attempt) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next_attempt - now).count();
      return Unavailable((last_error.empty() ? "redis at " + Address() + " unreachable" : last_error) +
                         " (next attempt in " + std::to_string(left) + " ms)");
    }
    ctx.reset(redisConnectWithTimeout(options.host.c_str(), options.port, ToTimeval(options.connect_timeout_ms)));
    if (!ctx) return ConnectFailed("out of memory allocating the connection");
    if (ctx->err) return ConnectFailed(ctx->errstr);
    if (redisSetTimeout(ctx.get(), ToTimeval(options.command_timeout_ms)) != REDIS_OK)
      return ConnectFailed("cannot set the command timeout");
    if (!options.password.empty()) {
      std::vector<std::string> auth = {"AUTH"};
      if (!options.username.empty()) auth.push_back(options.username);
      auth.push_back(options.password);
      auto r = Raw(auth);
      if (!r.ok()) return ConnectFailed("AUTH failed: " + r.status().message());
    }
    if (options.db != 0) {
      auto r = Raw({"SELECT", std::to_string(options.db)});
      if (!r.ok()) return ConnectFailed("SELECT " + std::to_string(options.db) + " failed: " + r.status().message());
    }
    backoff_ms = std::max(1, options.backoff_initial_ms);
    last_error.clear();
    STAS_LOG_INFO("connected to redis at {}", Address());
    return Status::Ok();
  }
};

RedisClient::RedisClient(RedisOptions options) : options_(std::move(options)), impl_(std::make_unique<Impl>(options_)) {}

RedisClient::~RedisClient() = default;

Result<RedisValue> RedisClient::Command(const std::vector<std::string>& argv) {
  if (argv.empty()) return InvalidArgument("empty redis command");
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(impl_->EnsureConnected());
  return impl_->Raw(argv);
}

Result<std::vector<Result<RedisValue>>> RedisClient::Pipeline(const std::vector<std::vector<std::string>>& commands) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Result<RedisValue>> out;
  if (commands.empty()) return out;
  STAS_RETURN_IF_ERROR(impl_->EnsureConnected());
  Impl& impl = *impl_;
  for (const auto& argv : commands) {
    if (argv.empty()) return InvalidArgument("empty redis command in a pipeline");
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (const auto& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(impl.ctx.get(), static_cast<int>(argv.size()), ptrs.data(), lens.data()) != REDIS_OK)
      return impl.ConnectionLost(__FILE__, __LINE__, "pipeline append");
  }
  out.reserve(commands.size());
  for (const auto& argv : commands) {
    void* raw = nullptr;
    if (redisGetReply(impl.ctx.get(), &raw) != REDIS_OK || raw == nullptr)
      return impl.ConnectionLost(__FILE__, __LINE__, "pipeline read (" + argv[0] + ")");
    ReplyPtr reply(static_cast<redisReply*>(raw));
    out.push_back(ConvertReply(reply.get(), argv[0]));
  }
  return out;
}

Result<RedisValue> RedisClient::Eval(const std::string& script, const std::vector<std::string>& keys,
                                     const std::vector<std::string>& args) {
  std::lock_guard<std::mutex> lock(mu_);
  STAS_RETURN_IF_ERROR(impl_->EnsureConnected());
  Impl& impl = *impl_;
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto it = impl.script_sha.find(script);
    if (it == impl.script_sha.end()) {
      STAS_ASSIGN_OR_RETURN(RedisValue sha, impl.Raw({"SCRIPT", "LOAD", script}));
      it = impl.script_sha.emplace(script, sha.AsString()).first;
    }
    std::vector<std::string> argv = {"EVALSHA", it->second, std::to_string(keys.size())};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = impl.Raw(argv);
    if (!r.ok() && IsRedisError(r.status(), "NOSCRIPT")) {
      impl.script_sha.erase(it);  // the server restarted and lost its script cache
      continue;
    }
    return r;
  }
  return Internal("redis: script could not be loaded");
}

Status RedisClient::Ping() {
  auto r = Command({"PING"});
  return r.ok() ? Status::Ok() : r.status();
}

bool RedisClient::connected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return impl_->ctx != nullptr;
}

std::string RedisClient::last_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return impl_->last_error;
}

}  // namespace stas::coordinator

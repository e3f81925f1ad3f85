// RedisClient: a small synchronous Redis client over hiredis (0.14 and newer).
//
// - Owns one connection (RAII); connects lazily on the first command.
// - Never throws and never crashes on a dead server: every call returns a Status. A server that cannot
//   be reached is kUnavailable; after a failed connect, further calls fail fast (without touching the
//   network) until the backoff delay has passed, so a caller on an event loop is never stalled for
//   more than one connect timeout. The delay doubles from backoff_initial_ms up to backoff_max_ms and
//   resets after a successful connect. A connection that breaks mid-command is dropped; the next call
//   reconnects at once. Commands are never retried automatically (a retry could apply twice).
// - AUTH (password, optionally with an ACL user) and SELECT run on every (re)connect.
// - Commands take argv vectors, so keys and values are binary-safe.
// - Key(name) applies the configured key prefix; the client never rewrites keys by itself.
// - Error replies become Status kInternal ("redis: <reply>"), except LOADING / BUSY / MASTERDOWN /
//   NOAUTH-style replies, which are kUnavailable (the server is there but cannot serve yet).
//
// Built without hiredis (STAS_HAVE_REDIS=0), every command returns NotImplemented("built without Redis").
// Thread-safety: all methods may be called from any thread; commands are serialized by a mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"

namespace stas::coordinator {

struct RedisOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string username;  // ACL user (Redis 6+); empty: plain AUTH <password>
  std::string password;  // empty: no AUTH
  int db = 0;
  std::string key_prefix = "stas:";
  int connect_timeout_ms = 1000;
  int command_timeout_ms = 5000;
  int backoff_initial_ms = 100;
  int backoff_max_ms = 5000;
};

// Parses "redis://[[user]:password@]host[:port][/db]" (also "HOST:PORT" without a scheme) into
// options with the connection fields set; other fields keep their defaults. InvalidArgument otherwise.
Result<RedisOptions> ParseRedisUrl(const std::string& url);

// One reply. Error replies never appear here (they are Statuses).
struct RedisValue {
  enum class Type { kNil, kString, kStatus, kInteger, kArray, kDouble };
  Type type = Type::kNil;
  std::string str;      // kString, kStatus, kDouble (as sent)
  int64_t integer = 0;  // kInteger
  std::vector<RedisValue> elements;

  bool is_nil() const { return type == Type::kNil; }
  bool is_array() const { return type == Type::kArray; }
  // The string of a kString/kStatus/kDouble, the decimal of a kInteger, "" for nil.
  std::string AsString() const;
  // kInteger, or a kString holding a decimal integer. InvalidArgument otherwise.
  Result<int64_t> AsInteger() const;
};

// True when `status` carries a Redis error reply starting with `prefix` (e.g. "BUSYGROUP", "NOSCRIPT").
bool IsRedisError(const Status& status, const std::string& prefix);

class RedisClient {
 public:
  explicit RedisClient(RedisOptions options);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  const RedisOptions& options() const { return options_; }
  // "host:port" for messages.
  std::string address() const;
  // The key prefix applied to `name`.
  std::string Key(const std::string& name) const { return options_.key_prefix + name; }

  // Runs one command. argv[0] is the command name.
  Result<RedisValue> Command(const std::vector<std::string>& argv);
  // Sends all commands, then reads all replies (one round trip). The outer Result fails when the
  // connection fails; each inner Result carries that command's reply or error reply.
  Result<std::vector<Result<RedisValue>>> Pipeline(const std::vector<std::vector<std::string>>& commands);
  // Runs a Lua script with EVALSHA, loading it (SCRIPT LOAD) on first use and again after NOSCRIPT
  // (the server restarted and forgot it).
  Result<RedisValue> Eval(const std::string& script, const std::vector<std::string>& keys,
                          const std::vector<std::string>& args);

  // PING; OK when the server answers.
  Status Ping();
  // True while a connection is established (it may still turn out to be broken).
  bool connected() const;
  // The last connection error ("" when none since the last successful command).
  std::string last_error() const;

 private:
  struct Impl;
  RedisOptions options_;
  mutable std::mutex mu_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stas::coordinator

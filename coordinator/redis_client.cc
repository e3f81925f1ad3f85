// The parts of RedisClient that do not need hiredis: URL parsing, reply helpers, and the
// "built without Redis" implementation. The hiredis connection lives in redis_client_redis.cc.
#include "coordinator/redis_client.h"

#include <cctype>
#include <cstdlib>

namespace stas::coordinator {

namespace {

Result<std::string> PercentDecode(const std::string& s, const char* what) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(s[i + 2])))
      return InvalidArgument(std::string("bad percent-escape in the redis URL's ") + what);
    out += static_cast<char>(std::strtol(s.substr(i + 1, 2).c_str(), nullptr, 16));
    i += 2;
  }
  return out;
}

Result<int> ParseBoundedInt(const std::string& s, int lo, int hi, const std::string& what) {
  if (s.empty() || s.size() > 9) return InvalidArgument("redis URL: " + what + " '" + s + "' is not a number");
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c)))
      return InvalidArgument("redis URL: " + what + " '" + s + "' is not a number");
  const int v = std::atoi(s.c_str());
  if (v < lo || v > hi)
    return InvalidArgument("redis URL: " + what + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

}  // namespace

Result<RedisOptions> ParseRedisUrl(const std::string& url) {
  RedisOptions o;
  std::string rest = url;
  const std::string scheme = "redis://";
  if (rest.rfind(scheme, 0) == 0) {
    rest = rest.substr(scheme.size());
  } else if (rest.find("://") != std::string::npos) {
    return InvalidArgument("redis URL '" + url + "' must start with redis:// (TLS and unix sockets are not supported)");
  }
  // userinfo
  const size_t at = rest.rfind('@');
  if (at != std::string::npos) {
    const std::string userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const size_t colon = userinfo.find(':');
    if (colon == std::string::npos) {
      // redis://password@host is a common shorthand
      STAS_ASSIGN_OR_RETURN(o.password, PercentDecode(userinfo, "password"));
    } else {
      STAS_ASSIGN_OR_RETURN(o.username, PercentDecode(userinfo.substr(0, colon), "user"));
      STAS_ASSIGN_OR_RETURN(o.password, PercentDecode(userinfo.substr(colon + 1), "password"));
    }
  }
  // path: /db
  const size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    const std::string db = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    if (!db.empty()) {
      STAS_ASSIGN_OR_RETURN(o.db, ParseBoundedInt(db, 0, 1 << 20, "database number"));
    }
  }
  // host[:port], [v6]:port
  std::string port;
  if (!rest.empty() && rest[0] == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) return InvalidArgument("redis URL '" + url + "': unterminated [IPv6] host");
    o.host = rest.substr(1, close - 1);
    const std::string after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return InvalidArgument("redis URL '" + url + "': expected ':' after the IPv6 host");
      port = after.substr(1);
    }
  } else {
    const size_t colon = rest.rfind(':');
    if (colon != std::string::npos) {
      o.host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
    } else {
      o.host = rest;
    }
  }
  if (o.host.empty()) return InvalidArgument("redis URL '" + url + "' has no host");
  if (!port.empty()) {
    STAS_ASSIGN_OR_RETURN(o.port, ParseBoundedInt(port, 1, 65535, "port"));
  }
  return o;
}

std::string RedisValue::AsString() const {
  switch (type) {
    case Type::kString:
    case Type::kStatus:
    case Type::kDouble: return str;
    case Type::kInteger: return std::to_string(integer);
    default: return "";
  }
}

Result<int64_t> RedisValue::AsInteger() const {
  if (type == Type::kInteger) return integer;
  if (type == Type::kString && !str.empty()) {
    char* end = nullptr;
    const long long v = std::strtoll(str.c_str(), &end, 10);
    if (end && *end == '\0') return static_cast<int64_t>(v);
  }
  return InvalidArgument("redis reply is not an integer");
}

bool IsRedisError(const Status& status, const std::string& prefix) {
  const std::string marker = "redis: ";
  const std::string& m = status.message();
  const size_t pos = m.find(marker);
  return !status.ok() && pos != std::string::npos && m.compare(pos + marker.size(), prefix.size(), prefix) == 0;
}

std::string RedisClient::address() const {
  if (options_.host.find(':') != std::string::npos) return "[" + options_.host + "]:" + std::to_string(options_.port);
  return options_.host + ":" + std::to_string(options_.port);
}

#if !STAS_HAVE_REDIS

struct RedisClient::Impl {};

namespace {
Status BuiltWithoutRedis() {
  return NotImplemented("built without Redis (hiredis was not found at configure time; rebuild with STAS_WITH_REDIS=ON)");
}
}  // namespace

RedisClient::RedisClient(RedisOptions options) : options_(std::move(options)) {}
RedisClient::~RedisClient() = default;
Result<RedisValue> RedisClient::Command(const std::vector<std::string>&) { return BuiltWithoutRedis(); }
Result<std::vector<Result<RedisValue>>> RedisClient::Pipeline(const std::vector<std::vector<std::string>>&) {
  return BuiltWithoutRedis();
}
Result<RedisValue> RedisClient::Eval(const std::string&, const std::vector<std::string>&,
                                     const std::vector<std::string>&) {
  return BuiltWithoutRedis();
}
Status RedisClient::Ping() { return BuiltWithoutRedis(); }
bool RedisClient::connected() const { return false; }
std::string RedisClient::last_error() const { return "built without Redis"; }

#endif

}  // namespace stas::coordinator

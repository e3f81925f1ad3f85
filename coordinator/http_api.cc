// The HTTP API's entry: request guards, routing, model checks and the public helpers. The
// surfaces live beside it: http_jobs_api.cc (native jobs and calibrations), http_service_api.cc
// (workers, health, stats, metrics), http_openai_api.cc (the OpenAI-compatible videos API).
#include "coordinator/http_api.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>

#include "common/fs.h"
#include "common/log.h"
#include "common/text.h"
#include "coordinator/auth.h"
#include "models/registry.h"
#include "steering/ma_channels.h"

#include "coordinator/http_support.h"

namespace stas::coordinator {

using namespace http_support;  // NOLINT: the helpers every surface shares
namespace fs = std::filesystem;

const char* StatusPageHtml();  // status_page.cc

// ------------------------------------------------------------------------------------ public helpers

namespace {

// Checkpoint folders' descriptions by path, kept while the folder's model_index.json keeps its size and
// modification time: listings resolve a model per row, and reading the folder's configs each time
// would cost far more than the row. Bounded; shared by the loop and the worker threads.
struct CachedFamily {
  fs::file_time_type mtime;
  uintmax_t size = 0;
  models::ModelDescription description;
};
std::mutex family_cache_mu;
std::map<std::string, CachedFamily> family_cache;
constexpr size_t kMaxCachedFamilies = 256;

Result<models::ModelDescription> InspectCheckpointFolder(const std::string& model) {
  std::error_code mtime_ec, size_ec;
  const fs::path index = fs::path(model) / "model_index.json";
  const auto mtime = fs::last_write_time(index, mtime_ec);
  const auto size = fs::file_size(index, size_ec);
  const bool cacheable = !mtime_ec && !size_ec;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(family_cache_mu);
    auto it = family_cache.find(model);
    if (it != family_cache.end() && it->second.mtime == mtime && it->second.size == size) return it->second.description;
  }
  auto description = models::InspectModel(model);
  if (!description.ok()) return InvalidArgument("model: " + description.status().message());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(family_cache_mu);
    if (family_cache.size() >= kMaxCachedFamilies) family_cache.clear();
    family_cache[model] = CachedFamily{mtime, size, *description};
  }
  return description;
}

}  // namespace

Result<models::ModelDescription> ResolveModelFamily(const std::string& model, const std::vector<std::string>& served) {
  if (models::IsBuiltInModel(model)) return models::InspectModel(model);
  std::error_code ec;
  if (fs::is_directory(model, ec)) return InspectCheckpointFolder(model);
  if (auto hinted = models::GuessFamilyFromName(model)) return *hinted;
  for (const auto& m : served)
    if (ModelMatches(model, m)) return models::FallbackDescription();
  return InvalidArgument("model: unknown model '" + model + "': use " + models::SupportedModelsText() +
                         ", or a model a connected worker group serves");
}

int FramesForSeconds(double seconds, int fps) {
  const double raw = seconds * fps;
  const long k = std::lround((raw - 1.0) / 4.0);
  return static_cast<int>(std::max(0L, k) * 4 + 1);
}

Result<Json> ParseMultipartForm(const std::string& content_type, const std::string& body) {
  std::string boundary;
  {
    const std::string lower = ToLower(content_type);
    const size_t p = lower.find("boundary=");
    if (p == std::string::npos) return InvalidArgument("multipart body without a boundary");
    boundary = content_type.substr(p + 9);
    const size_t semi = boundary.find(';');
    if (semi != std::string::npos) boundary = boundary.substr(0, semi);
    if (boundary.size() >= 2 && boundary.front() == '"' && boundary.back() == '"')
      boundary = boundary.substr(1, boundary.size() - 2);
    if (boundary.empty() || boundary.size() > 200) return InvalidArgument("multipart boundary is empty or too long");
  }
  const std::string delimiter = "--" + boundary;
  Json out = Json::object();
  size_t pos = body.find(delimiter);
  if (pos == std::string::npos) return InvalidArgument("multipart body does not contain its boundary");
  while (true) {
    pos += delimiter.size();
    if (body.compare(pos, 2, "--") == 0) break;  // closing delimiter
    if (body.compare(pos, 2, "\r\n") != 0) return InvalidArgument("malformed multipart body");
    pos += 2;
    const size_t header_end = body.find("\r\n\r\n", pos);
    if (header_end == std::string::npos) return InvalidArgument("malformed multipart part headers");
    const std::string headers = body.substr(pos, header_end - pos);
    const size_t content_start = header_end + 4;
    const size_t next = body.find("\r\n" + delimiter, content_start);
    if (next == std::string::npos) return InvalidArgument("unterminated multipart part");
    const std::string content = body.substr(content_start, next - content_start);
    // Content-Disposition: form-data; name="x"[; filename="y"]
    std::string name;
    bool is_file = false;
    std::stringstream hs(headers);
    std::string line;
    while (std::getline(hs, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (ToLower(line).rfind("content-disposition:", 0) != 0) continue;
      const size_t n = line.find("name=\"");
      if (n != std::string::npos) name = line.substr(n + 6, line.find('"', n + 6) - (n + 6));
      if (line.find("filename=") != std::string::npos) is_file = true;
    }
    if (name.empty()) return InvalidArgument("multipart part without a name");
    if (is_file) return InvalidArgument(name + ": file uploads are not supported (text-to-video only)");
    out[name] = content;
    pos = next + 2;
  }
  return out;
}

// ------------------------------------------------------------------------------------- request guards

namespace {

// The host part of a Host header or an Origin's authority, lower-cased, without port or brackets.
std::string HostName(std::string authority) {
  authority = ToLower(authority);
  if (!authority.empty() && authority[0] == '[') {
    const size_t close = authority.find(']');
    return close == std::string::npos ? authority : authority.substr(1, close - 1);
  }
  const size_t colon = authority.find(':');
  if (colon != authority.rfind(':')) return authority;  // a bare IPv6 address ("::1")
  return colon == std::string::npos ? authority : authority.substr(0, colon);
}

bool HostAllowed(const std::string& host, const std::vector<std::string>& allowed) {
  static const std::vector<std::string> kLoopback = {"localhost", "127.0.0.1", "::1"};
  for (const auto& a : allowed.empty() ? kLoopback : allowed)
    if (a == "*" || HostName(a) == host) return true;
  return false;
}

bool StateChanging(const std::string& method) { return method != "GET" && method != "HEAD" && method != "OPTIONS"; }

}  // namespace

std::optional<std::string> CheckHost(const std::map<std::string, std::string>& headers,
                                     const std::vector<std::string>& allowed_hosts) {
  auto it = headers.find("host");
  // Browsers always send Host; a client without one (HTTP/1.0 tools) is not a rebinding browser.
  if (it == headers.end()) return std::nullopt;
  const std::string host = HostName(it->second);
  if (HostAllowed(host, allowed_hosts)) return std::nullopt;
  return "Host '" + TruncateUtf8(it->second, 200) + "' is not served here (coordinator --allowed-hosts)";
}

std::optional<HttpResponse> HttpApi::Guard(const HttpRequest& req, bool openai) {
  auto fail = [&](int status, const std::string& message, const std::string& field = "") {
    return openai ? OpenAiError(status, message, field) : NativeError(status, message, field);
  };
  // Text crosses into JSON answers, the job store and logs: anything that is not UTF-8 stops here.
  const size_t q = req.target.find('?');
  for (const auto& part : SplitPath(req.target.substr(0, q)))
    if (!IsValidUtf8(part)) return fail(400, "the request path is not valid UTF-8 (after percent-decoding)", "path");
  if (q != std::string::npos)
    for (const auto& [k, v] : ParseQuery(req.target.substr(q + 1)))
      if (!IsValidUtf8(k) || !IsValidUtf8(v)) return fail(400, "the query string is not valid UTF-8", "query");
  if (!IsValidUtf8(req.body)) return fail(400, "the request body is not valid UTF-8", "body");
  for (const auto& [k, v] : req.headers)
    if (!IsValidUtf8(v)) return fail(400, "header '" + k + "' is not valid UTF-8");
  if (auto host = CheckHost(req.headers, options_.allowed_hosts)) return fail(421, *host);
  if (StateChanging(req.method)) {
    // A browser names the page that sent a request; only pages of an allowed host may change state.
    auto origin = req.headers.find("origin");
    if (origin != req.headers.end()) {
      const std::string& o = origin->second;
      const size_t scheme = o.find("://");
      if (o == "null" || scheme == std::string::npos || !HostAllowed(HostName(o.substr(scheme + 3)), options_.allowed_hosts))
        return fail(403, "requests from origin '" + TruncateUtf8(o, 200) + "' may not change state here");
    }
    // A body must say it is JSON (or a multipart form on POST /v1/videos): a cross-site text/plain
    // form cannot pass for an API call.
    if (!req.body.empty() || req.method == "POST") {
      auto ct = req.headers.find("content-type");
      const std::string type = ct == req.headers.end() ? "" : ToLower(ct->second.substr(0, ct->second.find(';')));
      const bool json = type == "application/json";
      const bool form = openai && type == "multipart/form-data";
      if (!json && !form)
        return fail(415, "the request body must be application/json" +
                             std::string(openai ? " or multipart/form-data" : "") + ", got '" +
                             TruncateUtf8(type.empty() ? "(none)" : type, 100) + "'");
    }
  }
  return std::nullopt;
}

// ------------------------------------------------------------------------------------------- HttpApi

HttpApi::HttpApi(JobQueue* queue, Dispatcher* dispatcher, const Clock* clock, HttpApiOptions options)
    : queue_(queue), dispatcher_(dispatcher), clock_(clock), options_(std::move(options)) {}

HttpResponse HttpApi::Handle(const HttpRequest& request) {
  try {
    return Route(request);
  } catch (const std::exception& e) {
    STAS_LOG_ERROR("HTTP {} {}: internal error: {}", request.method, request.target, e.what());
    return NativeError(500, std::string("internal error: ") + e.what());
  } catch (...) {
    STAS_LOG_ERROR("HTTP {} {}: unknown internal error", request.method, request.target);
    return NativeError(500, "internal error");
  }
}

bool HttpApi::ShouldOffload(const HttpRequest& request) const {
  // Everything but the static page, the health check (one PING) and the worker list (memory): the rest
  // wait on Redis or the filesystem.
  const std::string path = request.target.substr(0, request.target.find('?'));
  return !(path == "/" || path == "/healthz" || path == "/workers");
}

HttpResponse HttpApi::HandleOffLoop(const HttpRequest& request, std::vector<std::string> served_models,
                                    std::optional<Dispatcher::Snapshot> snapshot) {
  served_models_ = std::move(served_models);
  loop_snapshot_ = std::move(snapshot);
  return Handle(request);
}

std::vector<std::string> HttpApi::ServedModels() const {
  return dispatcher_ ? dispatcher_->ServedModels() : served_models_;
}

std::optional<Dispatcher::Snapshot> HttpApi::Snapshot() const {
  if (dispatcher_) return dispatcher_->snapshot();
  return loop_snapshot_;
}

HttpResponse HttpApi::Route(const HttpRequest& req) {
  const size_t q = req.target.find('?');
  const std::string path = req.target.substr(0, q);
  const auto query = q == std::string::npos ? std::map<std::string, std::string>() : ParseQuery(req.target.substr(q + 1));
  const auto parts = SplitPath(path);
  const bool openai = !parts.empty() && parts[0] == "v1";
  if (auto refused = Guard(req, openai)) return *refused;
  auto method_not_allowed = [&](const char* allow) {
    HttpResponse r = openai ? OpenAiError(405, "method " + req.method + " is not allowed on " + path)
                            : NativeError(405, "method " + req.method + " is not allowed on " + path);
    r.headers.push_back({"Allow", allow});
    return r;
  };

  if (parts.empty()) {
    if (req.method != "GET" && req.method != "HEAD") return method_not_allowed("GET");
    HttpResponse r;
    r.content_type = "text/html; charset=utf-8";
    r.body = StatusPageHtml();
    return r;
  }
  if (parts.size() == 1 && parts[0] == "healthz") {
    if (req.method != "GET" && req.method != "HEAD") return method_not_allowed("GET");
    return Healthz();
  }
  if (req.body.size() > options_.max_body_bytes)
    return NativeError(413, "request body of " + std::to_string(req.body.size()) + " bytes exceeds the limit of " +
                                std::to_string(options_.max_body_bytes));
  if (!options_.token.empty()) {
    auto it = req.headers.find("authorization");
    auto token = it == req.headers.end() ? std::nullopt : BearerToken(it->second);
    if (!token || !TokenMatches(*token, options_.token)) {
      HttpResponse r = openai ? OpenAiError(401, "missing or invalid bearer token", "", "invalid_api_key")
                              : NativeError(401, "missing or invalid bearer token (Authorization: Bearer <token>)");
      r.headers.push_back({"WWW-Authenticate", "Bearer realm=\"stas\""});
      return r;
    }
  }

  if (parts[0] == "jobs") {
    if (parts.size() == 1) {
      if (req.method == "POST") return PostJobs(req);
      if (req.method == "GET") return ListJobs(query);
      return method_not_allowed("GET, POST");
    }
    const std::string& id = parts[1];
    if (parts.size() == 2 && id == "lookup") {
      if (req.method == "POST") return LookupJobs(req);
      return method_not_allowed("POST");
    }
    if (parts.size() == 2) {
      if (req.method == "GET") return GetJob(id);
      if (req.method == "DELETE") return CancelJob(id);
      return method_not_allowed("GET, DELETE");
    }
    if (parts.size() == 3 && parts[2] == "video") {
      if (req.method != "GET" && req.method != "HEAD") return method_not_allowed("GET");
      return JobVideo(id, false);
    }
  } else if (parts[0] == "calibrations" && parts.size() <= 2) {
    if (parts.size() == 1) {
      if (req.method == "POST") return PostCalibration(req);
      return method_not_allowed("POST");
    }
    if (req.method == "GET") return GetCalibration(parts[1]);
    return method_not_allowed("GET");
  } else if (parts.size() == 1 && parts[0] == "workers") {
    if (req.method != "GET") return method_not_allowed("GET");
    return Workers();
  } else if (parts.size() == 1 && parts[0] == "counts") {
    if (req.method != "GET") return method_not_allowed("GET");
    return Counts(query);
  } else if (parts.size() == 1 && parts[0] == "stats") {
    if (req.method != "GET") return method_not_allowed("GET");
    return Stats();
  } else if (parts.size() == 1 && parts[0] == "metrics") {
    if (req.method != "GET") return method_not_allowed("GET");
    return Metrics();
  } else if (openai && parts.size() >= 2 && parts[1] == "videos") {
    if (parts.size() == 2) {
      if (req.method == "POST") return CreateVideo(req);
      if (req.method == "GET") return ListVideos(query);
      return method_not_allowed("GET, POST");
    }
    const std::string id = StripVideoPrefix(parts[2]);
    if (parts.size() == 3) {
      if (req.method == "GET") return GetVideo(id);
      if (req.method == "DELETE") return DeleteVideo(id);
      return method_not_allowed("GET, DELETE");
    }
    if (parts.size() == 4 && parts[3] == "content") {
      if (req.method != "GET" && req.method != "HEAD") return method_not_allowed("GET");
      auto variant = query.find("variant");
      if (variant != query.end() && variant->second != "video")
        return OpenAiError(400, "variant '" + variant->second + "' is not available; only 'video'", "variant");
      return JobVideo(id, true);
    }
  }
  return openai ? OpenAiError(404, "no such endpoint: " + path, "", "not_found") : NativeError(404, "no such endpoint: " + path);
}

// ------------------------------------------------------------------------------------ native: jobs

Status HttpApi::CheckModel(const jobspec::RenderSpec& spec, models::ModelDescription* description) {
  const auto served = dispatcher_ ? dispatcher_->ServedModels() : served_models_;
  STAS_ASSIGN_OR_RETURN(models::ModelDescription d, ResolveModelFamily(spec.model, served));
  STAS_RETURN_IF_ERROR(CheckForFamily(spec, d));
  if (description) *description = std::move(d);
  return Status::Ok();
}

Status HttpApi::CheckForFamily(const jobspec::RenderSpec& spec, const models::ModelDescription& model) const {
  STAS_RETURN_IF_ERROR(spec.ValidateFor(model));
  return spec.CheckCostLimits(model, jobspec::CostLimitsFor(model, options_.cost_limits));
}


}  // namespace stas::coordinator

#include "coordinator/http_api.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <set>
#include <sstream>

#include "common/fs.h"
#include "common/log.h"
#include "common/text.h"
#include "coordinator/auth.h"
#include "models/registry.h"
#include "steering/ma_channels.h"

namespace stas::coordinator {

const char* StatusPageHtml();  // status_page.cc

namespace {

namespace fs = std::filesystem;

// ------------------------------------------------------------------------------------ small helpers

std::string ToLower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string PercentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::map<std::string, std::string> ParseQuery(const std::string& query) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start <= query.size()) {
    size_t amp = query.find('&', start);
    if (amp == std::string::npos) amp = query.size();
    const std::string pair = query.substr(start, amp - start);
    if (!pair.empty()) {
      const size_t eq = pair.find('=');
      out[PercentDecode(pair.substr(0, eq))] = eq == std::string::npos ? "" : PercentDecode(pair.substr(eq + 1));
    }
    start = amp + 1;
  }
  return out;
}

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> parts;
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '/'))
    if (!part.empty()) parts.push_back(PercentDecode(part));
  return parts;
}

std::string IsoTime(int64_t ms) {
  if (ms <= 0) return "";
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

Json TimeOrNull(int64_t ms) { return ms > 0 ? Json(IsoTime(ms)) : Json(nullptr); }

HttpResponse JsonResponse(int status, const Json& body) {
  HttpResponse r;
  r.status = status;
  r.body = SafeDump(body);
  return r;
}

HttpResponse NativeError(int status, const std::string& message, const std::string& field = "") {
  Json body = {{"error", message}};
  if (!field.empty()) body["field"] = field;
  return JsonResponse(status, body);
}

HttpResponse OpenAiError(int status, const std::string& message, const std::string& param = "",
                         const std::string& code = "") {
  Json err = {{"message", message},
              {"type", status >= 500 ? "server_error" : "invalid_request_error"},
              {"param", param.empty() ? Json(nullptr) : Json(param)},
              {"code", code.empty() ? Json(nullptr) : Json(code)}};
  return JsonResponse(status, {{"error", err}});
}

int HttpStatusFor(const Status& s) {
  switch (s.code()) {
    case StatusCode::kInvalidArgument: return 400;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kUnavailable: return 503;
    case StatusCode::kTimeout: return 504;
    case StatusCode::kAborted: return 409;
    case StatusCode::kNotImplemented: return 501;
    default: return 500;
  }
}

// The spec field an error message is about (RenderSpec/StasOptions messages name it in words).
std::string GuessField(std::string message) {
  const std::string prefix = "render spec: ";
  if (message.rfind(prefix, 0) == 0) message = message.substr(prefix.size());
  if (message.rfind("unknown stas setting '", 0) == 0) {
    const size_t q = message.find('\'', 22);
    return "stas." + message.substr(22, q == std::string::npos ? std::string::npos : q - 22);
  }
  for (const char* marker : {"unknown field '", "field '"}) {
    const size_t p = message.find(marker);
    if (p != std::string::npos) {
      const size_t start = p + std::string(marker).size();
      const size_t q = message.find('\'', start);
      if (q != std::string::npos) return message.substr(start, q - start);
    }
  }
  static const std::pair<const char*, const char*> kPrefixes[] = {
      {"negative prompt", "negative_prompt"}, {"prompt", "prompt"},   {"model", "model"},
      {"frames", "frames"},                   {"height", "height"},   {"width", "width"},
      {"steps", "steps"},                     {"fps", "fps"},         {"guidance", "guidance"},
      {"shift", "shift"},                     {"output name", "output_name"}, {"dataset", "dataset"},
      {"seed", "seed"},                       {"priority", "priority"}, {"stas", "stas"},
      {"boundary_mode", "stas.boundary_mode"}, {"branches", "stas.branches"}};
  for (const auto& [words, field] : kPrefixes)
    if (message.rfind(words, 0) == 0) return field;
  // "<field>: what is wrong"
  const size_t colon = message.find(": ");
  if (colon != std::string::npos && colon > 0 &&
      std::all_of(message.begin(), message.begin() + colon, [](char c) {
        return std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_' ||
               c == '.' || c == '[' || c == ']';
      }))
    return message.substr(0, colon);
  return "";
}

bool IsJobId(const std::string& id) {
  if (id.size() != 32) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) && !std::isupper(static_cast<unsigned char>(c)); });
}

// OpenAI clients may prefix ids; ours are bare 32-hex job ids.
std::string StripVideoPrefix(const std::string& id) { return id.rfind("video_", 0) == 0 ? id.substr(6) : id; }

Result<int64_t> ParseQueryInt(const std::map<std::string, std::string>& q, const std::string& key, int64_t fallback,
                              int64_t lo, int64_t hi) {
  auto it = q.find(key);
  if (it == q.end() || it->second.empty()) return fallback;
  const std::string& v = it->second;
  if (v.size() > 12 || !std::all_of(v.begin(), v.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return InvalidArgument(key + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  const int64_t n = std::stoll(v);
  if (n < lo || n > hi)
    return InvalidArgument(key + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return n;
}

Status CheckQueryKeys(const std::map<std::string, std::string>& q, std::initializer_list<const char*> allowed) {
  for (const auto& [k, v] : q)
    if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return k == a; }))
      return InvalidArgument("unknown query parameter '" + k + "'");
  return Status::Ok();
}

// A Prometheus label value: backslash, quote and newline escaped.
std::string PromLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

double ProgressFraction(const JobRecord& r) {
  if (r.state == JobState::kDone) return 1.0;
  if (r.steps <= 0) return 0.0;
  return std::clamp(static_cast<double>(r.step) / r.steps, 0.0, 1.0);
}

// The spec's resolved size and length (for OpenAI objects of jobs submitted natively).
struct Shape {
  int width = 0, height = 0, frames = 0, fps = 16;
};
Shape ShapeOf(const JobRecord& r) {
  Shape s;
  auto j = ParseJson(r.spec, "spec");
  if (!j.ok()) return s;
  auto spec = worker::RenderSpec::FromJson(*j);
  if (!spec.ok()) return s;
  auto family = ResolveModelFamily(spec->model, {});
  spec->ResolveDefaults(family.ok() ? *family : models::FallbackDescription());
  s.width = spec->width.value_or(0);
  s.height = spec->height.value_or(0);
  s.frames = spec->frames.value_or(0);
  s.fps = spec->fps.value_or(16);
  return s;
}

std::string FormatSeconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g", s);
  return buf;
}

}  // namespace

// ------------------------------------------------------------------------------------ public helpers

Result<models::ModelDescription> ResolveModelFamily(const std::string& model, const std::vector<std::string>& served) {
  if (models::IsBuiltInModel(model)) return models::InspectModel(model);
  std::error_code ec;
  if (fs::is_directory(model, ec)) {
    auto description = models::InspectModel(model);
    if (!description.ok()) return InvalidArgument("model: " + description.status().message());
    return description;
  }
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
  return request.method == "POST" && request.body.size() > (16u << 10) &&
         request.target.substr(0, request.target.find('?')) == "/jobs";
}

HttpResponse HttpApi::HandleOffLoop(const HttpRequest& request, std::vector<std::string> served_models) {
  served_models_ = std::move(served_models);
  return Handle(request);
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

Status HttpApi::CheckModel(const worker::RenderSpec& spec, models::ModelDescription* description) {
  const auto served = dispatcher_ ? dispatcher_->ServedModels() : served_models_;
  STAS_ASSIGN_OR_RETURN(models::ModelDescription d, ResolveModelFamily(spec.model, served));
  STAS_RETURN_IF_ERROR(CheckForFamily(spec, d));
  if (description) *description = std::move(d);
  return Status::Ok();
}

Status HttpApi::CheckForFamily(const worker::RenderSpec& spec, const models::ModelDescription& model) const {
  STAS_RETURN_IF_ERROR(spec.ValidateFor(model));
  return spec.CheckCostLimits(model, worker::CostLimitsFor(model, options_.cost_limits));
}

// ------------------------------------------------------------------------------------ calibrations

std::string HttpApi::CalibrationPath(const std::string& id) const {
  return options_.storage + "/.stas/calibrations/" + id + ".json";
}

Status HttpApi::ResolveCalibration(worker::RenderSpec& spec) const {
  if (spec.stas.calibration.empty() || !spec.stas.channels.is_null()) return Status::Ok();
  auto stored = ReadJsonFile(CalibrationPath(spec.stas.calibration));
  if (!stored.ok())
    return InvalidArgument("stas calibration " + spec.stas.calibration + " is not known here (POST /calibrations)");
  spec.stas.channels = *stored;
  return spec.Validate();
}

HttpResponse HttpApi::PostCalibration(const HttpRequest& req) {
  if (req.body.size() > steering::kMaxInlineChannelsBytes)
    return NativeError(413, "a calibration is at most " + std::to_string(steering::kMaxInlineChannelsBytes / 1024) +
                                " KiB", "body");
  auto body = ParseJson(req.body, "the calibration");
  if (!body.ok()) return NativeError(400, body.status().message(), "body");
  auto channels = steering::MaChannelSet::FromJson(*body);
  if (!channels.ok()) return NativeError(400, "not a calibration (ma_channels.json): " + channels.status().message(), "body");
  // Content-addressed: the id is a hash of the canonical form, so the same upload gets the same id.
  const std::string canonical = SafeDump(channels->ToJson());
  worker::RenderSpec identity;
  identity.prompt = canonical;
  const std::string id = identity.JobId();
  const std::string path = CalibrationPath(id);
  auto existing = ReadFile(path);
  if (existing.ok()) {
    if (*existing != canonical) return NativeError(409, "calibration id " + id + " holds other contents");
    return JsonResponse(200, {{"id", id}, {"created", false}});
  }
  std::error_code ec;
  std::filesystem::create_directories(options_.storage + "/.stas/calibrations", ec);
  Status written = ec ? IoError("cannot create the calibration folder: " + ec.message())
                      : WriteFileAtomically(path, canonical);
  if (!written.ok()) return NativeError(500, written.message());
  STAS_LOG_INFO("stored calibration {} ({} bytes, model '{}')", id, canonical.size(), channels->model);
  return JsonResponse(201, {{"id", id}, {"created", true}});
}

HttpResponse HttpApi::GetCalibration(const std::string& id) {
  if (id.size() != 32 || id.find_first_not_of("0123456789abcdef") != std::string::npos)
    return NativeError(400, "a calibration id is 32 hex characters", "id");
  auto stored = ReadJsonFile(CalibrationPath(id));
  if (!stored.ok()) return NativeError(404, "no calibration " + id);
  return JsonResponse(200, *stored);
}

HttpResponse HttpApi::PostJobs(const HttpRequest& req) {
  Json body;
  try {
    body = Json::parse(req.body);
  } catch (const Json::exception& e) {
    return NativeError(400, std::string("malformed JSON: ") + e.what(), "body");
  }
  if (!body.is_object()) return NativeError(400, "the body must be a JSON object (a job, or {\"jobs\": [...]})", "body");
  const bool batch = body.contains("jobs");
  std::vector<Json> items;
  std::string batch_dataset;
  if (batch) {
    for (auto it = body.begin(); it != body.end(); ++it)
      if (it.key() != "jobs" && it.key() != "dataset" && it.key() != "dry_run")
        return NativeError(400, "unknown field '" + it.key() + "' in a batch (allowed: jobs, dataset, dry_run)", it.key());
    if (body.contains("dry_run") && !body["dry_run"].is_boolean())
      return NativeError(400, "'dry_run' must be true or false", "dry_run");
    if (!body["jobs"].is_array() || body["jobs"].empty())
      return NativeError(400, "'jobs' must be a non-empty array of job objects", "jobs");
    if (body["jobs"].size() > options_.max_batch)
      return NativeError(413, "a batch holds at most " + std::to_string(options_.max_batch) + " jobs", "jobs");
    if (body.contains("dataset")) {
      if (!body["dataset"].is_string()) return NativeError(400, "'dataset' must be a string", "dataset");
      batch_dataset = body["dataset"].get<std::string>();
    }
    for (const auto& j : body["jobs"]) items.push_back(j);
  } else {
    items.push_back(body);
  }
  // Validate everything first: bad input changes nothing. Each distinct model is resolved once per
  // request (a checkpoint folder's model_index.json is read once, not once per job).
  const auto served = dispatcher_ ? dispatcher_->ServedModels() : served_models_;
  std::map<std::string, Result<models::ModelDescription>> families;
  std::vector<worker::RenderSpec> specs;
  specs.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string where = batch ? "jobs[" + std::to_string(i) + "]" : "";
    Json item = items[i];
    if (batch && item.is_object() && !batch_dataset.empty() && (!item.contains("dataset") || item["dataset"].is_null()))
      item["dataset"] = batch_dataset;
    auto spec = worker::RenderSpec::FromJson(item);
    Status st = spec.ok() ? ResolveCalibration(*spec) : spec.status();
    if (st.ok()) {
      auto family = families.find(spec->model);
      if (family == families.end())
        family = families.emplace(spec->model, ResolveModelFamily(spec->model, served)).first;
      st = family->second.ok() ? CheckForFamily(*spec, *family->second) : family->second.status();
    }
    if (!st.ok()) {
      const std::string field = GuessField(st.message());
      HttpResponse r = NativeError(400, (where.empty() ? "" : where + ": ") + st.message(),
                                   where.empty() ? field : field.empty() ? where : where + "." + field);
      return r;
    }
    specs.push_back(std::move(*spec));
  }
  // Two jobs of one batch writing the same file would collide only after both rendered.
  std::map<std::pair<std::string, std::string>, size_t> names;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].output_name.empty()) continue;
    auto [it, fresh] = names.emplace(std::make_pair(specs[i].dataset, specs[i].output_name), i);
    if (!fresh)
      return NativeError(400, "jobs[" + std::to_string(i) + "]: output name '" + specs[i].output_name +
                                  "' is already used by jobs[" + std::to_string(it->second) + "]",
                         "jobs[" + std::to_string(i) + "].output_name");
  }
  if (batch && body.value("dry_run", false))
    return JsonResponse(200, {{"dry_run", true}, {"valid", specs.size()}});
  std::vector<SubmitItem> submit;
  submit.reserve(specs.size());
  for (auto& spec : specs) submit.push_back({std::move(spec), Json()});
  size_t stored = 0;
  auto results = queue_->SubmitMany(submit, &stored);
  if (!results.ok()) {
    HttpResponse resp = NativeError(HttpStatusFor(results.status()), results.status().message());
    if (stored > 0) {
      Json b = Json::parse(resp.body);
      Json ids = Json::array();
      for (size_t i = 0; i < stored; ++i) ids.push_back(submit[i].spec.JobId());
      b["submitted"] = ids;  // a partial batch: these are queued; submitting again is idempotent
      resp.body = SafeDump(b);
    }
    return resp;
  }
  Json jobs = Json::array();
  std::vector<std::string> ids;
  int created = 0;
  for (const auto& r : *results) {
    const bool is_new = r.outcome != SubmitOutcome::kExisting;
    created += is_new ? 1 : 0;
    ids.push_back(r.id);
    jobs.push_back({{"id", r.id},
                    {"state", JobStateName(r.record.state)},
                    {"created", is_new},
                    {"resubmitted", r.outcome == SubmitOutcome::kResubmitted}});
  }
  if (dispatcher_) dispatcher_->Poke();
  const int status = created > 0 ? 201 : 200;
  if (!batch) return JsonResponse(status, jobs[0]);
  return JsonResponse(status, {{"ids", ids},
                               {"jobs", jobs},
                               {"created", created},
                               {"existing", static_cast<int>(ids.size()) - created}});
}

Json HttpApi::JobJson(const JobRecord& r, bool with_spec) const {
  Json j = {{"id", r.id},
            {"state", JobStateName(r.state)},
            {"progress",
             {{"step", r.step}, {"steps", r.steps}, {"stage", r.stage}, {"percent", std::floor(ProgressFraction(r) * 1000) / 10}}},
            {"attempts", r.attempts},
            {"max_attempts", queue_->options().max_attempts},
            {"priority", r.priority},
            {"dataset", r.dataset},
            {"model", r.model},
            {"worker", r.worker.empty() ? Json(nullptr) : Json(r.worker)},
            {"error", r.error.empty() ? Json(nullptr) : Json(r.error)},
            {"created_at", TimeOrNull(r.created_ms)},
            {"started_at", TimeOrNull(r.started_ms)},
            {"finished_at", TimeOrNull(r.finished_ms)},
            {"retry_at", TimeOrNull(r.retry_at_ms)}};
  auto spec = ParseJson(r.spec, "spec");
  if (spec.ok()) j["prompt"] = spec->value("prompt", "");
  if (r.state == JobState::kDone) {
    j["output"] = r.output;
    j["video_url"] = "/jobs/" + r.id + "/video";
    if (!r.manifest.empty()) j["manifest"] = r.manifest;
  }
  if (!r.timings.empty()) {
    auto t = ParseJson(r.timings, "timings");
    if (t.ok()) j["timings"] = *t;
  }
  if (with_spec && spec.ok()) j["spec"] = *spec;
  return j;
}

HttpResponse HttpApi::ListJobs(const std::map<std::string, std::string>& query) {
  Status keys = CheckQueryKeys(query, {"state", "dataset", "limit", "offset", "after"});
  if (!keys.ok()) return NativeError(400, keys.message(), "query");
  ListQuery q;
  auto state = query.find("state");
  if (state != query.end() && !state->second.empty()) {
    q.state = ParseJobState(state->second);
    if (!q.state)
      return NativeError(400, "state must be one of queued, running, done, failed, cancelled, dead; got '" +
                                  state->second + "'", "state");
  }
  auto dataset = query.find("dataset");
  if (dataset != query.end()) q.dataset = dataset->second;
  auto limit = ParseQueryInt(query, "limit", 100, 1, 1000);
  if (!limit.ok()) return NativeError(400, limit.status().message(), "limit");
  auto offset = ParseQueryInt(query, "offset", 0, 0, 1'000'000'000);
  if (!offset.ok()) return NativeError(400, offset.status().message(), "offset");
  q.limit = *limit;
  q.offset = *offset;
  auto after = query.find("after");
  if (after != query.end() && !after->second.empty()) {
    if (!IsJobId(after->second)) return NativeError(400, "after must be a job id, got '" + after->second + "'", "after");
    if (query.count("offset")) return NativeError(400, "give either after or offset, not both", "after");
    q.after = after->second;
  }
  auto records = queue_->List(q);
  if (!records.ok()) {
    const int code = records.status().code() == StatusCode::kInvalidArgument ? 400 : HttpStatusFor(records.status());
    return NativeError(code, records.status().message(), code == 400 ? "after" : "");
  }
  Json jobs = Json::array();
  for (const auto& r : *records) jobs.push_back(JobJson(r, false));
  Json body = {{"jobs", jobs}, {"count", jobs.size()}, {"offset", q.offset}, {"limit", q.limit}};
  // The cursor of the next page (GET /jobs?...&after=<next>); null on a short page.
  body["next"] = static_cast<int64_t>(records->size()) == q.limit ? Json(records->back().id) : Json(nullptr);
  IndexRef index = !q.dataset.empty() && q.state ? IndexRef::DatasetState(q.dataset, *q.state)
                   : !q.dataset.empty()          ? IndexRef::Dataset(q.dataset)
                   : q.state                     ? IndexRef::State(*q.state)
                                                 : IndexRef::All();
  auto total = queue_->store().Count(index);
  if (total.ok()) body["total"] = *total;
  return JsonResponse(200, body);
}

HttpResponse HttpApi::Counts(const std::map<std::string, std::string>& query) {
  Status keys = CheckQueryKeys(query, {"dataset"});
  if (!keys.ok()) return NativeError(400, keys.message(), "query");
  const std::string dataset = query.count("dataset") ? query.at("dataset") : "";
  auto counts = queue_->Counts(dataset);
  if (!counts.ok()) return NativeError(HttpStatusFor(counts.status()), counts.status().message());
  Json by_state = Json::object();
  int64_t total = 0, finished = 0;
  for (const auto& [state, n] : *counts) {
    by_state[JobStateName(state)] = n;
    total += n;
    if (IsTerminal(state)) finished += n;
  }
  const int64_t done = counts->count(JobState::kDone) ? counts->at(JobState::kDone) : 0;
  return JsonResponse(200, {{"dataset", dataset.empty() ? Json(nullptr) : Json(dataset)},
                            {"counts", by_state},
                            {"total", total},
                            {"finished", finished},
                            {"percent_done", total > 0 ? std::floor(1000.0 * done / total) / 10 : 0.0}});
}

HttpResponse HttpApi::LookupJobs(const HttpRequest& req) {
  Json body;
  try {
    body = Json::parse(req.body);
  } catch (const Json::exception& e) {
    return NativeError(400, std::string("malformed JSON: ") + e.what(), "body");
  }
  if (!body.is_object() || !body.contains("ids") || !body["ids"].is_array())
    return NativeError(400, "the body must be {\"ids\": [job ids]}", "ids");
  if (body["ids"].size() > options_.max_batch)
    return NativeError(413, "a lookup holds at most " + std::to_string(options_.max_batch) + " ids", "ids");
  std::vector<std::string> ids;
  for (const auto& id : body["ids"]) {
    if (!id.is_string() || !IsJobId(id.get<std::string>()))
      return NativeError(400, "ids must be job ids (32 lower-case hex characters)", "ids");
    ids.push_back(id.get<std::string>());
  }
  auto records = queue_->store().GetMany(ids);
  if (!records.ok()) return NativeError(HttpStatusFor(records.status()), records.status().message());
  Json jobs = Json::array();
  std::set<std::string> found;
  for (const auto& r : *records) {
    jobs.push_back(JobJson(r, false));
    found.insert(r.id);
  }
  Json missing = Json::array();
  for (const auto& id : ids)
    if (!found.count(id)) missing.push_back(id);
  return JsonResponse(200, {{"jobs", jobs}, {"missing", missing}});
}

HttpResponse HttpApi::GetJob(const std::string& id) {
  if (!IsJobId(id)) return NativeError(404, "no job '" + id + "' (job ids are 32 lower-case hex characters)");
  auto r = queue_->Get(id);
  if (!r.ok()) return NativeError(HttpStatusFor(r.status()), r.status().message());
  if (!*r) return NativeError(404, "no job '" + id + "'");
  return JsonResponse(200, JobJson(**r, true));
}

HttpResponse HttpApi::CancelJob(const std::string& id) {
  if (!IsJobId(id)) return NativeError(404, "no job '" + id + "'");
  auto r = queue_->Cancel(id);
  if (!r.ok()) return NativeError(HttpStatusFor(r.status()), r.status().message());
  const auto& [outcome, record] = *r;
  if (outcome == CancelOutcome::kAlreadyFinished) {
    HttpResponse resp = NativeError(409, "job " + id + " is already " + JobStateName(record.state) + "; nothing to cancel");
    Json b = Json::parse(resp.body);
    b["state"] = JobStateName(record.state);
    resp.body = SafeDump(b);
    return resp;
  }
  Json body = JobJson(record, false);
  body["cancelled"] = outcome == CancelOutcome::kCancelled;
  return JsonResponse(200, body);
}

Result<std::string> HttpApi::VideoPath(const JobRecord& r) const {
  if (r.output.empty()) return NotFound("job " + r.id + " recorded no output path");
  std::error_code ec;
  fs::path p(r.output);
  if (p.is_relative()) p = fs::path(options_.storage) / p;
  const fs::path root = fs::weakly_canonical(fs::path(options_.storage), ec);
  const fs::path file = fs::weakly_canonical(p, ec);
  const std::string root_s = root.string(), file_s = file.string();
  if (options_.storage.empty() || file_s.size() <= root_s.size() || file_s.compare(0, root_s.size(), root_s) != 0 ||
      (root_s.back() != '/' && file_s[root_s.size()] != '/'))
    return NotFound("job " + r.id + "'s output '" + r.output + "' is not under the storage folder");
  if (!fs::is_regular_file(file, ec)) return NotFound("job " + r.id + "'s video file is missing: " + file_s);
  return file_s;
}

HttpResponse HttpApi::JobVideo(const std::string& id, bool openai) {
  auto error = [&](int status, const std::string& message) {
    return openai ? OpenAiError(status, message, "", status == 404 ? "not_found" : "") : NativeError(status, message);
  };
  if (!IsJobId(id)) return error(404, "no job '" + id + "'");
  auto r = queue_->Get(id);
  if (!r.ok()) return error(HttpStatusFor(r.status()), r.status().message());
  if (!*r) return error(404, "no job '" + id + "'");
  const JobRecord& rec = **r;
  if (rec.state != JobState::kDone)
    return error(409, "job " + id + " is " + JobStateName(rec.state) + "; its video is available once it is done");
  auto path = VideoPath(rec);
  if (!path.ok()) return error(404, path.status().message());
  HttpResponse resp;
  resp.content_type = "video/mp4";
  resp.file_path = *path;
  resp.headers.push_back({"Content-Disposition", "inline; filename=\"" + fs::path(*path).filename().string() + "\""});
  return resp;
}

// --------------------------------------------------------------------------------- native: service

HttpResponse HttpApi::Workers() {
  Json workers = dispatcher_ ? dispatcher_->WorkersJson() : Json::array();
  return JsonResponse(200, {{"workers", workers}, {"count", workers.size()}});
}

HttpResponse HttpApi::Healthz() {
  Status st = queue_->store().Ping();
  if (!st.ok()) return JsonResponse(503, {{"status", "unavailable"}, {"redis", st.message()}});
  Json body = {{"status", "ok"}, {"redis", "ok"}};
  if (dispatcher_) body["workers"] = dispatcher_->snapshot().workers;
  return JsonResponse(200, body);
}

HttpResponse HttpApi::Stats() {
  JobStore& store = queue_->store();
  Json body = {{"lease_ms", queue_->options().lease_ms}, {"max_attempts", queue_->options().max_attempts},
               {"time", IsoTime(clock_->NowMs())}};
  Status st = store.Ping();
  body["redis"] = st.ok() ? "ok" : st.message();
  if (st.ok()) {
    Json jobs = Json::object();
    for (JobState s : kAllJobStates) {
      auto n = store.Count(IndexRef::State(s));
      jobs[JobStateName(s)] = n.ok() ? *n : 0;
    }
    body["jobs"] = jobs;
    auto totals = store.Stats();
    if (totals.ok()) body["totals"] = *totals;
    auto delayed = store.DelayedCount();
    if (delayed.ok()) body["delayed"] = *delayed;
    auto queues = QueuesJson();
    if (queues.ok()) {
      body["queues"] = queues->first;
      body["models_without_group"] = queues->second;
    }
    auto datasets = store.Datasets();
    if (datasets.ok()) body["datasets"] = *datasets;
  }
  if (dispatcher_) {
    const auto snap = dispatcher_->snapshot();
    body["workers"] = {{"connected", snap.workers}, {"busy", snap.busy}, {"waiting", snap.waiting}};
    body["pending_results"] = snap.pending_results;
    body["steps_per_second"] = snap.steps_per_second;
    body["dispatched"] = snap.dispatched;
  }
  return JsonResponse(200, body);
}

Result<std::pair<Json, Json>> HttpApi::QueuesJson() {
  STAS_ASSIGN_OR_RETURN(auto depths, queue_->store().ReadyDepths());
  std::set<std::string> served;
  if (dispatcher_)
    for (const auto& m : dispatcher_->ServedModels()) served.insert(ReadyQueueName(m));
  Json queues = Json::object();
  Json orphans = Json::array();
  for (const auto& [name, depth] : depths) {
    const bool is_served = served.count(name) > 0;
    if (depth == 0 && !is_served) continue;  // a queue of the past
    queues[name] = {{"depth", depth}, {"served", is_served}};
    if (depth > 0 && !is_served) orphans.push_back(name);
  }
  for (const auto& name : served)
    if (!queues.contains(name)) queues[name] = {{"depth", 0}, {"served", true}};
  return std::make_pair(queues, orphans);
}

HttpResponse HttpApi::Metrics() {
  std::ostringstream out;
  auto metric = [&](const char* name, const char* type, const char* help) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  JobStore& store = queue_->store();
  const bool up = store.Ping().ok();
  metric("stas_redis_up", "gauge", "1 when the coordinator can reach Redis.");
  out << "stas_redis_up " << (up ? 1 : 0) << "\n";
  if (up) {
    metric("stas_jobs", "gauge", "Jobs by state.");
    for (JobState s : kAllJobStates) {
      auto n = store.Count(IndexRef::State(s));
      out << "stas_jobs{state=\"" << JobStateName(s) << "\"} " << (n.ok() ? *n : 0) << "\n";
    }
    auto totals = store.Stats();
    std::map<std::string, int64_t> t = totals.ok() ? *totals : std::map<std::string, int64_t>();
    struct Counter { const char* name; const char* key; const char* help; };
    static const Counter kCounters[] = {
        {"stas_jobs_submitted_total", "submitted", "Jobs submitted (new or re-queued after failure)."},
        {"stas_jobs_completed_total", "completed", "Jobs completed (output committed)."},
        {"stas_jobs_failed_total", "failed", "Jobs failed without retry (not retryable)."},
        {"stas_jobs_dead_total", "dead", "Jobs dead-lettered after max attempts."},
        {"stas_jobs_cancelled_total", "cancelled", "Jobs cancelled."},
        {"stas_job_retries_total", "retried", "Attempts retried after a failure or an expired lease."},
        {"stas_lease_expiries_total", "lease_expired", "Leases that expired (a worker group stopped heartbeating)."},
        {"stas_steps_total", "steps", "Denoising steps reported by worker groups."}};
    for (const auto& c : kCounters) {
      metric(c.name, "counter", c.help);
      out << c.name << " " << t[c.key] << "\n";
    }
    auto delayed = store.DelayedCount();
    metric("stas_jobs_delayed", "gauge", "Queued jobs waiting for their retry backoff.");
    out << "stas_jobs_delayed " << (delayed.ok() ? *delayed : 0) << "\n";
    auto queues = QueuesJson();
    if (queues.ok()) {
      metric("stas_queue_depth", "gauge", "Jobs waiting in a model's ready queue.");
      for (const auto& [name, q] : queues->first.items())
        out << "stas_queue_depth{model=\"" << PromLabel(name) << "\",served=\"" << (q["served"].get<bool>() ? 1 : 0)
            << "\"} " << q["depth"].get<int64_t>() << "\n";
      metric("stas_models_without_group", "gauge", "Models with queued jobs that no connected worker group serves.");
      out << "stas_models_without_group " << queues->second.size() << "\n";
    }
  }
  if (dispatcher_) {
    const auto snap = dispatcher_->snapshot();
    metric("stas_workers_connected", "gauge", "Worker groups connected.");
    out << "stas_workers_connected " << snap.workers << "\n";
    metric("stas_workers_busy", "gauge", "Worker groups running a job.");
    out << "stas_workers_busy " << snap.busy << "\n";
    metric("stas_workers_waiting", "gauge", "Worker groups waiting for a job.");
    out << "stas_workers_waiting " << snap.waiting << "\n";
    metric("stas_step_throughput", "gauge", "Denoising steps per second over the last minute.");
    out << "stas_step_throughput " << snap.steps_per_second << "\n";
    metric("stas_results_pending", "gauge", "Worker results waiting for Redis to come back.");
    out << "stas_results_pending " << snap.pending_results << "\n";
    metric("stas_dispatched_total", "counter", "Jobs dispatched by this coordinator process.");
    out << "stas_dispatched_total " << snap.dispatched << "\n";
    metric("stas_protocol_errors_total", "counter", "Malformed or unexpected worker messages.");
    out << "stas_protocol_errors_total " << snap.protocol_errors << "\n";
  }
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = out.str();
  return r;
}

// --------------------------------------------------------------------------------------- OpenAI API

Json HttpApi::VideoJson(const JobRecord& r) const {
  const char* status = "queued";
  switch (r.state) {
    case JobState::kQueued: status = "queued"; break;
    case JobState::kRunning: status = "in_progress"; break;
    case JobState::kDone: status = "completed"; break;
    default: status = "failed"; break;
  }
  Json api = Json::object();
  if (!r.api.empty()) {
    auto parsed = ParseJson(r.api, "api");
    if (parsed.ok() && parsed->is_object()) api = *parsed;
  }
  std::string size = api.value("size", "");
  std::string seconds = api.value("seconds", "");
  if (size.empty() || seconds.empty()) {
    const Shape s = ShapeOf(r);
    if (size.empty() && s.width > 0) size = std::to_string(s.width) + "x" + std::to_string(s.height);
    if (seconds.empty() && s.fps > 0) seconds = FormatSeconds(static_cast<double>(s.frames) / s.fps);
  }
  int progress = static_cast<int>(std::floor(ProgressFraction(r) * 100));
  if (r.state == JobState::kRunning) progress = std::min(progress, 99);
  Json error = nullptr;
  if (r.state == JobState::kFailed || r.state == JobState::kDead || r.state == JobState::kCancelled)
    error = {{"code", JobStateName(r.state)}, {"message", r.error.empty() ? JobStateName(r.state) : r.error}};
  return {{"id", r.id},
          {"object", "video"},
          {"model", api.value("model", r.model)},
          {"status", status},
          {"progress", progress},
          {"created_at", r.created_ms / 1000},
          {"completed_at", r.state == JobState::kDone ? Json(r.finished_ms / 1000) : Json(nullptr)},
          {"expires_at", nullptr},
          {"size", size},
          {"seconds", seconds},
          {"quality", "standard"},
          {"remixed_from_video_id", nullptr},
          {"error", error}};
}

HttpResponse HttpApi::CreateVideo(const HttpRequest& req) {
  Json body;
  auto ct = req.headers.find("content-type");
  const std::string content_type = ct == req.headers.end() ? "" : ct->second;
  if (ToLower(content_type).rfind("multipart/form-data", 0) == 0) {
    auto form = ParseMultipartForm(content_type, req.body);
    if (!form.ok()) return OpenAiError(400, form.status().message(), GuessField(form.status().message()));
    body = *form;
    // Form fields are text: turn the numeric ones (and the stas object) into JSON values.
    for (const char* key : {"seed", "steps", "fps", "frames", "priority"}) {
      if (!body.contains(key)) continue;
      const std::string v = body[key].get<std::string>();
      try {
        size_t used = 0;
        const long long n = std::stoll(v, &used);
        if (used != v.size()) throw std::invalid_argument(v);
        body[key] = n;
      } catch (const std::exception&) {
        return OpenAiError(400, std::string(key) + " must be an integer, got '" + v + "'", key);
      }
    }
    for (const char* key : {"guidance", "shift"}) {
      if (!body.contains(key)) continue;
      const std::string v = body[key].get<std::string>();
      try {
        size_t used = 0;
        const double d = std::stod(v, &used);
        if (used != v.size()) throw std::invalid_argument(v);
        body[key] = d;
      } catch (const std::exception&) {
        return OpenAiError(400, std::string(key) + " must be a number, got '" + v + "'", key);
      }
    }
    if (body.contains("stas")) {
      auto stas = ParseJson(body["stas"].get<std::string>(), "stas");
      if (!stas.ok()) return OpenAiError(400, "stas must be a JSON object: " + stas.status().message(), "stas");
      body["stas"] = *stas;
    }
  } else {
    try {
      body = Json::parse(req.body);
    } catch (const Json::exception& e) {
      return OpenAiError(400, std::string("malformed JSON: ") + e.what(), "body");
    }
  }
  if (!body.is_object()) return OpenAiError(400, "the body must be a JSON object", "body");
  static const char* kAllowed[] = {"model",  "prompt", "size",     "seconds", "negative_prompt", "seed",
                                   "steps",  "guidance", "shift", "fps",     "frames",          "stas",
                                   "dataset", "priority", "output_name"};
  Json spec = Json::object();
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (std::none_of(std::begin(kAllowed), std::end(kAllowed), [&](const char* a) { return it.key() == a; })) {
      if (it.key() == "input_reference")
        return OpenAiError(400, "input_reference is not supported (text-to-video only)", "input_reference");
      return OpenAiError(400, "unknown field '" + it.key() + "'", it.key());
    }
    if (it.key() != "size" && it.key() != "seconds") spec[it.key()] = it.value();
  }
  const std::string requested_model = body.value("model", options_.default_model);
  if (!body.contains("model") || body["model"].is_null()) spec["model"] = options_.default_model;
  Json api = {{"openai", true}, {"model", requested_model}};
  if (body.contains("size") && !body["size"].is_null()) {
    if (!body["size"].is_string()) return OpenAiError(400, "size must be a string such as \"832x480\"", "size");
    const std::string size = body["size"].get<std::string>();
    int w = 0, h = 0;
    char x = 0, extra = 0;
    if (std::sscanf(size.c_str(), "%d%c%d%c", &w, &x, &h, &extra) != 3 || (x != 'x' && x != 'X') || w <= 0 || h <= 0)
      return OpenAiError(400, "size must be WIDTHxHEIGHT such as \"832x480\", got '" + size + "'", "size");
    spec["width"] = w;
    spec["height"] = h;
    api["size"] = std::to_string(w) + "x" + std::to_string(h);
  }
  // Parse once without frames to learn the model family and its fps.
  auto partial = worker::RenderSpec::FromJson(spec);
  if (!partial.ok()) return OpenAiError(400, partial.status().message(), GuessField(partial.status().message()));
  models::ModelDescription family = models::FallbackDescription();
  Status model_ok = CheckModel(*partial, &family);
  if (!model_ok.ok()) return OpenAiError(400, model_ok.message(), GuessField(model_ok.message()));
  if (body.contains("seconds") && !body["seconds"].is_null()) {
    if (body.contains("frames")) return OpenAiError(400, "give either seconds or frames, not both", "seconds");
    double seconds = 0;
    const Json& s = body["seconds"];
    if (s.is_number()) {
      seconds = s.get<double>();
    } else if (s.is_string()) {
      try {
        size_t used = 0;
        seconds = std::stod(s.get<std::string>(), &used);
        if (used != s.get<std::string>().size()) seconds = -1;
      } catch (const std::exception&) {
        seconds = -1;
      }
    } else {
      seconds = -1;
    }
    if (!(seconds > 0) || seconds > 120) return OpenAiError(400, "seconds must be a number in (0, 120]", "seconds");
    worker::RenderSpec resolved = *partial;
    resolved.ResolveDefaults(family);
    spec["frames"] = FramesForSeconds(seconds, resolved.fps.value_or(16));
    api["seconds"] = FormatSeconds(seconds);
  }
  auto parsed = worker::RenderSpec::FromJson(spec);
  if (!parsed.ok()) return OpenAiError(400, parsed.status().message(), GuessField(parsed.status().message()));
  Status checked = ResolveCalibration(*parsed);
  if (checked.ok()) checked = CheckModel(*parsed, nullptr);
  if (!checked.ok()) return OpenAiError(400, checked.message(), GuessField(checked.message()));
  auto submitted = queue_->Submit(*parsed, api);
  if (!submitted.ok()) return OpenAiError(HttpStatusFor(submitted.status()), submitted.status().message());
  if (dispatcher_) dispatcher_->Poke();
  return JsonResponse(200, VideoJson(submitted->record));
}

HttpResponse HttpApi::ListVideos(const std::map<std::string, std::string>& query) {
  Status keys = CheckQueryKeys(query, {"limit", "after", "order"});
  if (!keys.ok()) return OpenAiError(400, keys.message(), "query");
  auto limit = ParseQueryInt(query, "limit", 20, 1, 100);
  if (!limit.ok()) return OpenAiError(400, limit.status().message(), "limit");
  const std::string order = query.count("order") ? query.at("order") : "desc";
  if (order != "asc" && order != "desc") return OpenAiError(400, "order must be 'asc' or 'desc'", "order");
  const std::string after = query.count("after") ? StripVideoPrefix(query.at("after")) : "";
  if (!after.empty() && !IsJobId(after)) return OpenAiError(400, "after must be a video id, got '" + after + "'", "after");
  // One cursor page from the index, plus one id to learn whether more follow.
  JobStore& store = queue_->store();
  auto page = store.ListIdsAfter(IndexRef::All(), after, *limit + 1, order == "asc");
  if (!page.ok()) {
    const int code = page.status().code() == StatusCode::kInvalidArgument ? 400 : HttpStatusFor(page.status());
    return OpenAiError(code, page.status().message(), code == 400 ? "after" : "");
  }
  std::vector<std::string> ids = *page;
  const bool has_more = static_cast<int64_t>(ids.size()) > *limit;
  if (has_more) ids.resize(*limit);
  auto records = store.GetMany(ids);
  if (!records.ok()) return OpenAiError(HttpStatusFor(records.status()), records.status().message());
  Json data = Json::array();
  for (const auto& r : *records) data.push_back(VideoJson(r));
  return JsonResponse(200, {{"object", "list"},
                            {"data", data},
                            {"first_id", ids.empty() ? Json(nullptr) : Json(ids.front())},
                            {"last_id", ids.empty() ? Json(nullptr) : Json(ids.back())},
                            {"has_more", has_more}});
}

HttpResponse HttpApi::GetVideo(const std::string& id) {
  if (!IsJobId(id)) return OpenAiError(404, "no video '" + id + "'", "", "not_found");
  auto r = queue_->Get(id);
  if (!r.ok()) return OpenAiError(HttpStatusFor(r.status()), r.status().message());
  if (!*r) return OpenAiError(404, "no video '" + id + "'", "", "not_found");
  return JsonResponse(200, VideoJson(**r));
}

HttpResponse HttpApi::DeleteVideo(const std::string& id) {
  if (!IsJobId(id)) return OpenAiError(404, "no video '" + id + "'", "", "not_found");
  auto r = queue_->Get(id);
  if (!r.ok()) return OpenAiError(HttpStatusFor(r.status()), r.status().message());
  if (!*r) return OpenAiError(404, "no video '" + id + "'", "", "not_found");
  // Deleting a video removes its file and manifest (when under the storage folder) and the job record;
  // an unfinished job is cancelled first (its group learns it at the next heartbeat).
  if ((*r)->state == JobState::kDone) {
    auto path = VideoPath(**r);
    if (path.ok()) {
      std::error_code ec;
      fs::remove(*path, ec);
      fs::path manifest = fs::path(*path).replace_extension(".json");
      fs::remove(manifest, ec);
    }
  }
  auto deleted = queue_->Delete(id);
  if (!deleted.ok()) return OpenAiError(HttpStatusFor(deleted.status()), deleted.status().message());
  return JsonResponse(200, {{"id", id}, {"object", "video.deleted"}, {"deleted", *deleted}});
}

}  // namespace stas::coordinator

// Helpers shared by the HTTP API's surfaces (coordinator/http_support.h).
#include "coordinator/http_support.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <filesystem>

#include "common/text.h"
#include "models/registry.h"

namespace stas::coordinator::http_support {

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

HttpResponse NativeError(int status, const std::string& message, const std::string& field) {
  Json body = {{"error", message}};
  if (!field.empty()) body["field"] = field;
  return JsonResponse(status, body);
}

HttpResponse OpenAiError(int status, const std::string& message, const std::string& param,
                         const std::string& code) {
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

Shape ShapeOf(const JobRecord& r) {
  Shape s;
  auto j = ParseJson(r.spec, "spec");
  if (!j.ok() || !j->is_object()) return s;
  // A listing's record may carry the store's compact spec, which leaves the model to the record.
  if (!j->contains("model")) (*j)["model"] = r.model;
  auto spec = jobspec::RenderSpec::FromJson(*j);
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

}  // namespace stas::coordinator::http_support

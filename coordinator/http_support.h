// Helpers the HTTP API's surfaces share (http_api.cc, http_jobs_api.cc, http_service_api.cc,
// http_openai_api.cc): query and path parsing, JSON answers and error shapes, status codes, job-id
// checks, progress. Internal to coordinator/; stateless and thread-safe.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "coordinator/http_api.h"
#include "coordinator/job_queue.h"

namespace stas::coordinator::http_support {

std::string ToLower(std::string s);
std::string PercentDecode(const std::string& s);
std::map<std::string, std::string> ParseQuery(const std::string& query);
std::vector<std::string> SplitPath(const std::string& path);
// Milliseconds since the epoch -> ISO 8601 UTC; TimeOrNull gives JSON null for 0.
std::string IsoTime(int64_t ms);
Json TimeOrNull(int64_t ms);

HttpResponse JsonResponse(int status, const Json& body);
// Native errors: {"error": message, "field": name?}.
HttpResponse NativeError(int status, const std::string& message, const std::string& field = "");
// OpenAI errors: {"error": {"message", "type", "param", "code"}}.
HttpResponse OpenAiError(int status, const std::string& message, const std::string& param = "",
                         const std::string& code = "");
// The HTTP status for a Status that reached a handler (400, 404, 409, 501, 503, 504, else 500).
int HttpStatusFor(const Status& s);
// The spec field an error message is about, "" when it names none.
std::string GuessField(std::string message);

// A bare 32-hex job id; OpenAI clients may prefix ids with "video_".
bool IsJobId(const std::string& id);
std::string StripVideoPrefix(const std::string& id);

// Query parameters: an integer in [lo, hi] (fallback when absent), and no keys but `allowed`.
Result<int64_t> ParseQueryInt(const std::map<std::string, std::string>& q, const std::string& key, int64_t fallback,
                              int64_t lo, int64_t hi);
Status CheckQueryKeys(const std::map<std::string, std::string>& q, std::initializer_list<const char*> allowed);

// A Prometheus label value: backslash, quote and newline escaped.
std::string PromLabel(const std::string& v);
// A job's progress in [0, 1].
double ProgressFraction(const JobRecord& r);

// The spec's resolved size and length (for OpenAI objects of jobs submitted natively).
struct Shape {
  int width = 0, height = 0, frames = 0, fps = 16;
};
// `r.spec` may be the full spec or a listing's compact one (JobStore::GetManyForListing).
Shape ShapeOf(const JobRecord& r);
std::string FormatSeconds(double s);

}  // namespace stas::coordinator::http_support

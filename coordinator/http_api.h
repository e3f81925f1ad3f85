// HttpApi: the coordinator's HTTP endpoints as a pure function from request to response, so routing,
// parsing, validation and error codes are testable without sockets (server.h adapts it to Beast).
//
// Native API:       POST /jobs, GET /jobs, GET /jobs/{id}, DELETE /jobs/{id}, GET /jobs/{id}/video,
//                   POST /jobs/lookup, GET /counts, GET /workers, GET /stats, GET /metrics,
//                   GET /healthz, GET / (status page)
// OpenAI-compatible: POST /v1/videos, GET /v1/videos, GET /v1/videos/{id},
//                   GET /v1/videos/{id}/content, DELETE /v1/videos/{id}
// docs/API.md documents every endpoint. Errors are JSON: native {"error": message, "field": name?},
// OpenAI {"error": {"message", "type", "param", "code"}}. Codes: 400 bad input (changes nothing),
// 401 missing/wrong bearer token, 404 unknown id or path, 405 wrong method, 409 wrong state,
// 413 body too large, 503 Redis unreachable, 500 a bug (the handler never throws).
//
// When a token is configured, every path except "/" (static page) and "/healthz" needs
// "Authorization: Bearer <token>".
// Thread-safety: none; call from the thread that owns the dispatcher (HandleOffLoop: see there).
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/json.h"
#include "coordinator/clock.h"
#include "coordinator/dispatcher.h"
#include "coordinator/job_queue.h"
#include "jobspec/render_spec.h"
#include "models/model_description.h"

namespace stas::coordinator {

struct HttpRequest {
  std::string method;                         // "GET", "POST", ...
  std::string target;                         // path and query: "/jobs?state=queued"
  std::map<std::string, std::string> headers; // names in lower case
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string file_path;  // when set, the body is this file (videos)
  std::vector<std::pair<std::string, std::string>> headers;
};

struct HttpApiOptions {
  std::string token;                     // empty: no authentication
  std::string storage;                   // the storage root videos are served from
  size_t max_body_bytes = 8u << 20;      // larger bodies get 413
  size_t max_batch = 10000;              // jobs per POST /jobs
  std::string default_model = "tiny";    // POST /v1/videos without "model"
  // Host header values (name or address, no port) this API answers; empty = loopback names only
  // (localhost, 127.0.0.1, ::1). "*" allows any (a proxy in front checks it). Browsers' Origin on
  // state-changing requests must name one of them too (DNS rebinding, cross-site requests).
  std::vector<std::string> allowed_hosts;
  // Cost limits by family name (`--limit`); families without one use jobspec::DefaultCostLimits.
  jobspec::CostLimitOverrides cost_limits;
};

// The request guards every request passes before routing (exposed for tests): Host allow-list,
// Origin of state-changing requests, JSON content type of their bodies, UTF-8 everywhere. nullopt = ok.
std::optional<std::string> CheckHost(const std::map<std::string, std::string>& headers,
                                     const std::vector<std::string>& allowed_hosts);

// The rules of a submission's model (models/registry.h): "tiny", an existing checkpoint folder (its
// configs), a name that suggests a family (models::GuessFamilyFromName), or a model a connected group
// serves (models::FallbackDescription when its name suggests none). InvalidArgument("model: ...")
// otherwise. A checkpoint folder's description is cached until its model_index.json changes (size or
// modification time). Thread-safe.
Result<models::ModelDescription> ResolveModelFamily(const std::string& model, const std::vector<std::string>& served);

// OpenAI "seconds" at `fps` -> the nearest frame count of the form 4k+1 (at least 1).
int FramesForSeconds(double seconds, int fps);

// Decodes a multipart/form-data body into {name: value} (text parts only). A part with a filename is
// InvalidArgument naming it (file uploads are not supported).
Result<Json> ParseMultipartForm(const std::string& content_type, const std::string& body);

class HttpApi {
 public:
  // `queue` and `clock` are borrowed; `dispatcher` may be null (no worker information then).
  HttpApi(JobQueue* queue, Dispatcher* dispatcher, const Clock* clock, HttpApiOptions options);

  // Never throws.
  HttpResponse Handle(const HttpRequest& request);

  // Whether `request` waits on Redis or the filesystem (submissions, listings, lookups, cancels, counts,
  // videos, calibrations, /stats, /metrics: every path but /, /healthz (one PING) and /workers (memory
  // only)): the server then runs it with HandleOffLoop on a worker thread, so the event loop never
  // waits for it. Cheap; no I/O.
  bool ShouldOffload(const HttpRequest& request) const;
  // Handle() for an instance built for a worker thread (no dispatcher, a JobQueue on its own Redis
  // connection): `served_models` (captured on the loop) stand in for the dispatcher's. Calls on one
  // instance must not overlap (one worker thread at a time).
  // `snapshot` (captured on the loop too) stands in for the dispatcher's in /stats and /metrics.
  HttpResponse HandleOffLoop(const HttpRequest& request, std::vector<std::string> served_models,
                             std::optional<Dispatcher::Snapshot> snapshot = std::nullopt);

  const HttpApiOptions& options() const { return options_; }

 private:
  HttpResponse Route(const HttpRequest& request);
  HttpResponse PostJobs(const HttpRequest& request);
  HttpResponse ListJobs(const std::map<std::string, std::string>& query);
  HttpResponse GetJob(const std::string& id);
  HttpResponse LookupJobs(const HttpRequest& request);
  HttpResponse Counts(const std::map<std::string, std::string>& query);
  // {queue: {depth, served}} and the names of queues with jobs that no connected group serves.
  Result<std::pair<Json, Json>> QueuesJson();
  HttpResponse CancelJob(const std::string& id);
  HttpResponse JobVideo(const std::string& id, bool openai);
  HttpResponse Workers();
  HttpResponse Stats();
  HttpResponse Metrics();
  HttpResponse Healthz();
  HttpResponse CreateVideo(const HttpRequest& request);
  HttpResponse ListVideos(const std::map<std::string, std::string>& query);
  HttpResponse GetVideo(const std::string& id);
  HttpResponse DeleteVideo(const std::string& id);
  HttpResponse PostCalibration(const HttpRequest& request);
  HttpResponse GetCalibration(const std::string& id);
  // Request guards (Host, Origin, content type, UTF-8): an error response, or nullopt to go on.
  std::optional<HttpResponse> Guard(const HttpRequest& request, bool openai);
  // Puts the channels of stas.calibration inline (from the calibration store); NotFound if unknown.
  Status ResolveCalibration(jobspec::RenderSpec& spec) const;
  std::string CalibrationPath(const std::string& id) const;

  // Checks a parsed spec against its model and the family's cost limits; InvalidArgument names the
  // field or the limit.
  Status CheckModel(const jobspec::RenderSpec& spec, models::ModelDescription* description);
  // The same checks for a model already resolved: the spec's rules and the family's cost limits.
  Status CheckForFamily(const jobspec::RenderSpec& spec, const models::ModelDescription& model) const;
  Json JobJson(const JobRecord& r, bool with_spec) const;
  Json VideoJson(const JobRecord& r) const;
  Result<std::string> VideoPath(const JobRecord& r) const;

  JobQueue* queue_;
  Dispatcher* dispatcher_;
  const Clock* clock_;
  HttpApiOptions options_;
  std::vector<std::string> served_models_;  // HandleOffLoop's stand-in for the dispatcher's list
  std::optional<Dispatcher::Snapshot> loop_snapshot_;  // and for its snapshot
  // The dispatcher's served models and snapshot, or the loop's copies off the loop.
  std::vector<std::string> ServedModels() const;
  std::optional<Dispatcher::Snapshot> Snapshot() const;
};

}  // namespace stas::coordinator

// The native jobs API: calibrations, POST/GET/DELETE /jobs, listings, counts, lookups, videos.
#include "coordinator/http_api.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
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

// ------------------------------------------------------------------------------------ calibrations

std::string HttpApi::CalibrationPath(const std::string& id) const {
  return options_.storage + "/.stas/calibrations/" + id + ".json";
}

Status HttpApi::ResolveCalibration(jobspec::RenderSpec& spec) const {
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
  jobspec::RenderSpec identity;
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
  }
  const Json& items = batch ? body["jobs"] : body;
  const size_t count = batch ? items.size() : 1;
  // Validate everything first: bad input changes nothing. Each distinct model is resolved once per
  // request (a checkpoint folder's model_index.json is read once, not once per job), and the batch's
  // dataset is checked once, on the first job that takes it.
  const auto served = dispatcher_ ? dispatcher_->ServedModels() : served_models_;
  std::map<std::string, Result<models::ModelDescription>> families;
  std::vector<jobspec::RenderSpec> specs;
  specs.reserve(count);
  bool batch_dataset_checked = false;
  for (size_t i = 0; i < count; ++i) {
    const std::string where = batch ? "jobs[" + std::to_string(i) + "]" : "";
    const Json& item = batch ? items[i] : items;
    auto spec = jobspec::RenderSpec::FromJson(item);
    Status st = spec.ok() ? Status::Ok() : spec.status();
    if (st.ok() && batch && !batch_dataset.empty() && (!item.contains("dataset") || item["dataset"].is_null())) {
      spec->dataset = batch_dataset;
      if (!batch_dataset_checked) {
        st = spec->Validate();
        batch_dataset_checked = st.ok();
      }
    }
    if (st.ok()) st = ResolveCalibration(*spec);
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
  int created = 0;
  for (const auto& r : *results) created += r.outcome != SubmitOutcome::kExisting ? 1 : 0;
  if (dispatcher_) dispatcher_->Poke();
  const int status = created > 0 ? 201 : 200;
  auto job_json = [](std::string& out, const SubmitResult& r) {
    // Ids are 32 hex characters and states plain words: nothing to escape. Keys in Json's (sorted) order.
    const bool is_new = r.outcome != SubmitOutcome::kExisting;
    out += "{\"created\":";
    out += is_new ? "true" : "false";
    out += ",\"id\":\"";
    out += r.id;
    out += "\",\"resubmitted\":";
    out += r.outcome == SubmitOutcome::kResubmitted ? "true" : "false";
    out += ",\"state\":\"";
    out += JobStateName(r.record.state);
    out += "\"}";
  };
  HttpResponse resp;
  resp.status = status;
  if (!batch) {
    job_json(resp.body, results->front());
    return resp;
  }
  // A batch's answer is built as text: for 10,000 jobs, a Json tree of it costs more than storing them.
  std::string& out = resp.body;
  out.reserve(results->size() * 120 + 64);
  out += "{\"created\":" + std::to_string(created) +
         ",\"existing\":" + std::to_string(static_cast<int>(results->size()) - created) + ",\"ids\":[";
  for (size_t i = 0; i < results->size(); ++i) {
    if (i) out += ',';
    out += '"';
    out += (*results)[i].id;
    out += '"';
  }
  out += "],\"jobs\":[";
  for (size_t i = 0; i < results->size(); ++i) {
    if (i) out += ',';
    job_json(out, (*results)[i]);
  }
  out += "]}";
  return resp;
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
  q.prompt_only = true;  // JobJson without the spec
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
  auto records = queue_->store().GetManyForListing(ids);
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


}  // namespace stas::coordinator

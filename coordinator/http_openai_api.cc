// The OpenAI-compatible videos API: POST/GET/DELETE /v1/videos and /v1/videos/{id}/content.
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
  auto partial = jobspec::RenderSpec::FromJson(spec);
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
    jobspec::RenderSpec resolved = *partial;
    resolved.ResolveDefaults(family);
    spec["frames"] = FramesForSeconds(seconds, resolved.fps.value_or(16));
    api["seconds"] = FormatSeconds(seconds);
  }
  auto parsed = jobspec::RenderSpec::FromJson(spec);
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
  auto records = store.GetManyForListing(ids);
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

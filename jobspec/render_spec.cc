#include "jobspec/render_spec.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>

#include "models/registry.h"
#include "storage/output_layout.h"

namespace stas::jobspec {

namespace {

// The same rules as the storage layout that will use the name (storage::ValidateOutputComponent):
// what passes submission also passes on the worker.
Status CheckOutputName(const std::string& name, const char* field) {
  if (name.empty()) return Status::Ok();  // unset: "single" / the job id
  return storage::ValidateOutputComponent(name, field);
}

uint64_t Fnv1a(const std::string& s, uint64_t basis) {
  uint64_t h = basis;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

Status RenderSpec::Validate() const {
  if (prompt.empty()) return InvalidArgument("prompt must not be empty");
  if (prompt.size() > kMaxPromptBytes)
    return InvalidArgument("prompt is " + std::to_string(prompt.size()) + " bytes; the limit is 8 KiB");
  if (negative_prompt.size() > kMaxPromptBytes) return InvalidArgument("negative prompt is over 8 KiB");
  if (model.empty()) return InvalidArgument("model must be 'tiny' or a checkpoint folder");
  if (frames && (*frames < 1 || (*frames - 1) % 4 != 0 || *frames > 1001))
    return InvalidArgument("frames must be 4k+1 (1, 5, ..., 81, ...) and at most 1001, got " + std::to_string(*frames));
  for (auto [value, name] : {std::pair{height, "height"}, std::pair{width, "width"}}) {
    if (value && (*value < 16 || *value > 4096 || *value % 16 != 0))
      return InvalidArgument(std::string(name) + " must be a multiple of 16 in [16, 4096], got " + std::to_string(*value));
  }
  if (steps && (*steps < kMinSteps || *steps > kMaxSteps))
    return InvalidArgument("steps must be in [1, 1000], got " + std::to_string(*steps));
  if (fps && (*fps < 1 || *fps > 240)) return InvalidArgument("fps must be in [1, 240]");
  if (guidance && (!std::isfinite(*guidance) || *guidance < 0 || *guidance > 100))
    return InvalidArgument("guidance must be in [0, 100]");
  if (shift && (!std::isfinite(*shift) || *shift <= 0 || *shift > 100)) return InvalidArgument("shift must be in (0, 100]");
  STAS_RETURN_IF_ERROR(CheckOutputName(output_name, "output name"));
  // A job without an output name is stored under its id; a name shaped like an id could take over
  // another job's path.
  if (storage::LooksLikeJobId(output_name))
    return InvalidArgument("output name must not look like a job id (32 hex characters)");
  STAS_RETURN_IF_ERROR(CheckOutputName(dataset, "dataset name"));
  return stas.Validate();
}

Status RenderSpec::ValidateFor(const models::ModelDescription& model) const {
  const int m = model.size_multiple;
  for (auto [value, name] : {std::pair{height, "height"}, std::pair{width, "width"}}) {
    if (value && *value % m != 0)
      return InvalidArgument(std::string(name) + " must be a multiple of " + std::to_string(m) + " for " +
                             model.family + ", got " + std::to_string(*value));
  }
  const int f = model.frame_multiple;
  if (frames && (*frames - 1) % f != 0)
    return InvalidArgument("frames must be " + std::to_string(f) + "k+1 for " + model.family + " (e.g. " +
                           std::to_string(model.defaults.frames) + "), got " + std::to_string(*frames));
  return Status::Ok();
}

CostLimits DefaultCostLimits(const models::ModelDescription& model) {
  CostLimits limits;
  limits.max_frames = model.trained_max.frames;
  limits.max_pixels = int64_t{model.trained_max.long_side} * model.trained_max.short_side;
  limits.max_steps = kMaxSteps;
  return limits;
}

CostLimits CostLimitsFor(const models::ModelDescription& model, const CostLimitOverrides& overrides) {
  auto it = overrides.find(model.family);
  return it == overrides.end() ? DefaultCostLimits(model) : it->second;
}

Status ParseCostLimitOverride(const std::string& text, CostLimitOverrides* overrides) {
  const size_t colon = text.find(':');
  if (colon == std::string::npos) return InvalidArgument("--limit: expected FAMILY:KEY=N[,KEY=N...], got '" + text + "'");
  const std::string name = text.substr(0, colon);
  auto model = models::DescribeFamily(name);
  if (!model.ok()) {
    std::string known;
    for (const auto& f : models::RegisteredFamilies()) known += (known.empty() ? "" : ", ") + f;
    return InvalidArgument("--limit: unknown model family '" + name + "' (" + known + ")");
  }
  CostLimits limits = CostLimitsFor(*model, *overrides);
  std::string rest = text.substr(colon + 1);
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string item = rest.substr(0, comma);
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (value.empty() || value.size() > 12 || value.find_first_not_of("0123456789") != std::string::npos)
      return InvalidArgument("--limit: '" + item + "' must be KEY=N with a positive integer N");
    const int64_t n = std::stoll(value);
    if (n < 1) return InvalidArgument("--limit: '" + item + "' must be at least 1");
    if (key == "frames") limits.max_frames = static_cast<int>(std::min<int64_t>(n, 1001));
    else if (key == "pixels") limits.max_pixels = n;
    else if (key == "steps") limits.max_steps = static_cast<int>(std::min<int64_t>(n, kMaxSteps));
    else return InvalidArgument("--limit: unknown key '" + key + "' (frames, pixels, steps)");
  }
  (*overrides)[model->family] = limits;
  return Status::Ok();
}

Status RenderSpec::CheckCostLimits(const models::ModelDescription& model, const CostLimits& limits) const {
  RenderSpec r = *this;
  r.ResolveDefaults(model);
  const std::string where = " for " + model.family + " on this coordinator (--limit " + model.family + ":";
  if (*r.frames > limits.max_frames)
    return InvalidArgument("frames " + std::to_string(*r.frames) + " exceed the limit of " +
                           std::to_string(limits.max_frames) + where + "frames=N)");
  const int64_t pixels = int64_t{*r.height} * *r.width;
  if (pixels > limits.max_pixels)
    return InvalidArgument("height x width " + std::to_string(*r.height) + "x" + std::to_string(*r.width) + " = " +
                           std::to_string(pixels) + " pixels exceed the limit of " +
                           std::to_string(limits.max_pixels) + where + "pixels=N)");
  if (*r.steps > limits.max_steps)
    return InvalidArgument("steps " + std::to_string(*r.steps) + " exceed the limit of " +
                           std::to_string(limits.max_steps) + where + "steps=N)");
  return Status::Ok();
}

void RenderSpec::ResolveDefaults(const models::ModelDescription& model) {
  const models::VideoDefaults& d = model.defaults;
  if (!height) height = d.height;
  if (!width) width = d.width;
  if (!frames) frames = d.frames;
  if (!fps) fps = d.fps;
  if (!steps) steps = d.steps;
  if (!guidance) guidance = d.guidance;
  if (!shift) shift = model.DefaultShift(*height, *width);
}

Json RenderSpec::ToJson() const {
  Json j = {{"prompt", prompt}, {"negative_prompt", negative_prompt}, {"seed", seed},
            {"model", model},   {"stas", stas.ToJson()},             {"output_name", output_name},
            {"dataset", dataset}, {"priority", priority}};
  auto put = [&](const char* key, const auto& opt) { j[key] = opt ? Json(*opt) : Json(nullptr); };
  put("height", height);
  put("width", width);
  put("frames", frames);
  put("steps", steps);
  put("fps", fps);
  put("guidance", guidance);
  put("shift", shift);
  return j;
}

Result<RenderSpec> RenderSpec::FromJson(const Json& j) {
  if (!j.is_object()) return InvalidArgument("a render spec must be a JSON object");
  static const std::set<std::string> kKnown = {"prompt", "negative_prompt", "seed",     "model",    "height",
                                               "width",  "frames",          "steps",    "fps",      "guidance",
                                               "shift",  "stas",            "output_name", "dataset", "priority"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kKnown.count(it.key())) return InvalidArgument("unknown field '" + it.key() + "'");
  RenderSpec s;
  std::string field;
  Status st = CatchConfigErrors("render spec", [&] {
    auto get_str = [&](const char* key, std::string& out) {
      field = key;
      if (j.contains(key) && !j[key].is_null()) {
        if (!j[key].is_string()) throw std::runtime_error(std::string("field '") + key + "' must be a string");
        out = j[key].get<std::string>();
      }
    };
    auto get_int = [&](const char* key, std::optional<int>& out) {
      field = key;
      if (j.contains(key) && !j[key].is_null()) {
        if (!j[key].is_number_integer()) throw std::runtime_error(std::string("field '") + key + "' must be an integer");
        // Range-check before narrowing: 2^32 + 81 must not wrap into a valid 81.
        const bool fits = j[key].is_number_unsigned()
                              ? j[key].get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int>::max())
                              : (j[key].get<int64_t>() >= std::numeric_limits<int>::min() &&
                                 j[key].get<int64_t>() <= std::numeric_limits<int>::max());
        if (!fits) throw std::runtime_error(std::string("field '") + key + "' is out of range");
        out = j[key].get<int>();
      }
    };
    auto get_num = [&](const char* key, std::optional<double>& out) {
      field = key;
      if (j.contains(key) && !j[key].is_null()) {
        if (!j[key].is_number()) throw std::runtime_error(std::string("field '") + key + "' must be a number");
        out = j[key].get<double>();
      }
    };
    get_str("prompt", s.prompt);
    get_str("negative_prompt", s.negative_prompt);
    get_str("model", s.model);
    get_str("output_name", s.output_name);
    get_str("dataset", s.dataset);
    if (j.contains("seed") && !j["seed"].is_null()) {
      if (!j["seed"].is_number_integer() || (j["seed"].is_number_integer() && !j["seed"].is_number_unsigned() && j["seed"].get<int64_t>() < 0))
        throw std::runtime_error("field 'seed' must be a non-negative integer");
      s.seed = j["seed"].get<uint64_t>();
    }
    get_int("height", s.height);
    get_int("width", s.width);
    get_int("frames", s.frames);
    get_int("steps", s.steps);
    get_int("fps", s.fps);
    get_num("guidance", s.guidance);
    get_num("shift", s.shift);
    std::optional<int> priority;
    get_int("priority", priority);
    if (priority) s.priority = *priority;
  });
  STAS_RETURN_IF_ERROR(st);
  if (j.contains("stas") && !j["stas"].is_null()) {
    auto stas = steering::StasOptions::FromJson(j["stas"]);
    if (!stas.ok()) return stas.status();
    s.stas = *stas;
  }
  STAS_RETURN_IF_ERROR(s.Validate());
  return s;
}

std::string RenderSpec::JobId() const {
  Json identity = ToJson();
  identity.erase("priority");
  identity.erase("output_name");
  identity.erase("dataset");
  const std::string canonical = identity.dump();  // nlohmann sorts object keys: a stable form
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%016llx%016llx",
                static_cast<unsigned long long>(Fnv1a(canonical, 14695981039346656037ull)),
                static_cast<unsigned long long>(Fnv1a(canonical, 0x9e3779b97f4a7c15ull)));
  return buf;
}

}  // namespace stas::jobspec

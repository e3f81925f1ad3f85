#include "steering/stas_options.h"

#include <cmath>
#include <set>

namespace stas::steering {

int StasOptions::SteeredSteps(int num_steps) const {
  if (!enabled) return 0;
  const int k = steps ? *steps : static_cast<int>(std::lround(step_fraction * num_steps));
  return std::max(0, std::min(k, num_steps));
}

Status StasOptions::Validate() const {
  if (!std::isfinite(alpha) || alpha < 0 || alpha > 100) return InvalidArgument("stas alpha must be in [0, 100]");
  if (!std::isfinite(lambda) || lambda < 0 || lambda > 100) return InvalidArgument("stas lambda must be in [0, 100]");
  if (steps && (*steps < 0 || *steps > 1000)) return InvalidArgument("stas steps (K) must be in [0, 1000]");
  if (!std::isfinite(step_fraction) || step_fraction < 0 || step_fraction > 1)
    return InvalidArgument("stas step fraction must be in [0, 1]");
  for (int b : blocks)
    if (b < 0) return InvalidArgument("stas blocks must be non-negative block indices");
  if (boundary_width < -1) return InvalidArgument("stas boundary width must be >= 0 (or -1 for one row)");
  if (chunk_frames == 0 || chunk_frames < -1)
    return InvalidArgument("stas chunk frames must be >= 1 (or -1 for one chunk)");
  if (!(tau > 1)) return InvalidArgument("stas tau must be > 1");
  if (max_channels < 1 || max_channels > 4096) return InvalidArgument("stas max channels must be in [1, 4096]");
  return Status::Ok();
}

Json StasOptions::ToJson() const {
  Json j = {{"enabled", enabled},
            {"alpha", alpha},
            {"lambda", lambda},
            {"step_fraction", step_fraction},
            {"blocks", blocks},
            {"boundary_width", boundary_width},
            {"boundary_mode", boundary_mode == BoundaryMode::kRows ? "rows" : "frames"},
            {"chunk_frames", chunk_frames},
            {"branches", branches == SteerBranches::kBoth ? "both" : "cond"},
            {"channels_file", channels_file},
            {"tau", tau},
            {"max_channels", max_channels}};
  j["steps"] = steps ? Json(*steps) : Json(nullptr);
  return j;
}

Result<StasOptions> StasOptions::FromJson(const Json& j) {
  if (!j.is_object()) return InvalidArgument("stas settings must be a JSON object");
  static const std::set<std::string> kKnown = {"enabled", "alpha", "lambda", "steps", "step_fraction", "blocks",
                                               "boundary_width", "boundary_mode", "chunk_frames", "branches", "channels_file",
                                               "tau", "max_channels"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kKnown.count(it.key())) return InvalidArgument("unknown stas setting '" + it.key() + "'");
  StasOptions o;
  Status st = CatchConfigErrors("stas settings", [&] {
    o.enabled = JsonValueOr(j, "enabled", o.enabled);
    o.alpha = JsonValueOr(j, "alpha", o.alpha);
    o.lambda = JsonValueOr(j, "lambda", o.lambda);
    if (j.contains("steps") && !j["steps"].is_null()) o.steps = j["steps"].get<int>();
    o.step_fraction = JsonValueOr(j, "step_fraction", o.step_fraction);
    o.blocks = JsonValueOr(j, "blocks", o.blocks);
    o.boundary_width = JsonValueOr(j, "boundary_width", o.boundary_width);
    const std::string mode = JsonValueOr<std::string>(j, "boundary_mode", "rows");
    if (mode != "rows" && mode != "frames") throw std::runtime_error("boundary_mode must be 'rows' or 'frames'");
    o.boundary_mode = mode == "rows" ? BoundaryMode::kRows : BoundaryMode::kFrames;
    o.chunk_frames = JsonValueOr(j, "chunk_frames", o.chunk_frames);
    const std::string br = JsonValueOr<std::string>(j, "branches", "both");
    if (br != "both" && br != "cond") throw std::runtime_error("branches must be 'both' or 'cond'");
    o.branches = br == "both" ? SteerBranches::kBoth : SteerBranches::kCondOnly;
    o.channels_file = JsonValueOr<std::string>(j, "channels_file", "");
    o.tau = JsonValueOr(j, "tau", o.tau);
    o.max_channels = JsonValueOr(j, "max_channels", o.max_channels);
  });
  STAS_RETURN_IF_ERROR(st);
  STAS_RETURN_IF_ERROR(o.Validate());
  return o;
}

}  // namespace stas::steering

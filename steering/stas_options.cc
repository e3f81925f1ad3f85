#include "steering/stas_options.h"

#include <cmath>
#include <set>

#include "common/text.h"
#include "steering/ma_channels.h"

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
  if (blocks.size() > 4096) return InvalidArgument("stas blocks lists at most 4096 blocks");
  const int sources = !channels_file.empty() + !channels.is_null();
  if (sources > 1) return InvalidArgument("stas channels: give a channels file or inline channels, not both");
  if (!calibration.empty()) {
    if (calibration.size() != 32 || calibration.find_first_not_of("0123456789abcdef") != std::string::npos)
      return InvalidArgument("stas calibration must be a calibration id (32 hex characters)");
    if (!channels_file.empty()) return InvalidArgument("stas calibration and a channels file exclude each other");
  }
  if (!channels.is_null()) {
    if (SafeDump(channels).size() > kMaxInlineChannelsBytes)
      return InvalidArgument("stas channels are over the " + std::to_string(kMaxInlineChannelsBytes / 1024) +
                             " KiB limit");
    auto parsed = MaChannelSet::FromJson(channels);
    if (!parsed.ok()) return parsed.status().WithContext("stas channels");
  }
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
            {"tau", tau},
            {"max_channels", max_channels}};
  j["steps"] = steps ? Json(*steps) : Json(nullptr);
  if (!channels_file.empty()) j["channels_file"] = channels_file;
  if (!channels.is_null()) j["channels"] = channels;
  if (!calibration.empty()) j["calibration"] = calibration;
  return j;
}

Result<StasOptions> StasOptions::FromJson(const Json& j) {
  if (!j.is_object()) return InvalidArgument("stas settings must be a JSON object");
  static const std::set<std::string> kKnown = {"enabled", "alpha", "lambda", "steps", "step_fraction", "blocks",
                                               "boundary_width", "boundary_mode", "chunk_frames", "branches", "channels",
                                               "calibration", "tau", "max_channels"};
  // A job must not name a file of the machine that runs it (it could read /dev/zero, a FIFO, or probe
  // for files); calibrated channels travel as data instead.
  if (j.contains("channels_file") && !(j["channels_file"].is_string() && j["channels_file"].get<std::string>().empty()))
    return InvalidArgument("stas channels_file is not accepted in a job: upload the channels with POST /calibrations "
                           "and give stas.calibration, or put them inline as stas.channels");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kKnown.count(it.key()) && it.key() != "channels_file")
      return InvalidArgument("unknown stas setting '" + it.key() + "'");
  StasOptions o;
  Status st = CatchConfigErrors("stas settings", [&] {
    o.enabled = JsonValueOr(j, "enabled", o.enabled);
    o.alpha = JsonValueOr(j, "alpha", o.alpha);
    o.lambda = JsonValueOr(j, "lambda", o.lambda);
    if (j.contains("steps") && !j["steps"].is_null()) o.steps = CheckedInt(j, "steps", 0);
    o.step_fraction = JsonValueOr(j, "step_fraction", o.step_fraction);
    if (j.contains("blocks") && !j["blocks"].is_null()) {
      if (!j["blocks"].is_array()) throw std::runtime_error("'blocks' must be an array of block indices");
      if (j["blocks"].size() > 4096) throw std::runtime_error("'blocks' lists at most 4096 blocks");
      for (const Json& b : j["blocks"]) o.blocks.push_back(CheckedInt(b, "each of 'blocks'"));
    }
    o.boundary_width = CheckedInt(j, "boundary_width", o.boundary_width);
    const std::string mode = JsonValueOr<std::string>(j, "boundary_mode", "rows");
    if (mode != "rows" && mode != "frames") throw std::runtime_error("boundary_mode must be 'rows' or 'frames'");
    o.boundary_mode = mode == "rows" ? BoundaryMode::kRows : BoundaryMode::kFrames;
    o.chunk_frames = CheckedInt(j, "chunk_frames", o.chunk_frames);
    const std::string br = JsonValueOr<std::string>(j, "branches", "both");
    if (br != "both" && br != "cond") throw std::runtime_error("branches must be 'both' or 'cond'");
    o.branches = br == "both" ? SteerBranches::kBoth : SteerBranches::kCondOnly;
    if (j.contains("channels")) o.channels = j["channels"];
    o.calibration = JsonValueOr<std::string>(j, "calibration", "");
    o.tau = JsonValueOr(j, "tau", o.tau);
    o.max_channels = CheckedInt(j, "max_channels", o.max_channels);
  });
  STAS_RETURN_IF_ERROR(st);
  STAS_RETURN_IF_ERROR(o.Validate());
  return o;
}

}  // namespace stas::steering

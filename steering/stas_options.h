// STAS parameters (docs/DESIGN.md#stas; docs/STAS.md explains each and its default).
// Plain data, shared by `stas render`, the job spec of the service and the steering hook.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace stas::steering {

enum class BoundaryMode { kRows, kFrames };      // head/tail tokens of each latent frame, or whole frames
enum class SteerBranches { kBoth, kCondOnly };   // which CFG branches are steered

struct StasOptions {
  bool enabled = false;
  double alpha = 1.0;          // target = alpha * R (R = global max |h| over MA channels)
  double lambda = 1.0;         // h' = h + lambda (target * sign(h) - h); 1 = replace, > 1 extrapolates
  std::optional<int> steps;    // K: steer steps [0, K); unset = round(step_fraction * N)
  double step_fraction = 0.4;
  std::vector<int> blocks;     // empty = every block
  int boundary_width = -1;     // n tokens at the head and tail of each later latent frame; -1 = one row (W/2)
  BoundaryMode boundary_mode = BoundaryMode::kRows;
  int chunk_frames = -1;       // frames mode: latent frames per temporal chunk after frame 0; -1 = one chunk
  SteerBranches branches = SteerBranches::kBoth;
  std::string channels_file;   // calibrated MA channels JSON from `stas analyze`; empty = detect online
  double tau = 100.0;          // online detection: peak |h| >= tau x median |h|
  int max_channels = 8;        // online detection: at most k channels

  // Number of steered steps for a run of `num_steps`.
  int SteeredSteps(int num_steps) const;
  Status Validate() const;
  Json ToJson() const;
  // Strict: unknown keys and wrong types are InvalidArgument.
  static Result<StasOptions> FromJson(const Json& j);
};

}  // namespace stas::steering

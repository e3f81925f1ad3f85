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

// Largest inline calibration (its compact JSON), in a job or POST /calibrations.
constexpr size_t kMaxInlineChannelsBytes = 256 * 1024;

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
  // Calibrated MA channels (ma_channels.json from `stas analyze`), from one of:
  std::string channels_file;   //   a file on this machine: `stas render --stas-channels` only, never in a job
  Json channels;               //   inline (null = none): the file's contents, at most kMaxInlineChannelsBytes
  std::string calibration;     //   a calibration id (POST /calibrations); the coordinator puts its channels
                               //   inline before queuing, a worker never reads it
                               // none of them = detect online
  double tau = 100.0;          // online detection: peak |h| >= tau x median |h|
  int max_channels = 8;        // online detection: at most k channels

  // Number of steered steps for a run of `num_steps`.
  int SteeredSteps(int num_steps) const;
  Status Validate() const;
  // channels_file is included only when set (local renders' manifests); FromJson refuses it.
  Json ToJson() const;
  // Strict: unknown keys, wrong types and out-of-range integers are InvalidArgument. A job names no
  // file: "channels_file" is refused with a message pointing at calibrations.
  static Result<StasOptions> FromJson(const Json& j);
};

}  // namespace stas::steering

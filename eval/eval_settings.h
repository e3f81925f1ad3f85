// EvalSettings: what `stas eval` and `stas ab` are told about the metrics (the chunk size and the
// optional TorchScript feature encoders), as flag values, turned into MetricOptions and loaded
// encoders with clear errors.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "eval/feature_encoder.h"
#include "eval/video_metrics.h"

namespace stas::eval {

struct EvalSettings {
  int temporal_compression = 4;
  std::string dino;  // TorchScript file; empty = no DINO similarity
  std::string clip;
  int dino_size = 224, clip_size = 224;
  std::string dino_mean, dino_std, clip_mean, clip_std;  // "r,g,b"; empty = the encoder's default

  Result<MetricOptions> Options() const;
  // The encoders named (possibly none). NotFound / InvalidArgument naming the flag.
  Result<std::vector<std::unique_ptr<FeatureEncoder>>> LoadEncoders() const;
};

// "0.5,0.5,0.5" -> three numbers; InvalidArgument naming `flag` otherwise.
Result<std::array<double, 3>> ParseTriple(const std::string& text, const std::string& flag);

}  // namespace stas::eval

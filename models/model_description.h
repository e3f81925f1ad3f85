// ModelDescription: what a model family asks of a job, known from configs alone (no weights, no ATen):
// size multiples, the frame rule, defaults for unset fields, and the largest video the family was
// trained for. models/registry.h's InspectModel gives one for a model argument; RenderSpec validation
// and the coordinator use it (models/video_model.h has the loaded model's contract).
#pragma once

#include <cstdint>
#include <string>

namespace stas::models {

// What a render of this family gets for the fields a job leaves unset.
struct VideoDefaults {
  int height = 480;
  int width = 832;
  int frames = 81;
  int fps = 16;
  int steps = 50;
  double guidance = 5.0;
  double shift = 3.0;       // flow shift below 720p
  double shift_720p = 5.0;  // flow shift at 1280x720 pixels and above
};

// The largest video the family was trained for: a cost limit can refuse anything bigger. Either
// orientation: the long side is compared with long_side, the short side with short_side.
struct TrainedMaximum {
  int long_side = 1280;
  int short_side = 720;
  int frames = 81;
  bool Fits(int height, int width, int frames) const;
};

// A family's rules for a job, known from configs alone (no weights read).
struct ModelDescription {
  std::string family;        // "tiny", "wan2.1", "wan2.2", "cogvideox": the manifest's model_family
  int size_multiple = 16;    // height and width must be multiples of it
  int frame_multiple = 4;    // frames must be frame_multiple * k + 1
  VideoDefaults defaults;
  TrainedMaximum trained_max;
  int64_t num_attention_heads = 0;  // of the transformer, when its config was read (0: unknown)

  double DefaultShift(int height, int width) const;
};

}  // namespace stas::models

#include "models/video_model.h"

#include <algorithm>

namespace stas::models {

bool TrainedMaximum::Fits(int height, int width, int video_frames) const {
  return std::max(height, width) <= long_side && std::min(height, width) <= short_side && video_frames <= frames;
}

double ModelDescription::DefaultShift(int height, int width) const {
  return height * width >= 720 * 1280 ? defaults.shift_720p : defaults.shift;
}

Status CheckSizeMultiples(const LatentGeometry& geometry, int height, int width, int frames) {
  const int64_t multiple = geometry.size_multiple();
  for (auto [value, name] : {std::pair{height, "height"}, std::pair{width, "width"}})
    if (value % multiple != 0)
      return InvalidArgument(std::string(name) + " must be a multiple of " + std::to_string(multiple) +
                             " for this model, got " + std::to_string(value));
  if ((frames - 1) % geometry.temporal_compression != 0)
    return InvalidArgument("frames must be " + std::to_string(geometry.temporal_compression) +
                           "k+1 for this model, got " + std::to_string(frames));
  return Status::Ok();
}

Status RequireComponents(const CheckpointFolder& checkpoint, const std::vector<std::string>& components) {
  for (const std::string& required : components)
    if (!checkpoint.HasComponent(required))
      return InvalidArgument(checkpoint.dir() + " has no '" + required + "' component folder");
  return Status::Ok();
}

}  // namespace stas::models

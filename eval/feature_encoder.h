// FeatureEncoder: a user-supplied TorchScript image encoder (e.g. DINOv2 or CLIP's vision tower,
// exported with torch.jit.trace; docs/EVALUATION.md has one-line exports) used to measure semantic
// consistency between consecutive frames.
//
// Input: frames [N, H, W, 3] float RGB in [0, 1]. Each frame is resized (bilinear, antialiased) so its
// shorter side is `size`, centre-cropped to size x size, normalised with (x - mean) / std per channel
// and passed as [N, 3, size, size] float32. Output: the module's forward result, a tensor [N, ...]
// (flattened to [N, D]) or a tuple/list whose first element is that tensor (e.g. a traced
// transformers CLIPVisionModelWithProjection returns (image_embeds, ...)).
//
// Not thread-safe: one encoder per thread.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace stas::eval {

struct EncoderOptions {
  std::string name;  // "dino", "clip", ...: the metric's key
  std::string path;  // TorchScript file (torch.jit.save)
  int size = 224;
  std::array<double, 3> mean{0.485, 0.456, 0.406};  // ImageNet (DINO, most torchvision models)
  std::array<double, 3> std{0.229, 0.224, 0.225};
  int64_t batch = 16;  // frames per forward
};

// The usual defaults: ImageNet statistics for DINO, OpenAI's CLIP statistics for CLIP; 224 both.
EncoderOptions DinoDefaults(const std::string& path);
EncoderOptions ClipDefaults(const std::string& path);

class FeatureEncoder {
 public:
  // Loads the module onto the CPU in eval mode. NotFound for a missing file, InvalidArgument for a
  // file that is not TorchScript or bad options.
  static Result<std::unique_ptr<FeatureEncoder>> Load(const EncoderOptions& options);
  ~FeatureEncoder();
  FeatureEncoder(const FeatureEncoder&) = delete;
  FeatureEncoder& operator=(const FeatureEncoder&) = delete;

  // Embeddings [N, D] float32 of frames [N, H, W, 3] in [0, 1]. InvalidArgument when the module fails
  // on the input (its message included) or returns something that is not [N, ...].
  Result<at::Tensor> Embed(const at::Tensor& frames);

  // The preprocessing alone: [N, 3, size, size] float32.
  at::Tensor Preprocess(const at::Tensor& frames) const;

  // cos(embed(t), embed(t+1)) for t = 0..T-2.
  Result<std::vector<double>> ConsecutiveSimilarity(const at::Tensor& frames);

  const std::string& name() const { return options_.name; }
  const EncoderOptions& options() const { return options_; }

  class Impl;

 private:
  FeatureEncoder(EncoderOptions options, std::unique_ptr<Impl> impl);
  EncoderOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stas::eval

// Temporal-consistency metrics of one video, per consecutive frame pair (docs/EVALUATION.md):
//   SSIM     on luma (BT.601 Y in [0, 255]), Gaussian window 11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03,
//            "valid" windows only (Wang et al. 2004's reference implementation); 1 = identical frames.
//   PSNR     over the RGB values, peak 255; identical frames give +inf, reported as kPsnrCap (100 dB).
//   flicker  |mean luma(t+1) - mean luma(t)| in luma units of [0, 255]: global brightness jumps between
//            frames, blind to motion that keeps the overall brightness.
//   features cosine similarity of consecutive frames' embeddings from TorchScript image encoders
//            (eval/feature_encoder.h), one value per encoder (e.g. "dino", "clip").
// Pairs are split by the VAE's temporal chunks: a Wan-style causal VAE decodes latent frame 0 to video
// frame 0 alone and every later latent frame to `temporal_compression` frames, so chunk(0) = 0 and
// chunk(t) = (t - 1) / tc + 1. A pair (t, t+1) is cross-chunk when the two frames come from different
// latent frames; that is where latent-frame boundary artefacts show.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace stas::eval {

class FeatureEncoder;

inline constexpr double kPsnrCap = 100.0;  // dB reported for identical frames (JSON has no infinity)

struct MetricOptions {
  int temporal_compression = 4;  // video frames per latent frame after the first (4 for Wan)
  int ssim_window = 11;          // shrunk to the largest odd size that fits smaller frames
  double ssim_sigma = 1.5;
  int64_t batch_pairs = 8;       // pairs computed at once (bounds memory on large videos)
};

// The latent chunk a video frame belongs to (see above). temporal_compression >= 1.
int64_t ChunkOfFrame(int64_t frame, int temporal_compression);

struct PairMetrics {
  int64_t first = 0;         // the pair is frames (first, first + 1)
  bool cross_chunk = false;  // the two frames come from different latent frames
  double ssim = 0;
  double psnr = 0;           // capped at kPsnrCap
  double flicker = 0;
  std::map<std::string, double> features;  // encoder name -> cosine similarity
};

// Means over a set of pairs (count 0 = no pairs of that kind; the means are then 0 and marked absent
// in JSON as null).
struct MetricSummary {
  int64_t pairs = 0;
  double ssim = 0, psnr = 0, flicker = 0;
  std::map<std::string, double> features;
};

struct VideoMetrics {
  std::string name;  // the file, or a label for tensors
  int64_t frames = 0, height = 0, width = 0;
  int temporal_compression = 4;
  std::vector<PairMetrics> pairs;
  MetricSummary all, within_chunk, cross_chunk;

  Json ToJson() const;
};

// The per-frame luma of RGB frames [T, H, W, 3] in [0, 1]: [T, H, W] float in [0, 255].
at::Tensor Luma(const at::Tensor& frames);

// SSIM / PSNR of frame pairs: a and b are [N, H, W, 3] float RGB in [0, 1] of equal shape; returns N values.
std::vector<double> SsimPairs(const at::Tensor& a, const at::Tensor& b, const MetricOptions& options = {});
std::vector<double> PsnrPairs(const at::Tensor& a, const at::Tensor& b);

// Evaluates frames [T, H, W, 3] float RGB in [0, 1] (T >= 2) with optional feature encoders (not
// owned; may be empty). InvalidArgument for bad shapes, dtypes or options; an encoder's failure is
// passed on with its name.
Result<VideoMetrics> EvaluateFrames(const at::Tensor& frames, const MetricOptions& options,
                                    const std::vector<FeatureEncoder*>& encoders = {},
                                    const std::string& name = "");

// ReadVideo + EvaluateFrames.
Result<VideoMetrics> EvaluateVideoFile(const std::string& path, const MetricOptions& options,
                                       const std::vector<FeatureEncoder*>& encoders = {});

// Means of `pairs` (all of them, or only those whose cross_chunk equals `cross`).
MetricSummary Summarize(const std::vector<PairMetrics>& pairs);

// Compares two videos of the same size frame by frame (e.g. with and without STAS): SSIM and PSNR of
// frame t of `a` against frame t of `b`. InvalidArgument when the sizes or frame counts differ.
Result<MetricSummary> CompareVideos(const at::Tensor& a, const at::Tensor& b, const MetricOptions& options = {});

}  // namespace stas::eval

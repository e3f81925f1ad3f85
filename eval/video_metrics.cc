#include "eval/video_metrics.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "eval/feature_encoder.h"
#include "eval/mp4_reader.h"

namespace stas::eval {

namespace {

Status CheckFrames(const at::Tensor& frames, const char* what) {
  if (!frames.defined()) return InvalidArgument(std::string(what) + " is undefined");
  if (frames.dim() != 4 || frames.size(3) != 3)
    return InvalidArgument(std::string(what) + " must be [T, H, W, 3] RGB, got shape " + c10::str(frames.sizes()));
  if (!at::isFloatingType(frames.scalar_type()))
    return InvalidArgument(std::string(what) + " must be floating point in [0, 1], got " +
                           std::string(c10::toString(frames.scalar_type())));
  if (frames.size(1) < 1 || frames.size(2) < 1) return InvalidArgument(std::string(what) + " have no pixels");
  return Status::Ok();
}

// A normalised 1-D Gaussian; the 2-D window is its outer product (separable filtering).
at::Tensor Gaussian1d(int size, double sigma) {
  at::Tensor x = at::arange(size, at::kDouble).sub((size - 1) / 2.0);
  at::Tensor g = x.pow(2).div(-2.0 * sigma * sigma).exp();
  return g.div(g.sum()).to(at::kFloat);
}

// "valid" separable Gaussian filter of [N, 1, H, W].
at::Tensor Filter(const at::Tensor& x, const at::Tensor& g) {
  const int64_t k = g.numel();
  at::Tensor y = at::conv2d(x, g.view({1, 1, 1, k}));
  return at::conv2d(y, g.view({1, 1, k, 1}));
}

std::vector<double> ToVector(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous();
  const double* p = d.data_ptr<double>();
  return std::vector<double>(p, p + d.numel());
}

Json OrNull(int64_t count, double value) { return count > 0 ? Json(value) : Json(nullptr); }

Json SummaryJson(const MetricSummary& s) {
  Json j{{"pairs", s.pairs},
         {"ssim", OrNull(s.pairs, s.ssim)},
         {"psnr", OrNull(s.pairs, s.psnr)},
         {"flicker", OrNull(s.pairs, s.flicker)}};
  if (!s.features.empty()) {
    Json f = Json::object();
    for (const auto& [k, v] : s.features) f[k] = OrNull(s.pairs, v);
    j["features"] = f;
  }
  return j;
}

}  // namespace

int64_t ChunkOfFrame(int64_t frame, int temporal_compression) {
  if (frame <= 0) return 0;
  return (frame - 1) / temporal_compression + 1;
}

at::Tensor Luma(const at::Tensor& frames) {
  // BT.601 luma, the Y of the classic SSIM evaluations, on the 0-255 scale of the standard constants.
  at::Tensor f = frames.to(at::kFloat);
  return (f.select(-1, 0) * 0.299 + f.select(-1, 1) * 0.587 + f.select(-1, 2) * 0.114) * 255.0;
}

std::vector<double> SsimPairs(const at::Tensor& a, const at::Tensor& b, const MetricOptions& options) {
  const int64_t h = a.size(1), w = a.size(2);
  // The window shrinks (odd, >= 1) for frames smaller than it, so tiny test videos still get a value.
  int64_t win = std::min<int64_t>({options.ssim_window, h, w});
  if (win % 2 == 0) --win;
  const at::Tensor g = Gaussian1d(static_cast<int>(win), options.ssim_sigma);
  constexpr double kL = 255.0;
  const double c1 = (0.01 * kL) * (0.01 * kL), c2 = (0.03 * kL) * (0.03 * kL);
  const at::Tensor x = Luma(a).unsqueeze(1).to(at::kDouble), y = Luma(b).unsqueeze(1).to(at::kDouble);
  const at::Tensor gd = g.to(at::kDouble);
  // Double precision: the variance terms subtract nearly equal numbers on flat regions.
  const at::Tensor mx = Filter(x, gd), my = Filter(y, gd);
  const at::Tensor sxx = Filter(x * x, gd) - mx * mx;
  const at::Tensor syy = Filter(y * y, gd) - my * my;
  const at::Tensor sxy = Filter(x * y, gd) - mx * my;
  const at::Tensor map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2));
  return ToVector(map.mean({1, 2, 3}));
}

std::vector<double> PsnrPairs(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor d = (a.to(at::kDouble) - b.to(at::kDouble)) * 255.0;
  const std::vector<double> mse = ToVector(d.pow(2).mean({1, 2, 3}));
  std::vector<double> out;
  for (double m : mse) out.push_back(m <= 0 ? kPsnrCap : std::min(kPsnrCap, 10.0 * std::log10(255.0 * 255.0 / m)));
  return out;
}

MetricSummary Summarize(const std::vector<PairMetrics>& pairs) {
  MetricSummary s;
  for (const PairMetrics& p : pairs) {
    ++s.pairs;
    s.ssim += p.ssim;
    s.psnr += p.psnr;
    s.flicker += p.flicker;
    for (const auto& [k, v] : p.features) s.features[k] += v;
  }
  if (s.pairs > 0) {
    const double n = static_cast<double>(s.pairs);
    s.ssim /= n;
    s.psnr /= n;
    s.flicker /= n;
    for (auto& [k, v] : s.features) v /= n;
  }
  return s;
}

Result<VideoMetrics> EvaluateFrames(const at::Tensor& frames, const MetricOptions& options,
                                    const std::vector<FeatureEncoder*>& encoders, const std::string& name) {
  STAS_RETURN_IF_ERROR(CheckFrames(frames, "frames"));
  const std::string label = name.empty() ? "video" : name;
  if (frames.size(0) < 2)
    return InvalidArgument(label + ": temporal metrics need at least 2 frames, got " + std::to_string(frames.size(0)));
  if (options.temporal_compression < 1)
    return InvalidArgument("temporal compression must be >= 1, got " + std::to_string(options.temporal_compression));
  if (options.ssim_window < 1 || !(options.ssim_sigma > 0) || options.batch_pairs < 1)
    return InvalidArgument("SSIM window must be >= 1, sigma > 0 and batch >= 1");
  const at::Tensor f = frames.to(at::kCPU, at::kFloat).contiguous();
  const int64_t t = f.size(0), n = t - 1;

  VideoMetrics m;
  m.name = label;
  m.frames = t;
  m.height = f.size(1);
  m.width = f.size(2);
  m.temporal_compression = options.temporal_compression;
  m.pairs.resize(n);
  const std::vector<double> mean_luma = ToVector(Luma(f).mean({1, 2}));
  for (int64_t begin = 0; begin < n; begin += options.batch_pairs) {
    const int64_t k = std::min(options.batch_pairs, n - begin);
    const at::Tensor a = f.narrow(0, begin, k), b = f.narrow(0, begin + 1, k);
    const std::vector<double> ssim = SsimPairs(a, b, options), psnr = PsnrPairs(a, b);
    for (int64_t i = 0; i < k; ++i) {
      PairMetrics& p = m.pairs[begin + i];
      p.first = begin + i;
      p.cross_chunk = ChunkOfFrame(p.first, options.temporal_compression) !=
                      ChunkOfFrame(p.first + 1, options.temporal_compression);
      p.ssim = ssim[i];
      p.psnr = psnr[i];
      p.flicker = std::abs(mean_luma[p.first + 1] - mean_luma[p.first]);
    }
  }
  for (FeatureEncoder* encoder : encoders) {
    auto sims = encoder->ConsecutiveSimilarity(f);
    if (!sims.ok()) return sims.status().WithContext(label);
    for (int64_t i = 0; i < n; ++i) m.pairs[i].features[encoder->name()] = (*sims)[i];
  }
  std::vector<PairMetrics> within, cross;
  for (const PairMetrics& p : m.pairs) (p.cross_chunk ? cross : within).push_back(p);
  m.all = Summarize(m.pairs);
  m.within_chunk = Summarize(within);
  m.cross_chunk = Summarize(cross);
  return m;
}

Result<VideoMetrics> EvaluateVideoFile(const std::string& path, const MetricOptions& options,
                                       const std::vector<FeatureEncoder*>& encoders) {
  STAS_ASSIGN_OR_RETURN(DecodedVideo video, ReadVideo(path));
  return EvaluateFrames(video.frames, options, encoders, path);
}

Result<MetricSummary> CompareVideos(const at::Tensor& a, const at::Tensor& b, const MetricOptions& options) {
  STAS_RETURN_IF_ERROR(CheckFrames(a, "first video's frames"));
  STAS_RETURN_IF_ERROR(CheckFrames(b, "second video's frames"));
  if (!a.sizes().equals(b.sizes()))
    return InvalidArgument("cannot compare videos of different sizes: " + c10::str(a.sizes()) + " vs " +
                           c10::str(b.sizes()) + " ([frames, height, width, 3])");
  MetricSummary s;
  std::vector<PairMetrics> rows;
  for (int64_t begin = 0; begin < a.size(0); begin += options.batch_pairs) {
    const int64_t k = std::min(options.batch_pairs, a.size(0) - begin);
    const at::Tensor x = a.narrow(0, begin, k).to(at::kFloat), y = b.narrow(0, begin, k).to(at::kFloat);
    const std::vector<double> ssim = SsimPairs(x, y, options), psnr = PsnrPairs(x, y);
    const std::vector<double> lx = ToVector(Luma(x).mean({1, 2})), ly = ToVector(Luma(y).mean({1, 2}));
    for (int64_t i = 0; i < k; ++i) {
      PairMetrics p;
      p.first = begin + i;
      p.ssim = ssim[i];
      p.psnr = psnr[i];
      p.flicker = std::abs(lx[i] - ly[i]);
      rows.push_back(p);
    }
  }
  return Summarize(rows);
}

Json VideoMetrics::ToJson() const {
  Json pairs_json = Json::array();
  for (const PairMetrics& p : pairs) {
    Json j{{"pair", {p.first, p.first + 1}},
           {"class", p.cross_chunk ? "cross" : "within"},
           {"ssim", p.ssim},
           {"psnr", p.psnr},
           {"flicker", p.flicker}};
    if (!p.features.empty()) j["features"] = p.features;
    pairs_json.push_back(std::move(j));
  }
  return Json{{"video", name},
              {"frames", frames},
              {"width", width},
              {"height", height},
              {"temporal_compression", temporal_compression},
              {"summary", {{"all", SummaryJson(all)}, {"within_chunk", SummaryJson(within_chunk)},
                           {"cross_chunk", SummaryJson(cross_chunk)}}},
              {"pairs", pairs_json}};
}

}  // namespace stas::eval

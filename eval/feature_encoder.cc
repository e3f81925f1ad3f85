#include "eval/feature_encoder.h"

#include <torch/nn/functional/upsampling.h>
#include <torch/script.h>

#include <filesystem>

namespace stas::eval {

namespace F = torch::nn::functional;

class FeatureEncoder::Impl {
 public:
  explicit Impl(torch::jit::Module module) : module(std::move(module)) {}
  torch::jit::Module module;
};

EncoderOptions DinoDefaults(const std::string& path) {
  EncoderOptions o;
  o.name = "dino";
  o.path = path;
  return o;
}

EncoderOptions ClipDefaults(const std::string& path) {
  EncoderOptions o;
  o.name = "clip";
  o.path = path;
  o.mean = {0.48145466, 0.4578275, 0.40821073};
  o.std = {0.26862954, 0.26130258, 0.27577711};
  return o;
}

FeatureEncoder::FeatureEncoder(EncoderOptions options, std::unique_ptr<Impl> impl)
    : options_(std::move(options)), impl_(std::move(impl)) {}
FeatureEncoder::~FeatureEncoder() = default;

Result<std::unique_ptr<FeatureEncoder>> FeatureEncoder::Load(const EncoderOptions& options) {
  if (options.name.empty()) return InvalidArgument("a feature encoder needs a name");
  if (options.size < 8 || options.size > 4096)
    return InvalidArgument(options.name + ": input size must be in [8, 4096], got " + std::to_string(options.size));
  for (double s : options.std)
    if (!(s > 0)) return InvalidArgument(options.name + ": normalisation std must be > 0");
  if (options.batch < 1) return InvalidArgument(options.name + ": batch must be >= 1");
  std::error_code ec;
  if (!std::filesystem::is_regular_file(options.path, ec))
    return NotFound(options.name + " encoder: no such file: " + options.path);
  try {
    torch::jit::Module module = torch::jit::load(options.path, torch::kCPU);
    module.eval();
    return std::unique_ptr<FeatureEncoder>(
        new FeatureEncoder(options, std::make_unique<Impl>(std::move(module))));
  } catch (const std::exception& e) {
    // The first line of TorchScript's message says what is wrong; the rest is a C++ backtrace.
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    return InvalidArgument(options.name + " encoder: " + options.path + " is not a TorchScript module (" + what + ")");
  }
}

at::Tensor FeatureEncoder::Preprocess(const at::Tensor& frames) const {
  at::Tensor x = frames.to(at::kFloat).permute({0, 3, 1, 2});  // [N, 3, H, W]
  const int64_t h = x.size(2), w = x.size(3), s = options_.size;
  // Shorter side to `size`, then the centre square: the resize-and-crop of torchvision/CLIP transforms.
  const int64_t nh = h <= w ? s : std::max<int64_t>(s, (h * s + w / 2) / w);
  const int64_t nw = h <= w ? std::max<int64_t>(s, (w * s + h / 2) / h) : s;
  if (nh != h || nw != w)
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{nh, nw})
                              .mode(torch::kBilinear)
                              .align_corners(false)
                              .antialias(true));
  const int64_t top = (nh - s) / 2, left = (nw - s) / 2;
  x = x.narrow(2, top, s).narrow(3, left, s);
  const at::Tensor mean = at::tensor({options_.mean[0], options_.mean[1], options_.mean[2]}, at::kFloat).view({1, 3, 1, 1});
  const at::Tensor std = at::tensor({options_.std[0], options_.std[1], options_.std[2]}, at::kFloat).view({1, 3, 1, 1});
  return x.sub(mean).div(std).contiguous();
}

Result<at::Tensor> FeatureEncoder::Embed(const at::Tensor& frames) {
  if (!frames.defined() || frames.dim() != 4 || frames.size(3) != 3)
    return InvalidArgument(options_.name + ": frames must be [N, H, W, 3]");
  std::vector<at::Tensor> parts;
  torch::NoGradGuard no_grad;
  for (int64_t begin = 0; begin < frames.size(0); begin += options_.batch) {
    const int64_t n = std::min(options_.batch, frames.size(0) - begin);
    at::Tensor input = Preprocess(frames.narrow(0, begin, n));
    c10::IValue out;
    try {
      out = impl_->module.forward({input});
    } catch (const std::exception& e) {
      std::string what = e.what();
      return InvalidArgument(options_.name + " encoder failed on a [" + std::to_string(n) + ", 3, " +
                             std::to_string(options_.size) + ", " + std::to_string(options_.size) +
                             "] input: " + what.substr(0, what.find('\n')));
    }
    if (out.isTuple()) out = out.toTupleRef().elements().at(0);
    else if (out.isList() && out.toListRef().size() > 0) out = out.toListRef()[0];
    if (!out.isTensor()) return InvalidArgument(options_.name + " encoder returned " + out.tagKind() + ", not a tensor");
    at::Tensor e = out.toTensor();
    if (e.dim() < 1 || e.size(0) != n)
      return InvalidArgument(options_.name + " encoder returned shape " + c10::str(e.sizes()) + " for " +
                             std::to_string(n) + " frames; expected [" + std::to_string(n) + ", D]");
    parts.push_back(e.reshape({n, -1}).to(at::kFloat));
  }
  return at::cat(parts, 0);
}

Result<std::vector<double>> FeatureEncoder::ConsecutiveSimilarity(const at::Tensor& frames) {
  STAS_ASSIGN_OR_RETURN(at::Tensor e, Embed(frames));
  std::vector<double> out;
  if (e.size(0) < 2) return out;
  const at::Tensor sim =
      at::cosine_similarity(e.narrow(0, 0, e.size(0) - 1), e.narrow(0, 1, e.size(0) - 1), 1, 1e-8).to(at::kDouble);
  const double* p = sim.contiguous().data_ptr<double>();
  out.assign(p, p + sim.numel());
  return out;
}

}  // namespace stas::eval

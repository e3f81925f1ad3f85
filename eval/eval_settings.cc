#include "eval/eval_settings.h"

#include <sstream>

namespace stas::eval {

Result<std::array<double, 3>> ParseTriple(const std::string& text, const std::string& flag) {
  std::array<double, 3> out{};
  std::stringstream ss(text);
  std::string item;
  int n = 0;
  while (std::getline(ss, item, ',')) {
    if (n == 3) return InvalidArgument(flag + ": expected three comma-separated numbers, got '" + text + "'");
    try {
      size_t used = 0;
      out[n] = std::stod(item, &used);
      if (item.find_first_not_of(" \t", used) != std::string::npos) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      return InvalidArgument(flag + ": '" + item + "' is not a number");
    }
    ++n;
  }
  if (n != 3) return InvalidArgument(flag + ": expected three comma-separated numbers, got '" + text + "'");
  return out;
}

Result<MetricOptions> EvalSettings::Options() const {
  if (temporal_compression < 1 || temporal_compression > 64)
    return InvalidArgument("--temporal-compression must be in [1, 64], got " + std::to_string(temporal_compression));
  MetricOptions o;
  o.temporal_compression = temporal_compression;
  return o;
}

Result<std::vector<std::unique_ptr<FeatureEncoder>>> EvalSettings::LoadEncoders() const {
  std::vector<std::unique_ptr<FeatureEncoder>> out;
  struct Spec {
    const std::string& path;
    EncoderOptions options;
    const std::string& mean;
    const std::string& std;
    int size;
    std::string flag;
  };
  for (const Spec& s : {Spec{dino, DinoDefaults(dino), dino_mean, dino_std, dino_size, "--dino"},
                        Spec{clip, ClipDefaults(clip), clip_mean, clip_std, clip_size, "--clip"}}) {
    if (s.path.empty()) continue;
    EncoderOptions o = s.options;
    o.size = s.size;
    if (!s.mean.empty()) {
      STAS_ASSIGN_OR_RETURN(o.mean, ParseTriple(s.mean, s.flag + "-mean"));
    }
    if (!s.std.empty()) {
      STAS_ASSIGN_OR_RETURN(o.std, ParseTriple(s.std, s.flag + "-std"));
    }
    auto encoder = FeatureEncoder::Load(o);
    if (!encoder.ok()) return encoder.status().WithContext(s.flag);
    out.push_back(std::move(*encoder));
  }
  return out;
}

}  // namespace stas::eval

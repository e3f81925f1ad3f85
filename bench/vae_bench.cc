// vae_bench: the Wan VAE decode alone, float32 beside bfloat16, on random weights of a real config:
// time, peak device memory and the colour accuracy of the bfloat16 decode against the float32 one
// (PSNR of the uint8 frames, peak 255). The decode streams (WanVaeDecoder::DecodeStreaming): each piece
// of video becomes uint8 frames on the CPU at once, so the float32 video never exists on the device.
//
//   vae_bench [--config wan21|wan22] [--height 480 --width 832 --frames 81] [--repeats 2] [--float32-too]
//             [--bands 2,4]
//
// --bands N,...: the bfloat16 decode split as an N-GPU group shares it (WanVaeDecoder::DecodeShared's
// bands with their exact halo), each band decoded here in turn on the one device: the slowest band's
// time is one rank's share, so whole / slowest is the decode's speedup on N GPUs before the gather of
// the bands; the stitched bands are compared with the whole decode.
//
// wan21: the Wan2.1 VAE (8x spatial, z 16); wan22: the Wan2.2 TI2V-5B VAE (16x spatial, z 48,
// residual up blocks). The weights are random but well-scaled (the built-in tiny VAE's scheme), the
// latents standard normal: timings and memory are those of the real networks.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "common/check.h"
#include "common/json.h"
#include "common/weights.h"
#include "models/wan/vae.h"
#include "storage/mp4_writer.h"

using namespace stas;

namespace {

using bench::Arg;
using bench::Flag;

Json ConfigJson(const std::string& name) {
  if (name == "wan22") {
    return {{"base_dim", 160}, {"decoder_base_dim", 256}, {"z_dim", 48}, {"dim_mult", {1, 2, 4, 4}},
            {"num_res_blocks", 2}, {"temperal_downsample", {false, true, true}}, {"is_residual", true},
            {"in_channels", 12}, {"out_channels", 12}, {"patch_size", 2}, {"scale_factor_spatial", 16},
            {"scale_factor_temporal", 4}, {"latents_mean", std::vector<double>(48, 0.0)},
            {"latents_std", std::vector<double>(48, 1.0)}};
  }
  return Json::object();  // diffusers' defaults are the Wan2.1 VAE
}

WeightStore RandomWeights(const models::wan::WanVaeConfig& config, at::Device device) {
  auto shapes = models::wan::WanVaeDecoder::WeightShapes(config);
  STAS_CHECK(shapes.ok()) << shapes.status().ToString();
  at::manual_seed(0);
  std::map<std::string, at::Tensor> w;
  auto opts = at::TensorOptions().device(device).dtype(at::kFloat);
  auto ends_with = [](const std::string& s, const std::string& t) {
    return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
  };
  for (const auto& [name, shape] : *shapes) {
    int64_t fan_in = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    if (ends_with(name, ".gamma")) {
      w[name] = 1.0 + 0.1 * at::randn(shape, opts);
    } else if (ends_with(name, ".bias")) {
      w[name] = 0.02 * at::randn(shape, opts);
    } else {
      double gain = ends_with(name, "conv2.weight") ? 0.5 : name == "decoder.conv_out.weight" ? 1.2 : 1.0;
      w[name] = (gain / std::sqrt(static_cast<double>(fan_in))) * at::randn(shape, opts);
    }
  }
  return WeightStore::FromTensors(std::move(w));
}

struct DecodeRun {
  at::Tensor frames;  // [T, H, W, 3] uint8, CPU
  double seconds = 0;
  double peak_gib = 0;
};

DecodeRun Decode(const models::wan::WanVaeDecoder& vae, const at::Tensor& latents, at::Device device,
                 const models::wan::WanVaeDecodeOptions& options = {}) {
  bench::Synchronize(device);
  bench::ResetPeakMemory(device);
  const auto start = std::chrono::steady_clock::now();
  std::vector<at::Tensor> pieces;
  Status st = vae.DecodeStreaming(latents, options, [&](int64_t, const at::Tensor& video) -> Status {
    pieces.push_back(storage::VideoToRgbFrames(video));
    return Status::Ok();
  });
  STAS_CHECK(st.ok()) << st.ToString();
  bench::Synchronize(device);
  DecodeRun run;
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.peak_gib = bench::PeakMemoryGiB(device);
  run.frames = at::cat(pieces, 0);
  return run;
}

void PrintBands(const models::wan::WanVaeDecoder& vae, const at::Tensor& latents, at::Device device,
                const std::vector<int>& band_counts, const DecodeRun& whole) {
  const int64_t h = latents.size(3), w = latents.size(4);
  for (int n : band_counts) {
    const auto bands = models::wan::SplitIntoBands(h, w, n);
    if (bands.empty()) {
      std::printf("  %d bands: the %lldx%lld latent frame cannot be split that far\n", n, (long long)h, (long long)w);
      continue;
    }
    std::vector<at::Tensor> stitched;
    double slowest = 0, peak = 0;
    for (const auto& band : bands) {
      models::wan::WanVaeDecodeOptions options;
      options.tile = band;
      Decode(vae, latents, device, options);  // a band is a new problem size: warm up its kernels first
      DecodeRun run = Decode(vae, latents, device, options);
      slowest = std::max(slowest, run.seconds);
      peak = std::max(peak, run.peak_gib);
      stitched.push_back(run.frames);
    }
    const at::Tensor video = at::cat(stitched, h > w ? 1 : 2);
    const int64_t differing = video.ne(whole.frames).sum().item<int64_t>();
    std::printf("  %d bands (halo %lld latent positions): slowest band %.3f s, peak %.2f GiB -> %.2fx the whole "
                "decode's %.3f s; stitched vs whole: PSNR %.2f dB, %lld of %lld bytes differ\n",
                n, (long long)vae.config().UpBlocksReach(), slowest, peak, whole.seconds / slowest, whole.seconds,
                bench::Psnr(video, whole.frames), (long long)differing, (long long)video.numel());
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string config_name = Arg(argc, argv, "--config", "wan21");
  const int64_t height = std::stoi(Arg(argc, argv, "--height", "480"));
  const int64_t width = std::stoi(Arg(argc, argv, "--width", "832"));
  const int64_t frames = std::stoi(Arg(argc, argv, "--frames", "81"));
  const int repeats = std::stoi(Arg(argc, argv, "--repeats", "2"));
  const bool float32_too = Flag(argc, argv, "--float32-too");
  const std::vector<int> band_counts = bench::IntList(Arg(argc, argv, "--bands", ""));
  const at::Device device = at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);

  auto config = models::wan::WanVaeConfig::FromJson(ConfigJson(config_name));
  if (!config.ok()) {
    std::fprintf(stderr, "vae_bench: %s\n", config.status().ToString().c_str());
    return 1;
  }
  const int64_t spatial = config->scale_factor_spatial;
  if (height % spatial || width % spatial || (frames - 1) % config->scale_factor_temporal) {
    std::fprintf(stderr, "vae_bench: %lldx%lldx%lld does not fit the VAE's compression\n", (long long)width,
                 (long long)height, (long long)frames);
    return 1;
  }
  const WeightStore weights = RandomWeights(*config, device);
  at::manual_seed(1);
  const at::Tensor latents =
      at::randn({1, config->z_dim, (frames - 1) / config->scale_factor_temporal + 1, height / spatial, width / spatial},
                at::TensorOptions().device(device).dtype(at::kFloat));
  std::printf("vae_bench: %s VAE, %lldx%lldx%lld on %s\n", config_name.c_str(), (long long)width, (long long)height,
              (long long)frames, bench::DeviceName(device).c_str());

  at::Tensor reference;
  std::vector<at::ScalarType> dtypes = {at::kBFloat16};
  if (float32_too) dtypes.insert(dtypes.begin(), at::kFloat);
  for (at::ScalarType dtype : dtypes) {
    auto vae = models::wan::WanVaeDecoder::Load(*config, weights, at::TensorOptions().device(device).dtype(dtype));
    if (!vae.ok()) {
      std::fprintf(stderr, "vae_bench: %s\n", vae.status().ToString().c_str());
      return 1;
    }
    const char* name = dtype == at::kFloat ? "float32" : "bfloat16";
    for (int r = 0; r < repeats; ++r) {
      // The weights stay resident; the peak counts them plus the decode's working set.
      DecodeRun run = Decode(*vae, latents, device);
      std::printf("  %s run %d: decode %.3f s, peak %.2f GiB, frames [%lld, %lld, %lld, 3]", name, r, run.seconds,
                  run.peak_gib, (long long)run.frames.size(0), (long long)run.frames.size(1),
                  (long long)run.frames.size(2));
      if (dtype == at::kFloat) reference = run.frames;
      if (dtype != at::kFloat && reference.defined()) std::printf(", PSNR vs float32 %.2f dB", bench::Psnr(run.frames, reference));
      std::printf("\n");
      if (dtype == at::kBFloat16 && r == repeats - 1) PrintBands(*vae, latents, device, band_counts, run);
    }
  }
  return 0;
}

// Wan VAE decoder on CUDA: parity with the reference fixtures in float32 and bfloat16, and a peak
// memory that does not grow with the number of frames. Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include "common/fixture.h"
#include "models/wan/vae.h"
#include "models/wan/vae_tiny.h"

#if STAS_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace stas::models::wan {
namespace {

bool HaveCuda() { return at::hasCUDA(); }

TEST(WanVaeGpu, FixturesMatchInFloat32AndBfloat16) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  for (const char* name : {"wan_vae_tiny", "wan22_vae_tiny"}) {
    auto fixture = Fixture::Open(std::string(STAS_FIXTURES_DIR) + "/" + name);
    ASSERT_TRUE(fixture.ok()) << fixture.status().ToString();
    auto config = WanVaeConfig::FromJson(fixture->config());
    ASSERT_TRUE(config.ok());
    at::Tensor latents = *fixture->Io("latents");
    at::Tensor reference = *fixture->Io("video");
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      auto decoder = WanVaeDecoder::Load(*config, fixture->weights(), at::TensorOptions().device(at::kCUDA).dtype(dtype));
      ASSERT_TRUE(decoder.ok()) << decoder.status().ToString();
      auto video = decoder->Decode(latents);
      ASSERT_TRUE(video.ok()) << video.status().ToString();
      EXPECT_TRUE(video->is_cuda());
      at::Tensor diff = (video->to(at::kCPU, at::kFloat) - reference).abs();
      const double max_err = diff.max().item<double>(), mean_err = diff.mean().item<double>();
      // float32 convolutions may run in TF32 on the GPU; bfloat16 keeps ~3 significant digits.
      const double max_allowed = dtype == at::kFloat ? 5e-3 : 0.1;
      const double mean_allowed = dtype == at::kFloat ? 5e-4 : 0.02;
      EXPECT_LT(max_err, max_allowed) << name << " " << dtype;
      EXPECT_LT(mean_err, mean_allowed) << name << " " << dtype;
      std::printf("%s %s: max_abs_err %.3e mean_abs_err %.3e\n", name, c10::toString(dtype), max_err, mean_err);
    }
  }
}

TEST(WanVaeGpu, PeakMemoryDoesNotGrowWithFrames) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
#if !STAS_HAVE_CUDA
  GTEST_SKIP() << "built without CUDA";
#else
  auto config = WanVaeConfig::FromJson(TinyWanVaeConfigJson());
  ASSERT_TRUE(config.ok());
  auto decoder = WanVaeDecoder::Load(*config, TinyWanVaeWeights(1),
                                     at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16));
  ASSERT_TRUE(decoder.ok()) << decoder.status().ToString();
  // 480p: latent 60x104 -> 480x832 video.
  auto peak_for = [&](int64_t latent_frames) {
    auto gen = at::detail::createCPUGenerator(5);
    at::Tensor z = at::randn({1, 16, latent_frames, 60, 104}, gen).to(at::kCUDA);
    c10::cuda::CUDACachingAllocator::emptyCache();
    c10::cuda::CUDACachingAllocator::resetPeakStats(0);
    const int64_t before = c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].current;
    Status st = decoder->DecodeStreaming(z, {}, [](int64_t, const at::Tensor&) { return Status::Ok(); });
    EXPECT_TRUE(st.ok()) << st.ToString();
    const int64_t peak = c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak;
    return static_cast<double>(peak - before);
  };
  peak_for(2);
  const double short_run = peak_for(3);
  const double long_run = peak_for(12);
  std::printf("peak working set: 3 latent frames %.1f MiB, 12 latent frames %.1f MiB\n", short_run / 1048576.0,
              long_run / 1048576.0);
  EXPECT_LT(long_run, short_run * 1.05 + (1 << 20));
#endif
}

}  // namespace
}  // namespace stas::models::wan

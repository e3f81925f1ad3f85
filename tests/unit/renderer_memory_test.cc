// The Renderer's memory and caching options: negative-prompt embeddings encoded once per model,
// --text-encoder-device / --vae-dtype parsing, and the bfloat16 VAE decode's distance from float32.
#include <gtest/gtest.h>

#include <cmath>

#include "worker/renderer.h"

namespace stas::worker {
namespace {

jobspec::RenderSpec SmallSpec(const std::string& prompt) {
  jobspec::RenderSpec spec;
  spec.model = "tiny";
  spec.prompt = prompt;
  spec.frames = 5;
  spec.steps = 2;
  spec.seed = 3;
  spec.guidance = 5.0;  // CFG on: the negative prompt is used
  return spec;
}

std::unique_ptr<Renderer> LoadTiny(RendererOptions options = {}) {
  options.model = "tiny";
  options.device = at::Device(at::kCPU);
  auto renderer = Renderer::Load(options);
  EXPECT_TRUE(renderer.ok()) << renderer.status().ToString();
  return renderer.ok() ? std::move(*renderer) : nullptr;
}

double Psnr(const at::Tensor& a, const at::Tensor& b) {
  const double mse = (a.to(at::kDouble) - b.to(at::kDouble)).pow(2).mean().item<double>();
  return mse == 0 ? 100.0 : 10.0 * std::log10(255.0 * 255.0 / mse);
}

TEST(RendererMemory, TheNegativePromptIsEncodedOnceAndTheVideosDoNotChange) {
  auto cached = LoadTiny();
  ASSERT_TRUE(cached);
  jobspec::RenderSpec first = SmallSpec("a red fox"), second = SmallSpec("a grey wolf");
  auto a = cached->RenderFrames(first);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(cached->prompt_encodings(), 2);  // the prompt and the empty negative prompt
  auto b = cached->RenderFrames(second);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(cached->prompt_encodings(), 3);  // only the new prompt
  // Another negative prompt is encoded (once) too.
  jobspec::RenderSpec third = SmallSpec("a grey wolf");
  third.negative_prompt = "blurry";
  ASSERT_TRUE(cached->RenderFrames(third).ok());
  ASSERT_TRUE(cached->RenderFrames(third).ok());
  EXPECT_EQ(cached->prompt_encodings(), 6);  // 3 + (prompt, "blurry") + prompt

  // A fresh renderer (nothing cached) renders the second job to the same bytes.
  auto fresh = LoadTiny();
  ASSERT_TRUE(fresh);
  auto again = fresh->RenderFrames(second);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(at::equal(again->frames, b->frames));
}

TEST(RendererMemory, MemoryFlagsParseOrFailWithoutChangingTheOptions) {
  RendererOptions options;
  ASSERT_TRUE(ParseMemoryFlags("", "", &options).ok());
  EXPECT_FALSE(options.text_encoder_device.has_value());
  EXPECT_FALSE(options.vae_dtype.has_value());
  ASSERT_TRUE(ParseMemoryFlags("cpu", "bfloat16", &options).ok());
  EXPECT_TRUE(options.text_encoder_device->is_cpu());
  EXPECT_EQ(*options.vae_dtype, at::kBFloat16);

  RendererOptions untouched;
  Status bad_device = ParseMemoryFlags("gpu7", "float32", &untouched);
  EXPECT_EQ(bad_device.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_device.message().find("--text-encoder-device"), std::string::npos) << bad_device.message();
  Status bad_dtype = ParseMemoryFlags("cpu", "fp8", &untouched);
  EXPECT_EQ(bad_dtype.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_dtype.message().find("--vae-dtype"), std::string::npos) << bad_dtype.message();
  EXPECT_FALSE(untouched.text_encoder_device.has_value());
  EXPECT_FALSE(untouched.vae_dtype.has_value());
}

TEST(RendererMemory, AttentionFlagParsesOrFailsWithoutChangingTheOptions) {
  RendererOptions options;
  ASSERT_TRUE(ParseAttentionFlag("", &options).ok());
  EXPECT_EQ(options.attention, compat::AttentionKernel::kAuto);
  ASSERT_TRUE(ParseAttentionFlag("cudnn", &options).ok());
  EXPECT_EQ(options.attention, compat::AttentionKernel::kCudnn);
  Status bad = ParseAttentionFlag("flash3", &options);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("--attention"), std::string::npos) << bad.message();
  EXPECT_EQ(options.attention, compat::AttentionKernel::kCudnn);
}

TEST(RendererMemory, TheBfloat16DecodeStaysCloseToFloat32AndCpuDefaultsStayFloat32) {
  auto f32 = LoadTiny();  // the CPU default: float32 VAE, the parity path
  RendererOptions bf16_options;
  bf16_options.vae_dtype = at::kBFloat16;
  auto bf16 = LoadTiny(bf16_options);
  ASSERT_TRUE(f32 && bf16);
  const jobspec::RenderSpec spec = SmallSpec("a red fox");
  auto reference = f32->RenderFrames(spec);
  auto approx = bf16->RenderFrames(spec);
  ASSERT_TRUE(reference.ok() && approx.ok());
  ASSERT_EQ(reference->frames.sizes(), approx->frames.sizes());
  const double psnr = Psnr(approx->frames, reference->frames);
  EXPECT_GT(psnr, 30.0);
  EXPECT_LT(psnr, 100.0);  // really a different decode
  // The text encoder on the CPU explicitly is the default on the CPU: same bytes.
  RendererOptions text_cpu;
  text_cpu.text_encoder_device = at::Device(at::kCPU);
  auto explicit_cpu = LoadTiny(text_cpu);
  ASSERT_TRUE(explicit_cpu);
  EXPECT_TRUE(explicit_cpu->text_encoder_device().is_cpu());
  auto same = explicit_cpu->RenderFrames(spec);
  ASSERT_TRUE(same.ok());
  EXPECT_TRUE(at::equal(same->frames, reference->frames));
}

}  // namespace
}  // namespace stas::worker

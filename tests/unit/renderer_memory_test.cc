// The Renderer's memory and caching options: negative-prompt embeddings encoded once per model,
// the renderer flags' parsing (--text-encoder-device, --vae-dtype, --attention, --fp8), and the bfloat16 VAE decode's distance from float32.
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

// The coordinator's look-ahead: prompts handed to PrefetchPrompts are encoded during the render before
// the job that needs them, which then reuses the embedding (same frames as a fresh encode); a hint that
// does not come true costs one encode and changes nothing else.
TEST(RendererMemory, UpcomingPromptsAreEncodedDuringTheRenderBeforeTheirJob) {
  auto renderer = LoadTiny();
  auto fresh = LoadTiny();
  ASSERT_TRUE(renderer && fresh);
  renderer->PrefetchPrompts({"a blue heron"});
  ASSERT_TRUE(renderer->RenderFrames(SmallSpec("a red fox")).ok());
  auto heron = renderer->RenderFrames(SmallSpec("a blue heron"));
  ASSERT_TRUE(heron.ok()) << heron.status().ToString();
  EXPECT_EQ(renderer->prompt_encodings(), 3) << "the fox, the empty negative prompt and the heron, once each";
  EXPECT_EQ(renderer->prefetched_prompt_hits(), 1);
  auto expected = fresh->RenderFrames(SmallSpec("a blue heron"));
  ASSERT_TRUE(expected.ok());
  EXPECT_TRUE(at::equal(heron->frames, expected->frames));

  renderer->PrefetchPrompts({"an owl"});
  ASSERT_TRUE(renderer->RenderFrames(SmallSpec("a grey wolf")).ok());
  ASSERT_TRUE(renderer->RenderFrames(SmallSpec("a green frog")).ok());
  EXPECT_EQ(renderer->prompt_encodings(), 6) << "wolf, owl (unused), frog";
  EXPECT_EQ(renderer->prefetched_prompt_hits(), 1);
}

TEST(RendererMemory, RendererFlagsParseOrFailWithoutChangingTheOptions) {
  RendererOptions options;
  ASSERT_TRUE(ApplyRendererFlags({}, &options).ok());
  EXPECT_FALSE(options.text_encoder_device.has_value());
  EXPECT_FALSE(options.vae_dtype.has_value());
  EXPECT_EQ(options.attention, compat::AttentionKernel::kAuto);
  EXPECT_FALSE(options.fp8_linears.has_value());
  ASSERT_TRUE(ApplyRendererFlags({"cpu", "bfloat16", "cudnn", "row"}, &options).ok());
  EXPECT_TRUE(options.text_encoder_device->is_cpu());
  EXPECT_EQ(*options.vae_dtype, at::kBFloat16);
  EXPECT_EQ(options.attention, compat::AttentionKernel::kCudnn);
  ASSERT_TRUE(options.fp8_linears.has_value());
  EXPECT_EQ(*options.fp8_linears, models::Fp8Scaling::kPerRow);

  // Each bad flag is named, and a bad flag after good ones leaves every option as it was.
  const std::pair<RendererFlags, const char*> bad[] = {
      {{"gpu7", "", "", ""}, "--text-encoder-device"},
      {{"cpu", "fp8", "", ""}, "--vae-dtype"},
      {{"cpu", "float32", "flash3", ""}, "--attention"},
      {{"cpu", "float32", "flash", "e5m2"}, "--fp8"},
  };
  for (const auto& [flags, name] : bad) {
    RendererOptions untouched;
    Status st = ApplyRendererFlags(flags, &untouched);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << name;
    EXPECT_NE(st.message().find(name), std::string::npos) << st.message();
    EXPECT_FALSE(untouched.text_encoder_device.has_value()) << name;
    EXPECT_FALSE(untouched.vae_dtype.has_value()) << name;
    EXPECT_EQ(untouched.attention, compat::AttentionKernel::kAuto) << name;
    EXPECT_FALSE(untouched.fp8_linears.has_value()) << name;
  }
}

// Float8 linears need a CUDA device (and LibTorch >= 2.5): on the CPU the load says so instead of
// rendering in bfloat16 silently. The GPU path is measured by render_bench --fp8 --psnr-vs-bf16.
TEST(RendererMemory, Fp8LinearsOnTheCpuAreRefusedAtLoad) {
  RendererOptions options;
  options.model = "tiny";
  options.device = at::Device(at::kCPU);
  options.fp8_linears = models::Fp8Scaling::kPerRow;
  auto renderer = Renderer::Load(options);
  ASSERT_FALSE(renderer.ok());
  EXPECT_EQ(renderer.status().code(), StatusCode::kNotImplemented) << renderer.status().ToString();
  EXPECT_NE(renderer.status().message().find("float8"), std::string::npos) << renderer.status().message();
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

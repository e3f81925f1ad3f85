// T5 / UMT5 encoders on CUDA: parity with the reference fixtures in float32 and bfloat16, the prompt
// encoder on the device, and (when STAS_UMT5_XXL_CHECKPOINT names a diffusers Wan checkpoint folder) the
// real UMT5-XXL loaded in bfloat16. Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "common/checkpoint.h"
#include "common/fixture.h"
#include "models/text/prompt_encoder.h"
#include "models/text/t5_encoder.h"

namespace stas::models::text {
namespace {

TEST(TextEncoderGpu, FixturesMatchInFloat32AndBfloat16) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  for (const char* name : {"umt5_tiny", "t5_tiny"}) {
    auto fixture = Fixture::Open(std::string(STAS_FIXTURES_DIR) + "/" + name);
    ASSERT_TRUE(fixture.ok()) << fixture.status().ToString();
    auto config = T5EncoderConfig::FromJson(fixture->config());
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    const at::Tensor ids = *fixture->Io("input_ids");
    const at::Tensor mask = *fixture->Io("attention_mask");
    const at::Tensor reference = *fixture->Io("last_hidden_state");
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      auto encoder = T5Encoder::Load(*config, fixture->weights(), at::Device(at::kCUDA, 0), dtype);
      ASSERT_TRUE(encoder.ok()) << encoder.status().ToString();
      auto out = encoder->Forward(ids, mask);
      ASSERT_TRUE(out.ok()) << out.status().ToString();
      EXPECT_TRUE(out->is_cuda());
      EXPECT_EQ(out->scalar_type(), dtype);
      const at::Tensor diff = (out->to(at::kCPU, at::kFloat) - reference).abs();
      const double max_err = diff.max().item<double>(), mean_err = diff.mean().item<double>();
      // float32 matmuls may use TF32 on the GPU; bfloat16 keeps ~3 significant digits of O(1) outputs.
      EXPECT_LT(max_err, dtype == at::kFloat ? 5e-3 : 0.15) << name << " " << c10::toString(dtype);
      EXPECT_LT(mean_err, dtype == at::kFloat ? 5e-4 : 0.03) << name << " " << c10::toString(dtype);
      std::printf("%s %s: max_abs_err %.3e mean_abs_err %.3e\n", name, c10::toString(dtype), max_err, mean_err);
    }
  }
}

TEST(TextEncoderGpu, TinyPromptEncoderMatchesTheCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const std::vector<std::string> prompts = {"a cat and a dog baking a cake together in a kitchen", ""};
  auto cpu = PromptEncoder::Tiny(0);
  auto gpu = PromptEncoder::Tiny(0, at::Device(at::kCUDA, 0), at::kBFloat16);
  ASSERT_TRUE(cpu.ok() && gpu.ok());
  auto a = cpu->Encode(prompts);
  auto b = gpu->Encode(prompts);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status().ToString();
  EXPECT_TRUE(b->is_cuda());
  EXPECT_LT((*a - b->to(at::kCPU, at::kFloat)).abs().max().item<double>(), 0.15);
}

// Set STAS_UMT5_XXL_CHECKPOINT to a diffusers Wan2.1 folder (tokenizer/spiece.model, text_encoder/) to
// load the real 5.7B-parameter encoder in bfloat16 and encode a prompt.
TEST(TextEncoderGpu, RealUmt5XxlCheckpoint) {
  const char* dir = std::getenv("STAS_UMT5_XXL_CHECKPOINT");
  if (!at::hasCUDA() || !dir) GTEST_SKIP() << "needs CUDA and STAS_UMT5_XXL_CHECKPOINT";
  auto checkpoint = CheckpointFolder::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().ToString();
  auto encoder = PromptEncoder::FromCheckpoint(*checkpoint, at::Device(at::kCUDA, 0), at::kBFloat16,
                                               PromptEncoderOptions::Wan());
  ASSERT_TRUE(encoder.ok()) << encoder.status().ToString();
  auto tokens = encoder->Tokenize({"A cat and a dog baking a cake together in a kitchen."});
  ASSERT_TRUE(tokens.ok());
  std::printf("ids:");
  for (int64_t t = 0; t < tokens->lengths[0]; ++t) std::printf(" %lld", static_cast<long long>(tokens->input_ids[t]));
  std::printf("\n");
  auto emb = encoder->Encode({"A cat and a dog baking a cake together in a kitchen."});
  ASSERT_TRUE(emb.ok()) << emb.status().ToString();
  EXPECT_EQ(emb->sizes(), (std::vector<int64_t>{1, 512, 4096}));
  EXPECT_TRUE(emb->isfinite().all().item<bool>());
}

}  // namespace
}  // namespace stas::models::text

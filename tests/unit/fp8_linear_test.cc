// The opt-in float8 linear layers (models/fp8_linear.h) where they cannot run: the CPU build (LibTorch
// 1.13, no _scaled_mm) and any CPU device. Every entry point must say why, and a model asked to switch
// must stay as it was. The float8 numbers themselves are measured on a GPU (bench/dit_bench --fp8).
#include <gtest/gtest.h>

#include "common/torch_compat.h"
#include "models/fp8_linear.h"
#include "models/wan/transformer.h"
#include "support/wan_test_models.h"

namespace stas::models {
namespace {

TEST(Fp8Linear, ParsesTheScalingAndRefusesOthers) {
  EXPECT_EQ(*ParseFp8Scaling("row"), Fp8Scaling::kPerRow);
  EXPECT_EQ(*ParseFp8Scaling("tensor"), Fp8Scaling::kPerTensor);
  const auto bad = ParseFp8Scaling("e5m2");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("'row' or 'tensor'"), std::string::npos) << bad.status().ToString();
  EXPECT_STREQ(Fp8ScalingName(Fp8Scaling::kPerTensor), "tensor");
}

TEST(Fp8Linear, RefusedOnTheCpuWithAReason) {
  const Status support = Fp8LinearSupport(at::kCPU);
  ASSERT_FALSE(support.ok());
  EXPECT_EQ(support.code(), StatusCode::kNotImplemented);
  // The CPU build's LibTorch lacks _scaled_mm: the message names the version; otherwise the device.
  const std::string expected = compat::kHasScaledMm ? "CUDA device" : "LibTorch >= 2.5";
  EXPECT_NE(support.message().find(expected), std::string::npos) << support.ToString();

  const auto quantized = QuantizeFp8Weight(at::randn({32, 16}), Fp8Scaling::kPerRow);
  ASSERT_FALSE(quantized.ok());
  EXPECT_EQ(quantized.status().code(), StatusCode::kNotImplemented);
  EXPECT_FALSE(QuantizeFp8Weight(at::randn({32}), Fp8Scaling::kPerRow).ok()) << "not a matrix";
  EXPECT_THROW(Fp8Linear(at::randn({2, 16}), Fp8Weight{}, {}), std::exception) << "no quantized weight";
}

TEST(Fp8Linear, WanTransformerRefusesAndStaysUnchanged) {
  wan::WanTransformerConfig c;
  c.patch_size = {1, 2, 2};
  c.num_attention_heads = 2;
  c.attention_head_dim = 8;
  c.in_channels = 4;
  c.out_channels = 4;
  c.text_dim = 8;
  c.freq_dim = 16;
  c.ffn_dim = 32;
  c.num_layers = 1;
  c.rope_max_seq_len = 16;
  auto model = wan::WanTransformer::Load(c, WeightStore::FromTensors(testing::RandomWanTensors(c, 3)));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  at::manual_seed(5);
  const at::Tensor latents = at::randn({1, 4, 1, 4, 4}), t = at::full({1}, 500.0), text = at::randn({1, 3, 8});
  const at::Tensor before = *model->Forward(latents, t, text);
  const Status status = model->UseFp8Linears(Fp8Scaling::kPerRow);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kNotImplemented) << status.ToString();
  EXPECT_FALSE(model->uses_fp8_linears());
  const at::Tensor after = *model->Forward(latents, t, text);
  EXPECT_TRUE(at::equal(before, after)) << "a refused switch must leave the model as it was";
}

}  // namespace
}  // namespace stas::models

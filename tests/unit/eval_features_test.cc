// eval/feature_encoder.h: TorchScript encoders built here, in C++, and saved to a temporary file.
#include <gtest/gtest.h>

#include <torch/script.h>

#include "eval/eval_settings.h"
#include "eval/feature_encoder.h"
#include "eval/video_metrics.h"
#include "support/temp_dir.h"

namespace stas::eval {
namespace {

// A module whose embedding is the per-channel mean of its (normalised) input: [N, 3].
std::string SaveMeanEncoder(const testing::TempDir& dir, const std::string& name, const std::string& body) {
  torch::jit::Module module("MeanEncoder");
  module.define(body);
  const std::string path = dir.File(name);
  module.save(path);
  return path;
}

const char* kMeanForward = R"(
def forward(self, x):
    return x.mean(dim=[2, 3])
)";

// Frames [T, H, W, 3] of one solid colour each.
at::Tensor Solid(const std::vector<std::array<float, 3>>& colours, int64_t h = 48, int64_t w = 64) {
  std::vector<at::Tensor> frames;
  for (const auto& c : colours)
    frames.push_back(at::tensor({c[0], c[1], c[2]}, at::kFloat).view({1, 1, 3}).expand({h, w, 3}));
  return at::stack(frames).contiguous();
}

EncoderOptions Plain(const std::string& path) {
  EncoderOptions o;
  o.name = "mean";
  o.path = path;
  o.size = 32;
  o.mean = {0, 0, 0};
  o.std = {1, 1, 1};
  return o;
}

TEST(EvalFeatures, CosineOfConsecutiveEmbeddingsFromATorchScriptModule) {
  testing::TempDir dir;
  auto encoder = FeatureEncoder::Load(Plain(SaveMeanEncoder(dir, "mean.pt", kMeanForward)));
  ASSERT_TRUE(encoder.ok()) << encoder.status().ToString();
  // red, red, green, green, red: cos = 1, 0, 1, 0 (orthogonal mean colours).
  auto sims = (*encoder)->ConsecutiveSimilarity(Solid({{1, 0, 0}, {1, 0, 0}, {0, 1, 0}, {0, 1, 0}, {1, 0, 0}}));
  ASSERT_TRUE(sims.ok()) << sims.status().ToString();
  ASSERT_EQ(sims->size(), 4u);
  EXPECT_NEAR((*sims)[0], 1.0, 1e-5);
  EXPECT_NEAR((*sims)[1], 0.0, 1e-5);
  EXPECT_NEAR((*sims)[2], 1.0, 1e-5);
  EXPECT_NEAR((*sims)[3], 0.0, 1e-5);
  // Through EvaluateFrames the similarity is a per-pair feature and in the summaries.
  auto m = EvaluateFrames(Solid({{1, 0, 0}, {1, 0, 0}, {0, 1, 0}}), MetricOptions{}, {encoder->get()});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_NEAR(m->pairs[0].features.at("mean"), 1.0, 1e-5);  // pair 0-1: cross-chunk
  EXPECT_NEAR(m->pairs[1].features.at("mean"), 0.0, 1e-5);  // pair 1-2: within chunk 1
  EXPECT_NEAR(m->cross_chunk.features.at("mean"), 1.0, 1e-5);
  EXPECT_NEAR(m->within_chunk.features.at("mean"), 0.0, 1e-5);
  EXPECT_TRUE(m->ToJson()["pairs"][0]["features"].contains("mean"));
}

TEST(EvalFeatures, PreprocessingResizesCropsAndNormalises) {
  testing::TempDir dir;
  EncoderOptions o = ClipDefaults(SaveMeanEncoder(dir, "mean.pt", kMeanForward));
  o.size = 32;
  auto encoder = FeatureEncoder::Load(o);
  ASSERT_TRUE(encoder.ok()) << encoder.status().ToString();
  const at::Tensor x = (*encoder)->Preprocess(Solid({{0.5f, 0.5f, 0.5f}}, 48, 64));
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{1, 3, 32, 32}));
  EXPECT_NEAR(x[0][0][5][5].item<double>(), (0.5 - 0.48145466) / 0.26862954, 1e-4);
  EXPECT_NEAR(x[0][2][5][5].item<double>(), (0.5 - 0.40821073) / 0.27577711, 1e-4);
  EXPECT_EQ(DinoDefaults("x").mean[0], 0.485);
  EXPECT_EQ(DinoDefaults("x").size, 224);
}

TEST(EvalFeatures, ATupleOutputUsesItsFirstElement) {
  testing::TempDir dir;
  const std::string path = SaveMeanEncoder(dir, "tuple.pt", R"(
def forward(self, x):
    return (x.mean(dim=[2, 3]), x)
)");
  auto encoder = FeatureEncoder::Load(Plain(path));
  ASSERT_TRUE(encoder.ok());
  auto e = (*encoder)->Embed(Solid({{1, 0, 0}, {0, 0, 1}}));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->sizes(), (std::vector<int64_t>{2, 3}));
}

TEST(EvalFeatures, BadEncodersAreClearErrors) {
  testing::TempDir dir;
  auto missing = FeatureEncoder::Load(Plain(dir.File("none.pt")));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  auto junk = FeatureEncoder::Load(Plain(dir.Write("junk.pt", "not a zip archive")));
  ASSERT_FALSE(junk.ok());
  EXPECT_EQ(junk.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(junk.status().message().find("not a TorchScript module"), std::string::npos) << junk.status().message();
  // A module that answers a scalar is not an embedding per frame.
  auto scalar = FeatureEncoder::Load(Plain(SaveMeanEncoder(dir, "scalar.pt", R"(
def forward(self, x):
    return x.mean()
)")));
  ASSERT_TRUE(scalar.ok());
  auto e = (*scalar)->Embed(Solid({{1, 0, 0}, {0, 1, 0}}));
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("expected [2, D]"), std::string::npos) << e.status().message();
  // Settings name the flag.
  EvalSettings s;
  s.dino = dir.File("none.pt");
  auto loaded = s.LoadEncoders();
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("--dino"), std::string::npos);
  s.dino = SaveMeanEncoder(dir, "ok.pt", kMeanForward);
  s.dino_mean = "0.5,0.5";
  loaded = s.LoadEncoders();
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("--dino-mean"), std::string::npos);
  s.dino_mean = "0.5,0.5,0.5";
  loaded = s.LoadEncoders();
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ((*loaded)[0]->options().mean[1], 0.5);
}

}  // namespace
}  // namespace stas::eval

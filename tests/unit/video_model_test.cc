// The backbone contract (models/video_model.h) and its registry (models/registry.h): families are told
// apart from configs alone, their rules are what job validation and the coordinator use, and the tiny
// model samples, checkpoints, resumes and decodes through the contract alone.
#include <gtest/gtest.h>

#include "models/registry.h"
#include "models/video_model.h"
#include "support/temp_dir.h"

namespace stas::models {
namespace {

void ExpectRefused(const Status& st, const std::string& part) {
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(part), std::string::npos) << st.message();
}

TEST(ModelRegistry, EveryFamilyHasRulesByName) {
  EXPECT_EQ(RegisteredFamilies(), (std::vector<std::string>{"tiny", "wan2.1", "wan2.2", "cogvideox"}));
  for (const std::string& name : RegisteredFamilies()) {
    auto d = DescribeFamily(name);
    ASSERT_TRUE(d.ok()) << name;
    EXPECT_EQ(d->family, name);
    EXPECT_EQ(d->defaults.height % d->size_multiple, 0) << name;
    EXPECT_EQ(d->defaults.width % d->size_multiple, 0) << name;
    EXPECT_EQ((d->defaults.frames - 1) % d->frame_multiple, 0) << name;
    EXPECT_TRUE(d->trained_max.Fits(d->defaults.height, d->defaults.width, d->defaults.frames)) << name;
  }
  EXPECT_EQ(DescribeFamily("hunyuan").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(DescribeFamily("wan2.2")->size_multiple, 32);
  EXPECT_EQ(DescribeFamily("cogvideox")->frame_multiple, 8);
  EXPECT_EQ(DescribeFamily("tiny")->defaults.steps, 8);
}

TEST(ModelRegistry, TrainedMaximumAcceptsEitherOrientation) {
  const TrainedMaximum wan = DescribeFamily("wan2.1")->trained_max;
  EXPECT_TRUE(wan.Fits(720, 1280, 81));
  EXPECT_TRUE(wan.Fits(1280, 720, 81));
  EXPECT_FALSE(wan.Fits(1280, 1280, 81));
  EXPECT_FALSE(wan.Fits(720, 1280, 85));
  EXPECT_FALSE(DescribeFamily("tiny")->trained_max.Fits(720, 1280, 81));
}

TEST(ModelRegistry, InspectReadsConfigsOnly) {
  testing::TempDir dir;
  // No weights anywhere: inspecting must not need them.
  dir.Write("wan/model_index.json", R"({"_class_name": "WanPipeline"})");
  dir.Write("wan/transformer/config.json", R"({"num_attention_heads": 12})");
  auto wan = InspectModel(dir.File("wan"));
  ASSERT_TRUE(wan.ok()) << wan.status().message();
  EXPECT_EQ(wan->family, "wan2.1");
  EXPECT_EQ(wan->num_attention_heads, 12);
  // CogVideoX 1.0 (no temporal patch) was trained up to 720x480x49; 1.5 larger.
  dir.Write("cog10/model_index.json", R"({"_class_name": "CogVideoXPipeline"})");
  dir.Write("cog10/transformer/config.json", R"({"num_attention_heads": 30, "patch_size_t": null})");
  dir.Write("cog15/model_index.json", R"({"_class_name": "CogVideoXPipeline"})");
  dir.Write("cog15/transformer/config.json", R"({"num_attention_heads": 48, "patch_size_t": 2})");
  EXPECT_FALSE(InspectModel(dir.File("cog10"))->trained_max.Fits(768, 1360, 81));
  EXPECT_TRUE(InspectModel(dir.File("cog15"))->trained_max.Fits(768, 1360, 81));
  EXPECT_EQ(InspectModel(dir.File("cog15"))->num_attention_heads, 48);
  EXPECT_EQ(InspectModel("tiny")->num_attention_heads, 8);
  EXPECT_TRUE(IsBuiltInModel("tiny"));
  EXPECT_FALSE(IsBuiltInModel(dir.File("wan")));
}

TEST(ModelRegistry, NamesSuggestAFamilyOnlyWhenTheyCarryOne) {
  EXPECT_EQ(GuessFamilyFromName("Wan2.2-TI2V-5B-Diffusers")->family, "wan2.2");
  EXPECT_EQ(GuessFamilyFromName("/models/wan22-small")->family, "wan2.2");
  EXPECT_EQ(GuessFamilyFromName("THUDM/CogVideoX-5b")->family, "cogvideox");
  EXPECT_EQ(GuessFamilyFromName("Wan2.1-T2V-1.3B-Diffusers")->family, "wan2.1");
  EXPECT_FALSE(GuessFamilyFromName("my-model").has_value());
  EXPECT_EQ(FallbackDescription().family, "wan2.1");
  EXPECT_NE(SupportedModelsText().find("'tiny'"), std::string::npos);
}

TEST(ModelRegistry, UnknownPipelinesAreRefusedBeforeLoading) {
  testing::TempDir dir;
  dir.Write("sd/model_index.json", R"({"_class_name": "StableDiffusionPipeline"})");
  ExpectRefused(InspectModel(dir.File("sd")).status(), "is not a Wan or CogVideoX pipeline");
  ExpectRefused(LoadVideoModel(dir.File("sd"), {}).status(), "is not a Wan or CogVideoX pipeline");
  EXPECT_EQ(LoadVideoModel(dir.File("missing"), {}).status().code(), StatusCode::kNotFound);
  // A Wan folder without its components names the first one missing.
  dir.Write("wan/model_index.json", R"({"_class_name": "WanPipeline"})");
  ExpectRefused(LoadVideoModel(dir.File("wan"), {}).status(), "has no 'text_encoder' component folder");
}

// The tiny model through the contract only.
class TinyVideoModel : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loaded = LoadVideoModel("tiny", {});
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    model = std::move(loaded).value();
  }
  std::unique_ptr<VideoModel> model;
};

// Counts hook calls (blocks x forwards).
class CountingHook final : public ResidualHook {
 public:
  void AfterBlock(at::Tensor&, const BlockContext&) override { ++calls; }
  int calls = 0;
};

TEST_F(TinyVideoModel, GeometryAndSizeRules) {
  const LatentGeometry& g = model->geometry();
  EXPECT_EQ(model->description().family, "tiny");
  EXPECT_EQ(g.latent_channels, 16);
  EXPECT_EQ(g.hidden_dim, 128);
  EXPECT_EQ(g.num_blocks, 3);
  EXPECT_EQ(g.num_attention_heads, 8);
  EXPECT_EQ(g.size_multiple(), 16);
  EXPECT_EQ(g.LatentFrames(17), 5);
  EXPECT_TRUE(model->CheckVideoSize(64, 96, 17).ok());
  ExpectRefused(model->CheckVideoSize(72, 96, 17), "height must be a multiple of 16 for this model");
  ExpectRefused(model->CheckVideoSize(64, 96, 15), "frames must be 4k+1 for this model");
  auto noise = model->InitialNoise(7, 64, 96, 17);
  ASSERT_TRUE(noise.ok());
  EXPECT_EQ(noise->sizes(), (std::vector<int64_t>{1, 16, 5, 8, 12}));
  EXPECT_TRUE(noise->equal(*model->InitialNoise(7, 64, 96, 17)));  // the seed fixes it
}

TEST_F(TinyVideoModel, SamplesResumesAndDecodes) {
  auto positive = model->EncodePrompts({"a red fox"});
  auto negative = model->EncodePrompts({""});
  ASSERT_TRUE(positive.ok() && negative.ok());
  const PromptEmbeddings prompts{*positive, *negative};
  const at::Tensor noise = *model->InitialNoise(3, 32, 32, 5);

  CountingHook hook;
  SamplerCheckpoint after_one;
  std::vector<int> done;
  SamplingOptions o;
  o.steps = 3;
  o.guidance = 5.0;
  o.hook = &hook;
  o.on_step = [&](const SamplingStep& s) {
    done.push_back(s.done);
    EXPECT_EQ(s.steps, 3);
    EXPECT_EQ(s.latents->sizes(), noise.sizes());
    if (s.done == 1) after_one = {1, s.latents->clone(), s.scheduler_state()};
  };
  auto full = model->Sample(noise, prompts, o);
  ASSERT_TRUE(full.ok()) << full.status().message();
  EXPECT_EQ(done, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(hook.calls, 3 * 2 * 3);  // steps x CFG branches x blocks
  EXPECT_FALSE(after_one.scheduler_state.empty());

  // Resuming from the state after step 1 gives the same latents as the uninterrupted run.
  ASSERT_TRUE(model->CheckResume(after_one, 3).ok());
  ExpectRefused(model->CheckResume(after_one, 4), "step differs");
  SamplingOptions r = o;
  r.hook = nullptr;
  r.on_step = nullptr;
  r.resume = &after_one;
  auto resumed = model->Sample(noise, prompts, r);
  ASSERT_TRUE(resumed.ok()) << resumed.status().message();
  EXPECT_TRUE(resumed->equal(*full));

  // Cancellation before the first step.
  SamplingOptions c = o;
  c.on_step = nullptr;
  c.should_cancel = [] { return true; };
  EXPECT_EQ(model->Sample(noise, prompts, c).status().code(), StatusCode::kAborted);

  int64_t frames = 0;
  ASSERT_TRUE(model
                  ->Decode(*full, 5,
                           [&](const at::Tensor& video) {
                             EXPECT_EQ(video.dim(), 5);
                             EXPECT_EQ(video.size(1), 3);
                             EXPECT_LE(video.max().item<float>(), 1.0f);
                             frames += video.size(2);
                             return Status::Ok();
                           })
                  .ok());
  EXPECT_EQ(frames, 5);
}

}  // namespace
}  // namespace stas::models

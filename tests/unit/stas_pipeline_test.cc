// STAS and the MA analysis through the Wan sampler with the built-in tiny model: vanilla equivalence
// when off or K = 0, the step/block/branch bookkeeping, per-sample references under batched CFG, the
// analysis on the planted structure, and `stas analyze` end to end.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "common/json.h"
#include "models/text/prompt_encoder.h"
#include "models/wan/pipeline.h"
#include "models/wan/tiny.h"
#include "models/wan/transformer.h"
#include "models/wan/vae_tiny.h"
#include "steering/ma_analysis.h"
#include "steering/stas_hook.h"
#include "support/run_command.h"
#include "support/temp_dir.h"

namespace stas::steering {
namespace {

// Small enough for CI: 64x64 pixels, 9 frames -> 3 latent frames of 4x4 tokens (48 tokens), 4 steps.
constexpr int64_t kHeight = 64, kWidth = 64, kFrames = 9;
constexpr int kSteps = 4;

class TinyWan : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto config = models::wan::WanTransformerConfig::FromJson(models::wan::TinyWanTransformerConfigJson());
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    auto dit = models::wan::WanTransformer::Load(*config, models::wan::TinyWanTransformerWeights(0));
    ASSERT_TRUE(dit.ok()) << dit.status().ToString();
    transformer_ = new models::wan::WanTransformer(std::move(dit).value());
    auto text = models::text::PromptEncoder::Tiny(0);
    ASSERT_TRUE(text.ok()) << text.status().ToString();
    auto both = text->EncodeForGuidance({"a red fox running through snow"}, {""});
    ASSERT_TRUE(both.ok());
    positive_ = new at::Tensor(both->positive);
    negative_ = new at::Tensor(both->negative);
    auto compression = models::wan::VaeCompression::FromVaeConfig(models::wan::TinyWanVaeConfigJson());
    ASSERT_TRUE(compression.ok());
    auto noise = models::wan::InitialNoise(3, 1, config->in_channels, kFrames, kHeight, kWidth, *compression);
    ASSERT_TRUE(noise.ok()) << noise.status().ToString();
    noise_ = new at::Tensor(*noise);
  }
  static void TearDownTestSuite() {
    delete transformer_;
    delete positive_;
    delete negative_;
    delete noise_;
  }

  static at::Tensor Sample(models::ResidualHook* hook, bool batched_cfg = false) {
    auto scheduler = models::UniPCConfig::FromJson({{"num_train_timesteps", 1000},
                                                    {"solver_order", 2},
                                                    {"solver_type", "bh2"},
                                                    {"use_flow_sigmas", true},
                                                    {"prediction_type", "flow_prediction"},
                                                    {"flow_shift", 3.0},
                                                    {"lower_order_final", true}});
    EXPECT_TRUE(scheduler.ok());
    models::wan::WanSampler sampler(*transformer_, *scheduler);
    models::wan::WanSamplingOptions o;
    o.num_inference_steps = kSteps;
    o.guidance_scale = 5.0;
    o.hook = hook;
    o.batched_cfg = batched_cfg;
    auto latents = sampler.Sample(*noise_, *positive_, *negative_, o);
    EXPECT_TRUE(latents.ok()) << latents.status().ToString();
    return latents.ok() ? *latents : at::Tensor();
  }
  static int Blocks() { return static_cast<int>(transformer_->config().num_layers); }

  static models::wan::WanTransformer* transformer_;
  static at::Tensor* positive_;
  static at::Tensor* negative_;
  static at::Tensor* noise_;
};

models::wan::WanTransformer* TinyWan::transformer_ = nullptr;
at::Tensor* TinyWan::positive_ = nullptr;
at::Tensor* TinyWan::negative_ = nullptr;
at::Tensor* TinyWan::noise_ = nullptr;

TEST_F(TinyWan, StasOffOrZeroStepsIsBitIdenticalToVanilla) {
  const at::Tensor vanilla = Sample(nullptr);
  StasOptions off;
  auto none = MakeStasHook(off);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->get(), nullptr);  // nothing to install
  StasOptions zero;
  zero.enabled = true;
  zero.steps = 0;
  auto hook = MakeStasHook(zero);
  ASSERT_TRUE(hook.ok() && *hook);
  EXPECT_TRUE(at::equal(Sample(hook->get()), vanilla));
  EXPECT_EQ(hook.value()->steered_calls(), 0);
  // A zero step fraction is the same as K = 0.
  StasOptions fraction = zero;
  fraction.steps.reset();
  fraction.step_fraction = 0.0;
  auto hook2 = MakeStasHook(fraction);
  EXPECT_TRUE(at::equal(Sample(hook2->get()), vanilla));
}

TEST_F(TinyWan, StasSteersTheConfiguredStepsBlocksAndBranches) {
  const at::Tensor vanilla = Sample(nullptr);
  StasOptions o;
  o.enabled = true;
  o.steps = 2;
  auto both = MakeStasHook(o);
  const at::Tensor steered = Sample(both->get());
  EXPECT_FALSE(at::allclose(steered, vanilla, 1e-4, 1e-4)) << "steering must change the video";
  EXPECT_TRUE(steered.isfinite().all().item<bool>());
  EXPECT_EQ(both.value()->steered_calls(), 2 * Blocks() * 2);  // K steps x blocks x (cond, uncond)

  o.branches = SteerBranches::kCondOnly;
  o.blocks = {1};
  auto cond = MakeStasHook(o, {"tiny", transformer_->config().dim(), Blocks()});
  ASSERT_TRUE(cond.ok()) << cond.status().ToString();
  const at::Tensor cond_only = Sample(cond->get());
  EXPECT_EQ(cond.value()->steered_calls(), 2 * 1 * 1);
  EXPECT_FALSE(at::allclose(cond_only, steered, 1e-4, 1e-4));
}

TEST_F(TinyWan, BatchedCfgUsesAPerSampleReference) {
  // Cond and uncond rows have different maxima; a reference shared across the batch would make the
  // batched forward (one batch of 2) differ from two forwards of 1.
  StasOptions o;
  o.enabled = true;
  o.steps = 3;
  o.lambda = 1.5;
  auto separate = MakeStasHook(o);
  auto batched = MakeStasHook(o);
  const at::Tensor a = Sample(separate->get(), /*batched_cfg=*/false);
  const at::Tensor b = Sample(batched->get(), /*batched_cfg=*/true);
  EXPECT_EQ(batched.value()->steered_calls(), 3 * Blocks());  // one forward per step
  EXPECT_TRUE(at::allclose(a, b, 1e-4, 1e-5)) << (a - b).abs().max().item<double>();
}

TEST_F(TinyWan, AnalysisFindsThePlantedStructureAndOnlyReads) {
  const at::Tensor vanilla = Sample(nullptr);
  MaAnalysisHook analysis(MaAnalysisOptions{});
  analysis.BeginRun({{"prompt", "a red fox running through snow"}});
  EXPECT_TRUE(at::equal(Sample(&analysis), vanilla)) << "the analysis hook must not change the stream";
  const Json j = analysis.ToJson("tiny");
  ASSERT_EQ(j["records"].size(), static_cast<size_t>(kSteps * Blocks()));
  const std::vector<int64_t> planted = models::wan::TinyWanPlantedChannels();
  for (const Json& r : j["records"]) {
    if (r["step"] != 0) continue;
    std::set<int64_t> found;
    for (const Json& c : r["channels"]) found.insert(c["channel"].get<int64_t>());
    for (int64_t c : found) EXPECT_TRUE(std::count(planted.begin(), planted.end(), c)) << "unplanted channel " << c;
    EXPECT_FALSE(found.empty()) << r.dump();
    EXPECT_GT(r["first_frame"].get<double>(), r["boundary"].get<double>()) << r.dump();
    EXPECT_GT(r["boundary"].get<double>(), r["interior"].get<double>()) << r.dump();
  }
  auto set = analysis.Calibrate("tiny", transformer_->config().dim());
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  ASSERT_FALSE(set->global.channels.empty());
  for (int64_t c : set->global.channels) EXPECT_TRUE(std::count(planted.begin(), planted.end(), c));
}

// ---------------------------------------------------------------------------------------------
// `stas analyze` end to end

std::string Stas(const std::string& args) { return std::string(STAS_BINARY) + " " + args; }

TEST(StasAnalyzeCommand, WritesAnalysisCalibrationAndReportThatRenderAccepts) {
  testing::TempDir dir;
  const std::string out = dir.File("analysis");
  auto r = testing::RunCommand(Stas("analyze --model tiny --prompt 'a lighthouse at dusk' --steps 3 --height 64 "
                                    "--width 96 --frames 9 --seed 5 --out " + out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("MA channels (global):"), std::string::npos) << r.output;
  auto analysis = ReadJsonFile(out + "/analysis.json");
  ASSERT_TRUE(analysis.ok()) << analysis.status().ToString();
  EXPECT_EQ((*analysis)["format"], kMaAnalysisFormat);
  EXPECT_EQ((*analysis)["num_steps"], 3);
  EXPECT_EQ((*analysis)["grid"]["tokens"], 3 * 4 * 6);
  EXPECT_EQ((*analysis)["runs"][0]["prompt"], "a lighthouse at dusk");
  auto channels = MaChannelSet::Load(out + "/ma_channels.json");
  ASSERT_TRUE(channels.ok()) << channels.status().ToString();
  EXPECT_EQ(channels->model, "tiny");
  const std::vector<int64_t> planted = models::wan::TinyWanPlantedChannels();
  ASSERT_FALSE(channels->global.channels.empty());
  for (int64_t c : channels->global.channels) EXPECT_TRUE(std::count(planted.begin(), planted.end(), c));
  std::ifstream html(out + "/report.html");
  const std::string page((std::istreambuf_iterator<char>(html)), std::istreambuf_iterator<char>());
  EXPECT_NE(page.find("Massive-activation analysis"), std::string::npos);

  // The calibration is what `stas render --stas --stas-channels` loads.
  auto render = testing::RunCommand(Stas("render --model tiny --prompt 'a lighthouse at dusk' --steps 2 --height 64 "
                                         "--width 96 --frames 9 --stas --stas-channels " + out +
                                         "/ma_channels.json --out " + dir.File("clip.mp4")));
  EXPECT_EQ(render.exit_code, 0) << render.output;
}

TEST(StasAnalyzeCommand, PromptsFileAndBadInput) {
  testing::TempDir dir;
  dir.Write("prompts.txt", "a cat on a sofa\n\na dog in the rain\n");
  auto r = testing::RunCommand(Stas("analyze --model tiny --prompts " + dir.File("prompts.txt") +
                                    " --steps 2 --height 64 --width 64 --frames 5 --out " + dir.File("a")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto analysis = ReadJsonFile(dir.File("a/analysis.json"));
  ASSERT_TRUE(analysis.ok());
  EXPECT_EQ((*analysis)["runs"].size(), 2u);
  EXPECT_EQ((*analysis)["records"][0]["observations"], 2);  // one cond row per prompt

  // Nothing to analyse, both prompt sources, a bad size, a bad tau: exit code 2 and no output folder.
  for (const std::string& bad :
       {std::string("--steps 2"), "--prompt x --prompts " + dir.File("prompts.txt"),
        std::string("--prompt x --height 65"), std::string("--prompt x --tau 0.5"),
        std::string("--prompt x --steps 2 --profile-steps 7"), std::string("--prompt x --branch both")}) {
    auto b = testing::RunCommand(Stas("analyze --model tiny " + bad + " --out " + dir.File("bad")));
    EXPECT_EQ(b.exit_code, 2) << bad << "\n" << b.output;
    EXPECT_FALSE(std::filesystem::exists(dir.File("bad"))) << bad;
  }
}

}  // namespace
}  // namespace stas::steering

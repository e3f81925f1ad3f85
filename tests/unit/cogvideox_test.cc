// CogVideoX beyond the shipped fixtures: a transformer of another config on other shapes, the RoPE
// tables against the ones the reference pipeline computed, DDIM schedule properties (zero terminal SNR,
// trailing timesteps, the v-prediction step), the VAE's frame-batched decode length, and clear errors
// for bad configs, missing weights and bad inputs; the seams: sequence parallelism over the joint
// sequence (threads as ranks), residual hooks on the video stream, STAS, CFG-parallel and resume.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "common/check.h"
#include "common/fixture.h"
#include "models/cogvideox/pipeline.h"
#include "models/cogvideox/transformer.h"
#include "models/cogvideox/vae.h"
#include "models/schedulers/ddim.h"
#include "steering/stas_hook.h"
#include "support/wan_test_models.h"

namespace stas::models::cogvideox {
namespace {

std::string FixtureDir(const std::string& name) { return std::string(STAS_FIXTURES_DIR) + "/" + name; }

CogVideoXTransformerConfig SmallConfig() {
  CogVideoXTransformerConfig c;
  c.num_attention_heads = 3;
  c.attention_head_dim = 16;
  c.in_channels = 4;
  c.out_channels = 6;
  c.time_embed_dim = 24;
  c.text_embed_dim = 20;
  c.num_layers = 2;
  c.sample_width = 8;
  c.sample_height = 6;
  c.patch_size = 2;
  c.use_rotary_positional_embeddings = true;
  return c;
}

// Random weights under the upstream names for `c` (no temporal patch).
std::map<std::string, at::Tensor> RandomWeights(const CogVideoXTransformerConfig& c, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t D = c.dim(), E = c.time_embed_dim, p = c.patch_size, hd = c.attention_head_dim;
  std::map<std::string, at::Tensor> w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) { w[name] = 0.05 * at::randn(shape); };
  auto norm = [&](const std::string& name, int64_t n) {
    w[name + ".weight"] = 1 + 0.1 * at::randn({n});
    w[name + ".bias"] = 0.05 * at::randn({n});
  };
  add("patch_embed.proj.weight", {D, c.in_channels, p, p});
  add("patch_embed.proj.bias", {D});
  add("patch_embed.text_proj.weight", {D, c.text_embed_dim});
  add("patch_embed.text_proj.bias", {D});
  add("time_embedding.linear_1.weight", {E, D});
  add("time_embedding.linear_1.bias", {E});
  add("time_embedding.linear_2.weight", {E, E});
  add("time_embedding.linear_2.bias", {E});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string b = "transformer_blocks." + std::to_string(i) + ".";
    for (const char* n : {"norm1", "norm2"}) {
      add(b + n + ".linear.weight", {6 * D, E});
      add(b + n + ".linear.bias", {6 * D});
      norm(b + n + ".norm", D);
    }
    for (const char* n : {"to_q", "to_k", "to_v", "to_out.0"}) {
      add(b + "attn1." + n + ".weight", {D, D});
      add(b + "attn1." + n + ".bias", {D});
    }
    norm(b + "attn1.norm_q", hd);
    norm(b + "attn1.norm_k", hd);
    add(b + "ff.net.0.proj.weight", {4 * D, D});
    add(b + "ff.net.0.proj.bias", {4 * D});
    add(b + "ff.net.2.weight", {D, 4 * D});
    add(b + "ff.net.2.bias", {D});
  }
  norm("norm_final", D);
  add("norm_out.linear.weight", {2 * D, E});
  add("norm_out.linear.bias", {2 * D});
  norm("norm_out.norm", D);
  add("proj_out.weight", {p * p * c.out_channels, D});
  add("proj_out.bias", {p * p * c.out_channels});
  return w;
}

TEST(CogVideoXTransformer, ForwardShapesOnAnotherConfig) {
  const CogVideoXTransformerConfig c = SmallConfig();
  auto model = CogVideoXTransformer::Load(c, WeightStore::FromTensors(RandomWeights(c, 3)));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  at::manual_seed(5);
  const at::Tensor latents = at::randn({2, 3, 4, 6, 10});
  const at::Tensor text = at::randn({2, 7, 20});
  auto rope = ComputeRotaryTables(c, 3, 6, 10);
  ASSERT_TRUE(rope.ok()) << rope.status().ToString();
  EXPECT_EQ(rope->cos.sizes(), at::IntArrayRef({3 * 3 * 5, 16}));
  auto out = model->Forward(latents, at::tensor({999, 10}, at::kLong), text, *rope);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->sizes(), at::IntArrayRef({2, 3, 6, 6, 10}));
  EXPECT_TRUE(out->isfinite().all().item<bool>());

  // Batch rows are independent: row 1 alone gives the same result.
  auto single = model->Forward(latents.narrow(0, 1, 1), at::tensor({10}, at::kLong), text.narrow(0, 1, 1), *rope);
  ASSERT_TRUE(single.ok());
  EXPECT_LT((*single - out->narrow(0, 1, 1)).abs().max().item<double>(), 1e-5);

  // A single timestep broadcasts over the batch.
  auto broadcast = model->Forward(latents, at::tensor({10}, at::kLong), text, *rope);
  ASSERT_TRUE(broadcast.ok());
  EXPECT_LT((broadcast->narrow(0, 1, 1) - *single).abs().max().item<double>(), 1e-5);
}

TEST(CogVideoXTransformer, RotaryTablesMatchTheReferencePipeline) {
  auto fixture = Fixture::Open(FixtureDir("cogvideox_transformer_tiny"));
  ASSERT_TRUE(fixture.ok()) << fixture.status().ToString();
  auto config = CogVideoXTransformerConfig::FromJson(fixture->config());
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  const at::Tensor latents = *fixture->Io("hidden_states");
  auto tables = ComputeRotaryTables(*config, latents.size(1), latents.size(3), latents.size(4));
  ASSERT_TRUE(tables.ok()) << tables.status().ToString();
  EXPECT_LT((tables->cos - *fixture->Io("rope_cos")).abs().max().item<double>(), 1e-6);
  EXPECT_LT((tables->sin - *fixture->Io("rope_sin")).abs().max().item<double>(), 1e-6);
}

TEST(CogVideoXTransformer, RotaryTablesOfTheTrainingGridUseIntegerPositions) {
  // At the training resolution the crop is the whole grid: positions 0..n-1 on every axis, so the
  // first token has angle 0 everywhere (cos 1, sin 0) and the t/h/w parts split the head 4/6/6.
  CogVideoXTransformerConfig c = SmallConfig();
  auto tables = ComputeRotaryTables(c, 2, c.sample_height, c.sample_width);
  ASSERT_TRUE(tables.ok());
  EXPECT_TRUE(tables->cos[0].eq(1).all().item<bool>());
  EXPECT_TRUE(tables->sin[0].eq(0).all().item<bool>());
  // Token 1 is (frame 0, row 0, column 1): only the w part (last 6 channels) rotates, by 1 radian at i = 0.
  EXPECT_TRUE(tables->sin[1].narrow(0, 0, 10).eq(0).all().item<bool>());
  EXPECT_NEAR(tables->sin[1][10].item<double>(), std::sin(1.0), 1e-6);
  EXPECT_NEAR(tables->sin[1][11].item<double>(), std::sin(1.0), 1e-6);  // repeated for the pair
}

TEST(CogVideoXTransformer, BadConfigsAndInputsGiveClearErrors) {
  Json json = {{"num_attention_heads", 2}, {"attention_head_dim", 12}, {"use_rotary_positional_embeddings", true}};
  auto bad_dim = CogVideoXTransformerConfig::FromJson(json);
  ASSERT_FALSE(bad_dim.ok());
  EXPECT_EQ(bad_dim.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_dim.status().message().find("multiple of 16"), std::string::npos) << bad_dim.status().ToString();

  auto no_rope = CogVideoXTransformerConfig::FromJson(Json{{"use_rotary_positional_embeddings", false}});
  ASSERT_FALSE(no_rope.ok());
  EXPECT_EQ(no_rope.status().code(), StatusCode::kNotImplemented);

  auto wrong_type = CogVideoXTransformerConfig::FromJson(Json{{"num_layers", "many"}});
  ASSERT_FALSE(wrong_type.ok());
  EXPECT_EQ(wrong_type.status().code(), StatusCode::kInvalidArgument);

  const CogVideoXTransformerConfig c = SmallConfig();
  auto weights = RandomWeights(c, 4);
  weights.erase("transformer_blocks.1.attn1.norm_k.weight");
  auto missing = CogVideoXTransformer::Load(c, WeightStore::FromTensors(weights));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("transformer_blocks.1.attn1.norm_k.weight"), std::string::npos)
      << missing.status().ToString();

  CogVideoXTransformerConfig fewer = c;
  fewer.num_layers = 1;  // the checkpoint has a block the config does not account for
  EXPECT_FALSE(CogVideoXTransformer::Load(fewer, WeightStore::FromTensors(RandomWeights(c, 4))).ok());

  auto model = CogVideoXTransformer::Load(c, WeightStore::FromTensors(RandomWeights(c, 4)));
  ASSERT_TRUE(model.ok());
  auto rope = ComputeRotaryTables(c, 1, 4, 4);
  ASSERT_TRUE(rope.ok());
  auto odd = model->Forward(at::zeros({1, 1, 4, 5, 4}), at::tensor({1}, at::kLong), at::zeros({1, 3, 20}), *rope);
  EXPECT_EQ(odd.status().code(), StatusCode::kInvalidArgument);
  auto wrong_rope =
      model->Forward(at::zeros({1, 2, 4, 4, 4}), at::tensor({1}, at::kLong), at::zeros({1, 3, 20}), *rope);
  EXPECT_EQ(wrong_rope.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ComputeRotaryTables(c, 1, 5, 4).status().code(), StatusCode::kInvalidArgument);
}

DDIMConfig CogVideoXScheduler() {
  DDIMConfig c;
  c.prediction_type = "v_prediction";
  c.timestep_spacing = "trailing";
  c.rescale_betas_zero_snr = true;
  c.snr_shift_scale = 1.0;
  return c;
}

TEST(CogVideoXDDIM, ZeroTerminalSnrAndTrailingTimesteps) {
  CogVideoXDDIMScheduler scheduler(CogVideoXScheduler());
  ASSERT_TRUE(scheduler.SetTimesteps(50).ok());
  const auto& abar = scheduler.alphas_cumprod();
  ASSERT_EQ(abar.size(), 1000u);
  EXPECT_NEAR(abar.back(), 0.0, 1e-12);  // zero SNR at the last train step
  // The rescale keeps the first value: 1 - beta_0 with beta_0 = beta_start.
  EXPECT_NEAR(abar.front(), 1 - 0.00085, 1e-9);
  for (size_t i = 1; i < abar.size(); ++i) ASSERT_LT(abar[i], abar[i - 1]);
  const auto& ts = scheduler.timesteps();
  ASSERT_EQ(ts.size(), 50u);
  EXPECT_EQ(ts.front(), 999);
  EXPECT_EQ(ts[1], 979);
  EXPECT_EQ(ts.back(), 19);

  // Without the rescale the last alpha stays positive, and leading spacing starts at 0 + offset.
  DDIMConfig plain = CogVideoXScheduler();
  plain.rescale_betas_zero_snr = false;
  plain.timestep_spacing = "leading";
  plain.steps_offset = 1;
  CogVideoXDDIMScheduler leading(plain);
  ASSERT_TRUE(leading.SetTimesteps(4).ok());
  EXPECT_GT(leading.alphas_cumprod().back(), 0.0);
  EXPECT_EQ(leading.timesteps(), (std::vector<int64_t>{751, 501, 251, 1}));
}

TEST(CogVideoXDDIM, VPredictionStep) {
  CogVideoXDDIMScheduler scheduler(CogVideoXScheduler());
  ASSERT_TRUE(scheduler.SetTimesteps(4).ok());
  at::manual_seed(2);
  const at::Tensor x = at::randn({2, 3});
  const at::Tensor v = at::randn({2, 3});
  // At t = 999 (alpha 0) the sample is pure noise and x0 = -v; the step lands at 749.
  const double a_prev = scheduler.alphas_cumprod()[749];
  auto next = scheduler.Step(v, 999, x);
  ASSERT_TRUE(next.ok());
  const at::Tensor expected = std::sqrt(1 - a_prev) * x + std::sqrt(a_prev) * (-v);
  EXPECT_LT((*next - expected).abs().max().item<double>(), 1e-6);
  // The last step goes to alpha 1 (set_alpha_to_one): the result is x0.
  const double a = scheduler.alphas_cumprod()[249];
  auto last = scheduler.Step(v, 249, x);
  ASSERT_TRUE(last.ok());
  EXPECT_LT((*last - (std::sqrt(a) * x - std::sqrt(1 - a) * v)).abs().max().item<double>(), 1e-6);

  CogVideoXDDIMScheduler unset(CogVideoXScheduler());
  EXPECT_FALSE(unset.Step(v, 999, x).ok());
  EXPECT_FALSE(scheduler.SetTimesteps(0).ok());
  EXPECT_FALSE(scheduler.SetTimesteps(1001).ok());
  auto bad = DDIMConfig::FromJson(Json{{"prediction_type", "flow"}});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(CogVideoXVae, FrameBatchedDecodeLength) {
  auto fixture = Fixture::Open(FixtureDir("cogvideox_vae_tiny"));
  ASSERT_TRUE(fixture.ok()) << fixture.status().ToString();
  auto config = CogVideoXVaeConfig::FromJson(fixture->config());
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->spatial_compression(), 8);
  auto vae = CogVideoXVaeDecoder::Load(*config, fixture->weights());
  ASSERT_TRUE(vae.ok()) << vae.status().ToString();
  at::manual_seed(7);
  // 13 latent frames decode in chunks 3, 2, 2, 2, 2, 2 -> 9 + 5 * 8 = 49 frames (CogVideoX's 49).
  auto video = vae->Decode(at::randn({1, 4, 13, 2, 2}));
  ASSERT_TRUE(video.ok()) << video.status().ToString();
  EXPECT_EQ(video->sizes(), at::IntArrayRef({1, 3, 49, 16, 16}));
  const at::Tensor frames = CogVideoXVideoToFrames(*video);
  EXPECT_EQ(frames.sizes(), at::IntArrayRef({1, 49, 3, 16, 16}));
  EXPECT_GE(frames.min().item<double>(), 0.0);
  EXPECT_LE(frames.max().item<double>(), 1.0);

  EXPECT_EQ(vae->Decode(at::randn({1, 5, 2, 2, 2})).status().code(), StatusCode::kInvalidArgument);
  Json bad = fixture->config();
  bad["norm_num_groups"] = 3;  // 8 channels do not split into 3 groups
  EXPECT_EQ(CogVideoXVaeConfig::FromJson(bad).status().code(), StatusCode::kInvalidArgument);
  bad = fixture->config();
  bad["use_post_quant_conv"] = true;
  EXPECT_EQ(CogVideoXVaeConfig::FromJson(bad).status().code(), StatusCode::kNotImplemented);
}

TEST(CogVideoXPipeline, SamplerChecksItsInputs) {
  const CogVideoXTransformerConfig c = SmallConfig();
  auto model = CogVideoXTransformer::Load(c, WeightStore::FromTensors(RandomWeights(c, 6)));
  ASSERT_TRUE(model.ok());
  CogVideoXSampler sampler(*model, CogVideoXScheduler());
  CogVideoXSamplingOptions options;
  options.num_inference_steps = 2;
  int steps_seen = 0;
  options.on_step = [&](int, int64_t, const at::Tensor&) { ++steps_seen; };
  at::manual_seed(8);
  const at::Tensor latents = at::randn({1, 2, 4, 4, 4});
  const at::Tensor prompt = at::randn({1, 5, 20});
  auto missing_negative = sampler.Sample(latents, prompt, at::Tensor(), options);
  EXPECT_EQ(missing_negative.status().code(), StatusCode::kInvalidArgument);
  // Without guidance the negative prompt is not needed. (Output channels differ from the input's in
  // SmallConfig, so the DDIM step rejects the prediction: a clear error, not a crash.)
  options.guidance_scale = 1.0;
  auto mismatched = sampler.Sample(latents, prompt, at::Tensor(), options);
  EXPECT_FALSE(mismatched.ok());

  CogVideoXTransformerConfig same = c;
  same.out_channels = same.in_channels;
  auto model2 = CogVideoXTransformer::Load(same, WeightStore::FromTensors(RandomWeights(same, 6)));
  ASSERT_TRUE(model2.ok());
  CogVideoXSampler sampler2(*model2, CogVideoXScheduler());
  options.guidance_scale = 6.0;
  auto out = sampler2.Sample(latents, prompt, at::randn({1, 5, 20}), options);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->sizes(), latents.sizes());
  EXPECT_EQ(steps_seen, 2);
  options.should_cancel = [] { return true; };
  EXPECT_EQ(sampler2.Sample(latents, prompt, at::randn({1, 5, 20}), options).status().code(), StatusCode::kAborted);
}

// Four heads (they split over 2 and 4 ranks) and out_channels = in_channels (samplable).
CogVideoXTransformerConfig SamplableConfig() {
  CogVideoXTransformerConfig c = SmallConfig();
  c.num_attention_heads = 4;
  c.out_channels = c.in_channels;
  return c;
}

const CogVideoXTransformer& SamplableModel() {
  static const CogVideoXTransformer model = [] {
    const CogVideoXTransformerConfig c = SamplableConfig();
    auto m = CogVideoXTransformer::Load(c, WeightStore::FromTensors(RandomWeights(c, 11)));
    STAS_CHECK(m.ok()) << m.status().ToString();
    return std::move(m).value();
  }();
  return model;
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(CogVideoXTransformer, SequenceParallelForwardEqualsOneRank) {
  const CogVideoXTransformer& model = SamplableModel();
  at::manual_seed(21);
  const at::Tensor latents = at::randn({2, 3, 4, 6, 6});  // 3 x 3 x 3 = 27 video tokens
  const at::Tensor text = at::randn({2, 5, 20});
  const at::Tensor t = at::tensor({999, 10}, at::kLong);
  auto rope = ComputeRotaryTables(model.config(), 3, 6, 6);
  ASSERT_TRUE(rope.ok());
  const at::Tensor reference = *model.Forward(latents, t, text, *rope);
  for (int sp : {2, 4}) {  // 27 tokens: the last rank holds padding in both
    std::vector<at::Tensor> out(sp);
    testing::RunRanks(sp, [&](int rank, SequenceParallel& parallel) {
      ForwardContext context;
      context.parallel = &parallel;
      auto r = model.Forward(latents, t, text, *rope, context);
      if (r.ok()) out[rank] = *r;
    });
    for (int r = 0; r < sp; ++r) {
      ASSERT_TRUE(out[r].defined()) << "sp " << sp << " rank " << r;
      EXPECT_LT(MaxAbsDiff(out[r], reference), 2e-5) << "sp " << sp << " rank " << r;
    }
  }
  // Heads that do not split are refused before any collective.
  testing::RunRanks(3, [&](int, SequenceParallel& parallel) {
    ForwardContext context;
    context.parallel = &parallel;
    EXPECT_EQ(model.Forward(latents, t, text, *rope, context).status().code(), StatusCode::kInvalidArgument);
  });
}

// Records what a hook is shown and zeroes channel 0 of the video stream (so its effect is visible).
class RecordingHook : public ResidualHook {
 public:
  void AfterBlock(at::Tensor& hidden, const BlockContext& context) override {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(context);
    ranks.push_back(context.parallel ? context.parallel->rank() : 0);
    shapes.push_back(hidden.sizes().vec());
    hidden.select(2, 0).zero_();
  }
  std::mutex mu;
  std::vector<BlockContext> seen;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<int> ranks;
};

TEST(CogVideoXTransformer, HooksSeeTheVideoStreamOfTheirShard) {
  const CogVideoXTransformer& model = SamplableModel();
  at::manual_seed(22);
  const at::Tensor latents = at::randn({1, 3, 4, 6, 6});
  const at::Tensor text = at::randn({1, 5, 20});
  const at::Tensor t = at::tensor({500}, at::kLong);
  auto rope = ComputeRotaryTables(model.config(), 3, 6, 6);
  const at::Tensor vanilla = *model.Forward(latents, t, text, *rope);
  RecordingHook hook;
  ForwardContext context;
  context.hook = &hook;
  context.step = 3;
  context.num_steps = 7;
  const at::Tensor hooked = *model.Forward(latents, t, text, *rope, context);
  EXPECT_GT(MaxAbsDiff(hooked, vanilla), 1e-3) << "the hook's change must reach the output";
  ASSERT_EQ(hook.seen.size(), 2u);  // one call per block
  for (size_t i = 0; i < hook.seen.size(); ++i) {
    EXPECT_EQ(hook.seen[i].block, static_cast<int>(i));
    EXPECT_EQ(hook.seen[i].num_blocks, 2);
    EXPECT_EQ(hook.seen[i].step, 3);
    EXPECT_EQ(hook.seen[i].text_tokens, 0) << "the hook sees video tokens only";
    EXPECT_EQ(hook.seen[i].grid.count(), 27);
    EXPECT_EQ(hook.shapes[i], (std::vector<int64_t>{1, 27, 64}));
  }

  RecordingHook sharded;
  std::vector<at::Tensor> out(2);
  testing::RunRanks(2, [&](int rank, SequenceParallel& parallel) {
    ForwardContext c = context;
    c.hook = &sharded;
    c.parallel = &parallel;
    auto r = model.Forward(latents, t, text, *rope, c);
    if (r.ok()) out[rank] = *r;
  });
  ASSERT_EQ(sharded.seen.size(), 4u);
  for (size_t i = 0; i < sharded.seen.size(); ++i) {
    EXPECT_EQ(sharded.shapes[i], (std::vector<int64_t>{1, 14, 64}));  // 27 tokens padded to 2 x 14
    EXPECT_EQ(sharded.seen[i].shard.begin, sharded.ranks[i] * 14);
  }
  for (const auto& o : out) {
    ASSERT_TRUE(o.defined());
    EXPECT_LT(MaxAbsDiff(o, hooked), 2e-5);
  }
}

struct SamplingInputs {
  at::Tensor latents, prompt, negative;
};

SamplingInputs MakeSamplingInputs() {
  at::manual_seed(23);
  return {at::randn({1, 3, 4, 6, 6}), at::randn({1, 5, 20}), at::randn({1, 5, 20})};
}

CogVideoXSamplingOptions FourSteps() {
  CogVideoXSamplingOptions o;
  o.num_inference_steps = 4;
  return o;
}

steering::StasOptions SteerTwoSteps() {
  steering::StasOptions o;
  o.enabled = true;
  o.steps = 2;
  o.tau = 1.5;  // random weights have no real massive activations: detect modest outliers
  return o;
}

TEST(CogVideoXPipeline, StasSteersAndParallelRanksAgree) {
  const SamplingInputs in = MakeSamplingInputs();
  const CogVideoXSampler sampler(SamplableModel(), CogVideoXScheduler());
  const at::Tensor vanilla = *sampler.Sample(in.latents, in.prompt, in.negative, FourSteps());

  auto steered_run = [&](SequenceParallel* parallel, CfgPartner* partner, int64_t* calls) -> at::Tensor {
    auto hook = steering::MakeStasHook(SteerTwoSteps(), {"tiny", 64, 2});
    EXPECT_TRUE(hook.ok()) << hook.status().ToString();
    if (!hook.ok()) return {};
    CogVideoXSamplingOptions o = FourSteps();
    o.hook = hook->get();
    o.parallel = parallel;
    o.cfg_partner = partner;
    auto out = sampler.Sample(in.latents, in.prompt, in.negative, o);
    EXPECT_TRUE(out.ok()) << out.status().ToString();
    if (calls) *calls = (*hook)->steered_calls();
    return out.ok() ? *out : at::Tensor();
  };
  int64_t calls = 0;
  const at::Tensor steered = steered_run(nullptr, nullptr, &calls);
  ASSERT_TRUE(steered.defined());
  EXPECT_EQ(calls, 2 * 2 * 2) << "2 steered steps x 2 blocks x 2 CFG forwards";
  EXPECT_GT(MaxAbsDiff(steered, vanilla), 1e-4) << "steering must change the result";

  // The reference R is all-reduced over the shards: every rank steers like one rank.
  std::vector<at::Tensor> sp(2);
  testing::RunRanks(2, [&](int rank, SequenceParallel& parallel) { sp[rank] = steered_run(&parallel, nullptr, nullptr); });
  for (const auto& r : sp) {
    ASSERT_TRUE(r.defined());
    EXPECT_LT(MaxAbsDiff(r, steered), 2e-5);
  }

  // CFG-parallel: each rank runs one branch; both keep identical latents equal to the batched run.
  testing::Rendezvous pair(2);
  std::vector<at::Tensor> cfg(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      testing::ThreadCfgPartner partner(r == 0 ? CfgBranch::kCond : CfgBranch::kUncond, pair);
      cfg[r] = steered_run(nullptr, &partner, nullptr);
    });
  for (auto& t : threads) t.join();
  ASSERT_TRUE(cfg[0].defined() && cfg[1].defined());
  EXPECT_TRUE(at::equal(cfg[0], cfg[1]));
  EXPECT_LT(MaxAbsDiff(cfg[0], steered), 2e-5);
}

TEST(CogVideoXPipeline, ResumingFromAStepGivesTheSameLatents) {
  const SamplingInputs in = MakeSamplingInputs();
  const CogVideoXSampler sampler(SamplableModel(), CogVideoXScheduler());
  CogVideoXSamplingOptions o = FourSteps();
  at::Tensor after_two;
  o.on_step = [&](int step, int64_t, const at::Tensor& latents) {
    if (step == 1) after_two = latents.clone();
  };
  const at::Tensor full = *sampler.Sample(in.latents, in.prompt, in.negative, o);
  ASSERT_TRUE(after_two.defined());
  CogVideoXSamplingOptions resumed = FourSteps();
  resumed.start_step = 2;
  std::vector<int> steps;
  resumed.on_step = [&](int step, int64_t, const at::Tensor&) { steps.push_back(step); };
  const at::Tensor again = *sampler.Sample(after_two, in.prompt, in.negative, resumed);
  EXPECT_TRUE(at::equal(again, full));
  EXPECT_EQ(steps, (std::vector<int>{2, 3}));
  resumed.start_step = 5;
  EXPECT_EQ(sampler.Sample(after_two, in.prompt, in.negative, resumed).status().code(), StatusCode::kInvalidArgument);
}

TEST(CogVideoXPipeline, InitialNoiseIsFrameMajorAndSeeded) {
  auto a = InitialNoise(7, 1, 16, 49, 480, 720);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->sizes(), at::IntArrayRef({1, 13, 16, 60, 90}));
  EXPECT_TRUE(at::equal(*a, *InitialNoise(7, 1, 16, 49, 480, 720)));
  EXPECT_FALSE(at::equal(*a, *InitialNoise(8, 1, 16, 49, 480, 720)));
  EXPECT_EQ(InitialNoise(7, 1, 16, 48, 480, 720).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(InitialNoise(7, 1, 16, 49, 484, 720).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace stas::models::cogvideox

// The Wan transformer on shapes and configs other than the fixture's: config and weight validation,
// invariances that must hold whatever the weights (batching, per-token timesteps, sequence-parallel
// sharding with padding, hooks), the bf16 path with fp32 islands, and the tiny model's planted
// massive-activation hierarchy. Exactness against diffusers is the wan_transformer fixture's job.
#include <gtest/gtest.h>

#include <mutex>

#include "models/wan/tiny.h"
#include "models/wan/transformer.h"
#include "support/wan_test_models.h"

namespace stas::models::wan {
namespace {

WanTransformerConfig SmallConfig() {
  WanTransformerConfig c;
  c.patch_size = {1, 2, 2};
  c.num_attention_heads = 3;
  c.attention_head_dim = 12;
  c.in_channels = 4;
  c.out_channels = 6;
  c.text_dim = 8;
  c.freq_dim = 32;
  c.ffn_dim = 48;
  c.num_layers = 2;
  c.rope_max_seq_len = 32;
  return c;
}

WanTransformer Load(const WanTransformerConfig& c, uint64_t seed = 1, at::ScalarType dtype = at::kFloat) {
  auto m = WanTransformer::Load(c, WeightStore::FromTensors(testing::RandomWanTensors(c, seed)), at::kCPU, dtype);
  if (!m.ok()) throw std::runtime_error(m.status().ToString());
  return std::move(m).value();
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Records a copy of the residual stream (and its context) after every block.
class Recorder final : public ResidualHook {
 public:
  void AfterBlock(at::Tensor& hidden, const BlockContext& context) override {
    std::lock_guard<std::mutex> lock(mu);
    hidden_states.push_back(hidden.clone());
    contexts.push_back(context);
  }
  std::mutex mu;
  std::vector<at::Tensor> hidden_states;
  std::vector<BlockContext> contexts;
};

TEST(WanTransformerConfig, ParsesDiffusersJsonAndRefusesUnsupportedFeatures) {
  Json j = SmallConfig().ToJson();
  j["_class_name"] = "WanTransformer3DModel";
  j["out_channels"] = nullptr;  // upstream: out_channels or in_channels
  auto c = WanTransformerConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->out_channels, 4);
  EXPECT_EQ(c->dim(), 36);
  EXPECT_EQ(WanTransformerConfig::FromJson(Json::object())->num_layers, 40);  // diffusers defaults

  auto code_with = [&](const char* key, Json value) {
    Json k = j;
    k[key] = std::move(value);
    return WanTransformerConfig::FromJson(k).status().code();
  };
  EXPECT_EQ(code_with("image_dim", 1280), StatusCode::kNotImplemented);
  EXPECT_EQ(code_with("added_kv_proj_dim", 5120), StatusCode::kNotImplemented);
  EXPECT_EQ(code_with("qk_norm", "rms_norm"), StatusCode::kNotImplemented);
  EXPECT_EQ(code_with("patch_size", Json::array({1, 2})), StatusCode::kInvalidArgument);
  EXPECT_EQ(code_with("num_layers", 0), StatusCode::kInvalidArgument);
  EXPECT_EQ(code_with("attention_head_dim", 13), StatusCode::kInvalidArgument);
  EXPECT_EQ(code_with("eps", "small"), StatusCode::kInvalidArgument);
  EXPECT_EQ(WanTransformerConfig::FromJson(Json(3)).status().code(), StatusCode::kInvalidArgument);
}

TEST(WanTransformerLoad, RejectsMissingMisshapenAndUnusedTensors) {
  const WanTransformerConfig c = SmallConfig();
  auto tensors = testing::RandomWanTensors(c, 2);
  ASSERT_TRUE(WanTransformer::Load(c, WeightStore::FromTensors(tensors)).ok());

  auto missing = tensors;
  missing.erase("blocks.1.attn2.to_v.bias");
  auto r = WanTransformer::Load(c, WeightStore::FromTensors(missing));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("blocks.1.attn2.to_v.bias"), std::string::npos) << r.status().ToString();

  auto misshapen = tensors;
  misshapen["proj_out.weight"] = at::zeros({5, 36});
  EXPECT_EQ(WanTransformer::Load(c, WeightStore::FromTensors(misshapen)).status().code(), StatusCode::kInvalidArgument);

  auto extra = tensors;
  extra["blocks.2.norm2.weight"] = at::ones({36});  // a checkpoint with more blocks than the config
  r = WanTransformer::Load(c, WeightStore::FromTensors(extra));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("blocks.2.norm2.weight"), std::string::npos);

  EXPECT_EQ(WanTransformer::Load(c, WeightStore::FromTensors(tensors), at::kCPU, at::kInt).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(WanTransformerForward, ValidatesInputs) {
  const WanTransformer m = Load(SmallConfig());
  const at::Tensor latents = at::randn({1, 4, 2, 4, 6});
  const at::Tensor t = at::full({1}, 500.0);
  const at::Tensor text = at::randn({1, 5, 8});
  auto out = m.Forward(latents, t, text);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->sizes(), at::IntArrayRef({1, 6, 2, 4, 6}));
  EXPECT_EQ(out->scalar_type(), at::kFloat);
  EXPECT_TRUE(at::isfinite(*out).all().item<bool>());

  EXPECT_EQ(m.Forward(at::randn({1, 4, 2, 5, 6}), t, text).status().code(), StatusCode::kInvalidArgument);  // odd H
  EXPECT_EQ(m.Forward(at::randn({1, 3, 2, 4, 6}), t, text).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.Forward(latents, at::full({2}, 1.0), text).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.Forward(latents, at::full({1, 7}, 1.0), text).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.Forward(latents, t, at::randn({1, 5, 9})).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.Forward(latents, t, at::randn({2, 5, 8})).status().code(), StatusCode::kInvalidArgument);
  // 33 patches along W exceed rope_max_seq_len = 32.
  EXPECT_EQ(m.Forward(at::randn({1, 4, 1, 2, 66}), t, text).status().code(), StatusCode::kInvalidArgument);
  ForwardContext bad_branches;
  bad_branches.branches = {CfgBranch::kCond, CfgBranch::kUncond};
  EXPECT_EQ(m.Forward(latents, t, text, bad_branches).status().code(), StatusCode::kInvalidArgument);
}

TEST(WanTransformerForward, BatchOfTwoEqualsTwoBatchesOfOne) {
  const WanTransformer m = Load(SmallConfig());
  at::manual_seed(11);
  const at::Tensor latents = at::randn({2, 4, 3, 4, 2});
  const at::Tensor t = at::tensor({900.0f, 37.0f});
  const at::Tensor text = at::randn({2, 7, 8});
  const at::Tensor both = *m.Forward(latents, t, text);
  for (int64_t b = 0; b < 2; ++b) {
    const at::Tensor one = *m.Forward(latents.narrow(0, b, 1), t.narrow(0, b, 1), text.narrow(0, b, 1));
    EXPECT_LT(MaxAbsDiff(both.narrow(0, b, 1), one), 1e-5) << "row " << b;
  }
  // The rows really differ (the inputs matter).
  EXPECT_GT(MaxAbsDiff(both.narrow(0, 0, 1), both.narrow(0, 1, 1)), 1e-3);
}

TEST(WanTransformerForward, ScalarTimestepEqualsUniformPerTokenTimestep) {
  const WanTransformer m = Load(SmallConfig());
  at::manual_seed(12);
  const at::Tensor latents = at::randn({2, 4, 2, 6, 4});
  const at::Tensor text = at::randn({2, 3, 8});
  const int64_t L = m.GridFor(latents.sizes()).count();
  const at::Tensor t = at::tensor({750.0f, 20.0f});
  const at::Tensor scalar = *m.Forward(latents, t, text);
  const at::Tensor per_token = *m.Forward(latents, t.unsqueeze(1).expand({2, L}).contiguous(), text);
  EXPECT_LT(MaxAbsDiff(scalar, per_token), 1e-5);
  // A timestep that varies over the tokens changes the result, and only where modulation differs.
  at::Tensor varying = t.unsqueeze(1).expand({2, L}).contiguous();
  varying[0][L - 1] = 10.0f;
  EXPECT_GT(MaxAbsDiff(*m.Forward(latents, varying, text), scalar), 1e-4);
}

struct ShardCase {
  WanTransformerConfig config;
  std::vector<int64_t> latent_shape;
};

// k simulated ranks (threads) each compute their shard; every rank's output equals the single-rank
// output, and so does the residual stream the hooks see, once the shards are put back together.
void ExpectShardedEqualsSingleRank(const ShardCase& c, int ranks, bool per_token_timesteps) {
  const WanTransformer m = Load(c.config, 5);
  at::manual_seed(21);
  const at::Tensor latents = at::randn(c.latent_shape);
  const int64_t B = latents.size(0);
  const TokenGrid grid = m.GridFor(latents.sizes());
  const at::Tensor t = per_token_timesteps ? at::rand({B, grid.count()}) * 1000 : at::full({B}, 321.0);
  const at::Tensor text = at::randn({B, 4, c.config.text_dim});
  Recorder single_hook;
  ForwardContext single_context;
  single_context.hook = &single_hook;
  const at::Tensor reference = *m.Forward(latents, t, text, single_context);

  std::vector<at::Tensor> outputs(ranks);
  std::vector<Recorder> hooks(ranks);
  std::vector<Status> errors(ranks);
  testing::RunRanks(ranks, [&](int rank, SequenceParallel& parallel) {
    ForwardContext context;
    context.parallel = &parallel;
    context.hook = &hooks[rank];
    auto out = m.Forward(latents, t, text, context);
    if (out.ok()) outputs[rank] = *out;
    else errors[rank] = out.status();
  });
  for (int r = 0; r < ranks; ++r) {
    ASSERT_TRUE(errors[r].ok()) << errors[r].ToString();
    EXPECT_LT(MaxAbsDiff(outputs[r], reference), 2e-5) << ranks << " ranks, rank " << r;
  }
  for (size_t block = 0; block < single_hook.hidden_states.size(); ++block) {
    std::vector<at::Tensor> parts;
    for (int r = 0; r < ranks; ++r) {
      const BlockContext& bc = hooks[r].contexts[block];
      EXPECT_EQ(bc.shard.begin, r * bc.shard.local_tokens);
      EXPECT_EQ(bc.shard.global_tokens, grid.count());
      EXPECT_NE(bc.parallel, nullptr);
      parts.push_back(hooks[r].hidden_states[block].narrow(1, 0, bc.shard.local_real_tokens()));
    }
    EXPECT_LT(MaxAbsDiff(at::cat(parts, 1), single_hook.hidden_states[block]), 2e-5) << "block " << block;
  }
}

TEST(WanTransformerForward, SequenceParallelShardsWithPaddingMatchOneRank) {
  ShardCase base{SmallConfig(), {2, 4, 3, 2, 6}};  // 3 x 1 x 3 = 9 tokens: padding for 2, 4, 5 ranks
  for (int ranks : {1, 2, 3, 4, 5}) ExpectShardedEqualsSingleRank(base, ranks, /*per_token_timesteps=*/false);
  for (int ranks : {2, 4}) ExpectShardedEqualsSingleRank(base, ranks, /*per_token_timesteps=*/true);
  // More ranks than a shard of real tokens each: the last ranks hold only padding.
  ExpectShardedEqualsSingleRank(ShardCase{SmallConfig(), {1, 4, 1, 2, 6}}, 4, true);
}

TEST(WanTransformerForward, TemporalPatchAndNoCrossAttentionNorm) {
  WanTransformerConfig c = SmallConfig();
  c.patch_size = {2, 2, 2};
  c.cross_attn_norm = false;
  c.num_layers = 1;
  const WanTransformer m = Load(c);
  const at::Tensor latents = at::randn({1, 4, 4, 2, 4});
  auto out = m.Forward(latents, at::full({1}, 10.0), at::randn({1, 2, 8}));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->sizes(), at::IntArrayRef({1, 6, 4, 2, 4}));
  EXPECT_EQ(m.Forward(at::randn({1, 4, 3, 2, 4}), at::full({1}, 1.0), at::randn({1, 2, 8})).status().code(),
            StatusCode::kInvalidArgument);  // F not a multiple of the temporal patch
  ExpectShardedEqualsSingleRank(ShardCase{c, {1, 4, 4, 2, 4}}, 3, true);
}

TEST(WanTransformerForward, HooksSeeEveryBlockAndCanSteer) {
  const WanTransformer m = Load(SmallConfig());
  at::manual_seed(3);
  const at::Tensor latents = at::randn({2, 4, 2, 4, 4});
  const at::Tensor t = at::full({2}, 400.0);
  const at::Tensor text = at::randn({2, 3, 8});
  Recorder recorder;
  ForwardContext context;
  context.hook = &recorder;
  context.step = 3;
  context.num_steps = 10;
  context.branches = {CfgBranch::kCond, CfgBranch::kUncond};
  const at::Tensor plain = *m.Forward(latents, t, text);
  const at::Tensor observed = *m.Forward(latents, t, text, context);
  EXPECT_TRUE(at::equal(plain, observed));  // a read-only hook changes nothing
  ASSERT_EQ(recorder.contexts.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const BlockContext& bc = recorder.contexts[i];
    EXPECT_EQ(bc.block, i);
    EXPECT_EQ(bc.num_blocks, 2);
    EXPECT_EQ(bc.step, 3);
    EXPECT_EQ(bc.num_steps, 10);
    EXPECT_EQ(bc.grid.frames, 2);
    EXPECT_EQ(bc.grid.rows, 2);
    EXPECT_EQ(bc.grid.cols, 2);
    EXPECT_EQ(bc.shard.local_tokens, 8);
    EXPECT_EQ(bc.branches, context.branches);
    EXPECT_EQ(bc.parallel, nullptr);
    EXPECT_EQ(recorder.hidden_states[i].sizes(), at::IntArrayRef({2, 8, 36}));
  }

  struct Amplify final : ResidualHook {
    void AfterBlock(at::Tensor& hidden, const BlockContext&) override { hidden.select(2, 5).mul_(50.0); }
  } amplify;
  ForwardContext steer;
  steer.hook = &amplify;
  EXPECT_GT(MaxAbsDiff(*m.Forward(latents, t, text, steer), plain), 1e-3);
}

TEST(WanTransformerForward, Bfloat16WeightsWithFloat32IslandsStayClose) {
  const WanTransformerConfig c = SmallConfig();
  const WanTransformer f32 = Load(c, 7, at::kFloat);
  const WanTransformer bf16 = Load(c, 7, at::kBFloat16);
  EXPECT_EQ(bf16.dtype(), at::kBFloat16);
  at::manual_seed(8);
  const at::Tensor latents = at::randn({1, 4, 2, 4, 4});
  const at::Tensor text = at::randn({1, 6, 8});
  const at::Tensor a = *f32.Forward(latents, at::full({1}, 600.0), text);
  auto b = bf16.Forward(latents, at::full({1}, 600.0), text);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->scalar_type(), at::kFloat);
  EXPECT_LT(MaxAbsDiff(*b, a) / a.abs().max().item<double>(), 0.05);
}

// --- The built-in tiny model ------------------------------------------------------------------------

struct TokenClassMeans {
  double first_frame = 0, boundary = 0, interior = 0;
};

// Mean |h| of one channel over first-frame tokens, first/last-row tokens of later frames, and the rest.
TokenClassMeans ClassMeans(const at::Tensor& hidden, int64_t channel, const TokenGrid& grid) {
  const at::Tensor mag = hidden.select(2, channel).abs().mean(0).reshape({grid.frames, grid.rows, grid.cols});
  TokenClassMeans m;
  m.first_frame = mag[0].mean().item<double>();
  const at::Tensor later = mag.narrow(0, 1, grid.frames - 1);
  m.boundary = at::cat({later.select(1, 0), later.select(1, grid.rows - 1)}).mean().item<double>();
  m.interior = later.narrow(1, 1, grid.rows - 2).mean().item<double>();
  return m;
}

WanTransformer LoadTiny(uint64_t seed = 0) {
  auto config = WanTransformerConfig::FromJson(TinyWanTransformerConfigJson());
  if (!config.ok()) throw std::runtime_error(config.status().ToString());
  auto m = WanTransformer::Load(*config, TinyWanTransformerWeights(seed));
  if (!m.ok()) throw std::runtime_error(m.status().ToString());
  return std::move(m).value();
}

TEST(TinyWan, LoadsStrictlyAndIsDeterministicPerSeed) {
  const WanTransformer tiny = LoadTiny();  // strict loading: every tensor name is an upstream one
  EXPECT_EQ(tiny.config().dim(), 128);
  const auto a = TinyWanTransformerTensors(4), b = TinyWanTransformerTensors(4), c = TinyWanTransformerTensors(5);
  EXPECT_TRUE(at::equal(a.at("blocks.1.ffn.net.2.weight"), b.at("blocks.1.ffn.net.2.weight")));
  EXPECT_FALSE(at::equal(a.at("blocks.1.ffn.net.2.weight"), c.at("blocks.1.ffn.net.2.weight")));
}

TEST(TinyWan, PlantedMassiveActivationHierarchyInTheResidualStream) {
  const WanTransformer tiny = LoadTiny();
  // 33 frames at 64x64 and 17 frames at 96x160 (latents /4 in time, /8 in space).
  for (std::vector<int64_t> shape : {std::vector<int64_t>{1, 16, 9, 8, 8}, std::vector<int64_t>{1, 16, 5, 12, 20}}) {
    at::manual_seed(99);
    const at::Tensor latents = at::randn(shape);
    const TokenGrid grid = tiny.GridFor(latents.sizes());
    Recorder early, late;
    ForwardContext context;
    context.hook = &early;
    const at::Tensor text = at::randn({shape[0], 6, 32});
    ASSERT_TRUE(tiny.Forward(latents, at::full({shape[0]}, 999.0), text, context).ok());
    context.hook = &late;
    ASSERT_TRUE(tiny.Forward(latents, at::full({shape[0]}, 100.0), text, context).ok());
    ASSERT_EQ(early.hidden_states.size(), 3u);
    for (size_t block = 0; block < early.hidden_states.size(); ++block) {
      const at::Tensor& h = early.hidden_states[block];
      const double median = h.abs().median().item<double>();
      for (int64_t channel : TinyWanPlantedChannels()) {
        const TokenClassMeans m = ClassMeans(h, channel, grid);
        EXPECT_GT(m.first_frame, 1.2 * m.boundary) << "block " << block << " channel " << channel;
        EXPECT_GT(m.boundary, 1.15 * m.interior) << "block " << block << " channel " << channel;
        EXPECT_GT(h.select(2, channel).abs().max().item<double>(), 100 * median);  // massive
        // Stronger at high noise (t = 999) than late in sampling (t = 100).
        EXPECT_GT(m.interior, 2 * ClassMeans(late.hidden_states[block], channel, grid).interior);
      }
    }
  }
}

}  // namespace
}  // namespace stas::models::wan

// Same seed, same video on any placement (docs/PARALLELISM.md, "Same seed, same video"): a render on one
// rank, with sequence parallelism over 2 and 4 ranks, CFG-parallel over 2 ranks and CFG x sp over 4
// gives bitwise the same final latents and exactly the same decoded frames, without STAS, with online
// STAS and with calibrated STAS, for the built-in tiny Wan and the tiny CogVideoX checkpoint of the
// reference fixtures. Every placement whose group tiles the world and whose sp divides the model's
// heads runs (np 2: sp 2, cfg 2; np 4: sp 4, sp 2, cfg 2, cfg 2 x sp 2; np 3: nothing tiles, skipped).
// Also: the online MA detector's median under real MPI is the single-rank one, bit for bit.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/fixture.h"
#include "models/cogvideox/pipeline.h"
#include "models/wan/pipeline.h"
#include "models/wan/tiny.h"
#include "models/wan/vae.h"
#include "models/wan/vae_tiny.h"
#include "mpi_test_support.h"
#include "parallel/parallel_runtime.h"
#include "parallel/process_groups.h"
#include "steering/ma_channels.h"
#include "steering/stas_hook.h"
#include "steering/token_mask.h"

namespace stas::testing {
namespace {

constexpr uint64_t kSeed = 5;
constexpr int kSteps = 3;

enum class Steering { kNone, kOnline, kCalibrated };

const char* SteeringName(Steering s) {
  switch (s) {
    case Steering::kNone: return "vanilla";
    case Steering::kOnline: return "stas online";
    case Steering::kCalibrated: return "stas calibrated";
  }
  return "?";
}

struct Placement {
  int sp = 1;
  int cfg = 1;
  std::string Name() const { return "sp " + std::to_string(sp) + (cfg == 2 ? " x cfg 2" : ""); }
};

// A rendering group of the world for one placement (collective over the world).
struct Group {
  std::unique_ptr<parallel::ProcessGroups> groups;
  std::unique_ptr<parallel::ParallelRuntime> runtime;
  std::unique_ptr<parallel::CfgPartnerOverPair> partner;

  static std::unique_ptr<Group> Create(const Placement& p, int64_t heads) {
    auto g = std::make_unique<Group>();
    auto groups = parallel::ProcessGroups::Create(MPI_COMM_WORLD, p.sp, p.cfg);
    STAS_CHECK(groups.ok()) << groups.status().ToString();
    g->groups = std::make_unique<parallel::ProcessGroups>(std::move(groups).value());
    auto runtime = parallel::ParallelRuntime::Create(*g->groups, at::kCPU, heads);
    STAS_CHECK(runtime.ok()) << runtime.status().ToString();
    g->runtime = std::move(runtime).value();
    if (parallel::CfgParallel* pair = g->runtime->cfg_parallel()) g->partner = std::make_unique<parallel::CfgPartnerOverPair>(pair);
    return g;
  }
  models::SequenceParallel* sequence() { return runtime ? runtime->sequence_parallel() : nullptr; }
  models::CfgPartner* cfg() { return partner.get(); }
};

struct Rendered {
  at::Tensor latents;  // final latents, float32
  at::Tensor frames;   // decoded video, float32
  int64_t steered_calls = 0;
};

// The STAS hook of a variant: online detection, or a calibrated set of `channels` for every block.
std::unique_ptr<steering::StasHook> MakeHook(Steering s, double tau, const std::vector<int64_t>& channels,
                                             int64_t hidden_dim, int blocks) {
  if (s == Steering::kNone) return nullptr;
  steering::StasOptions o;
  o.enabled = true;
  o.steps = 2;
  o.tau = tau;
  std::optional<steering::MaChannelSet> set;
  if (s == Steering::kCalibrated) {
    set.emplace();
    set->model = "test";
    set->hidden_dim = hidden_dim;
    set->num_blocks = blocks;
    set->global.channels = channels;
    set->global.peak_median_ratios.assign(channels.size(), 0.0);
  }
  return std::make_unique<steering::StasHook>(o, std::move(set));
}

// Every rank's (latents, frames) gathered to all ranks: [world, ...].
std::pair<at::Tensor, at::Tensor> GatherFromEveryRank(const Rendered& r) {
  static auto world = MakeCommunicator(MPI_COMM_WORLD, "world");
  return {world->AllGather(r.latents.contiguous().unsqueeze(0)), world->AllGather(r.frames.contiguous().unsqueeze(0))};
}

// The placements that tile the world and whose sp divides `heads`.
std::vector<Placement> PlacementsFor(int64_t heads) {
  std::vector<Placement> out;
  for (int cfg : {1, 2})
    for (int sp = 1; sp <= WorldSize(); ++sp)
      if (sp * cfg > 1 && WorldSize() % (sp * cfg) == 0 && heads % sp == 0) out.push_back({sp, cfg});
  return out;
}

// Renders `render` on one rank (world rank 0; the others wait) and on every placement, and checks on
// rank 0 that every rank of every placement ended with bitwise the one-rank latents and frames.
template <typename RenderFn>
void CheckEveryPlacement(int64_t heads, Steering steering, const at::Tensor& vanilla_latents, RenderFn render) {
  const std::vector<Placement> placements = PlacementsFor(heads);
  if (placements.empty()) GTEST_SKIP() << "no placement tiles " << WorldSize() << " ranks for " << heads << " heads";
  Rendered reference;
  if (WorldRank() == 0) {
    reference = render(nullptr, nullptr);
    if (vanilla_latents.defined() && steering != Steering::kNone) {
      EXPECT_FALSE(at::equal(reference.latents, vanilla_latents)) << "STAS must change the render";
    }
  }
  for (const Placement& p : placements) {
    std::unique_ptr<Group> group = Group::Create(p, heads);
    const Rendered mine = render(group->sequence(), group->cfg());
    auto [latents, frames] = GatherFromEveryRank(mine);
    if (WorldRank() != 0) continue;
    if (steering != Steering::kNone) {
      EXPECT_GT(mine.steered_calls, 0) << p.Name();
    }
    for (int r = 0; r < WorldSize(); ++r) {
      EXPECT_TRUE(at::equal(latents[r], reference.latents))
          << SteeringName(steering) << ", " << p.Name() << ", rank " << r << ": latents differ from one rank's by "
          << (latents[r] - reference.latents).abs().max().item<double>();
      EXPECT_TRUE(at::equal(frames[r], reference.frames))
          << SteeringName(steering) << ", " << p.Name() << ", rank " << r << ": frames differ from one rank's by "
          << (frames[r] - reference.frames).abs().max().item<double>();
    }
  }
}

// ------------------------------------------------------------------------------------------ Wan (tiny)

struct TinyWan {
  models::wan::WanTransformer transformer;
  models::UniPCConfig scheduler;
  models::wan::WanVaeConfig vae_config;
  models::wan::WanVaeDecoder vae;
  models::wan::VaeCompression compression;
};

const TinyWan& Wan() {
  static const TinyWan model = [] {
    auto config = models::wan::WanTransformerConfig::FromJson(models::wan::TinyWanTransformerConfigJson());
    STAS_CHECK(config.ok());
    auto transformer = models::wan::WanTransformer::Load(*config, models::wan::TinyWanTransformerWeights(0));
    STAS_CHECK(transformer.ok()) << transformer.status().ToString();
    // The released Wan2.1 scheduler settings, as the renderer uses them for the tiny model.
    auto scheduler = models::UniPCConfig::FromJson({{"num_train_timesteps", 1000}, {"solver_order", 2},
                                                    {"solver_type", "bh2"}, {"use_flow_sigmas", true},
                                                    {"prediction_type", "flow_prediction"}, {"flow_shift", 3.0},
                                                    {"lower_order_final", true}});
    STAS_CHECK(scheduler.ok());
    const Json vae_json = models::wan::TinyWanVaeConfigJson();
    auto vae_config = models::wan::WanVaeConfig::FromJson(vae_json);
    auto compression = models::wan::VaeCompression::FromVaeConfig(vae_json);
    STAS_CHECK(vae_config.ok() && compression.ok());
    auto vae = models::wan::WanVaeDecoder::Load(*vae_config, models::wan::TinyWanVaeWeights(0),
                                                at::TensorOptions().dtype(at::kFloat));
    STAS_CHECK(vae.ok()) << vae.status().ToString();
    return TinyWan{std::move(transformer).value(), *scheduler, *vae_config, std::move(vae).value(), *compression};
  }();
  return model;
}

// 9 frames of 48 x 80: 3 x 3 x 5 = 45 tokens, padded over 2 and 4 ranks.
Rendered RenderWan(Steering steering, models::SequenceParallel* sp, models::CfgPartner* cfg) {
  const TinyWan& m = Wan();
  auto noise = models::wan::InitialNoise(kSeed, 1, 16, 9, 48, 80, m.compression);
  STAS_CHECK(noise.ok());
  const at::Tensor prompt = SeededRandn({1, 6, 32}, 101), negative = SeededRandn({1, 7, 32}, 102);
  const auto hook = MakeHook(steering, 100.0, models::wan::TinyWanPlantedChannels(), 128, 3);
  models::wan::WanSamplingOptions o;
  o.num_inference_steps = kSteps;
  o.guidance_scale = 5.0;
  o.hook = hook.get();
  o.parallel = sp;
  o.cfg_partner = cfg;
  models::wan::WanSampler sampler(m.transformer, m.scheduler);
  auto latents = sampler.Sample(*noise, prompt, negative, o);
  STAS_CHECK(latents.ok()) << latents.status().ToString();
  auto z = models::wan::DenormalizeWanLatents(*latents, m.vae_config);
  STAS_CHECK(z.ok());
  auto frames = m.vae.Decode(*z);
  STAS_CHECK(frames.ok()) << frames.status().ToString();
  return {*latents, *frames, hook ? hook->steered_calls() : 0};
}

const at::Tensor& WanVanilla() {
  static const at::Tensor latents = RenderWan(Steering::kNone, nullptr, nullptr).latents;
  return latents;
}

class WanPlacement : public ::testing::TestWithParam<Steering> {};

TEST_P(WanPlacement, EveryPlacementRendersTheOneRankVideo) {
  const Steering s = GetParam();
  CheckEveryPlacement(8, s, WorldRank() == 0 && s != Steering::kNone ? WanVanilla() : at::Tensor(),
                      [&](models::SequenceParallel* sp, models::CfgPartner* cfg) { return RenderWan(s, sp, cfg); });
}

INSTANTIATE_TEST_SUITE_P(Steering, WanPlacement,
                         ::testing::Values(Steering::kNone, Steering::kOnline, Steering::kCalibrated));

// ------------------------------------------------------------------------------- CogVideoX (tiny fixture)

struct TinyCogVideoX {
  models::cogvideox::CogVideoXTransformer transformer;
  models::DDIMConfig scheduler;
  models::cogvideox::CogVideoXVaeDecoder vae;
};

// The cogvideox_pipeline_tiny reference fixture: 2 heads, 2 blocks, width 32, 4 latent channels.
const TinyCogVideoX& CogVideoX() {
  static const TinyCogVideoX model = [] {
    auto fixture = Fixture::Open(std::string(STAS_FIXTURES_DIR) + "/cogvideox_pipeline_tiny");
    STAS_CHECK(fixture.ok()) << fixture.status().ToString();
    const Json& config = fixture->config();
    auto tconfig = models::cogvideox::CogVideoXTransformerConfig::FromJson(config["transformer"]);
    auto sconfig = models::DDIMConfig::FromJson(config["scheduler"]);
    auto vconfig = models::cogvideox::CogVideoXVaeConfig::FromJson(config["vae"]);
    STAS_CHECK(tconfig.ok() && sconfig.ok() && vconfig.ok());
    auto transformer =
        models::cogvideox::CogVideoXTransformer::Load(*tconfig, fixture->weights().WithPrefix("transformer."));
    auto vae = models::cogvideox::CogVideoXVaeDecoder::Load(*vconfig, fixture->weights().WithPrefix("vae."));
    STAS_CHECK(transformer.ok() && vae.ok());
    return TinyCogVideoX{std::move(transformer).value(), *sconfig, std::move(vae).value()};
  }();
  return model;
}

// 9 frames of 32 x 48: 3 latent frames of 2 x 3 patches = 18 video tokens after 10 text tokens.
Rendered RenderCogVideoX(Steering steering, models::SequenceParallel* sp, models::CfgPartner* cfg) {
  const TinyCogVideoX& m = CogVideoX();
  auto noise = models::cogvideox::InitialNoise(kSeed, 1, 4, 9, 32, 48, 4, m.vae.config().spatial_compression());
  STAS_CHECK(noise.ok()) << noise.status().ToString();
  const at::Tensor prompt = SeededRandn({1, 10, 32}, 201), negative = SeededRandn({1, 10, 32}, 202);
  // Random weights carry no real massive activations: a low tau detects the modest outliers.
  const auto hook = MakeHook(steering, 1.5, {3, 17}, 32, 2);
  models::cogvideox::CogVideoXSamplingOptions o;
  o.num_inference_steps = kSteps;
  o.guidance_scale = 6.0;
  o.hook = hook.get();
  o.parallel = sp;
  o.cfg_partner = cfg;
  models::cogvideox::CogVideoXSampler sampler(m.transformer, m.scheduler);
  auto latents = sampler.Sample(*noise, prompt, negative, o);
  STAS_CHECK(latents.ok()) << latents.status().ToString();
  auto frames = models::cogvideox::DecodeCogVideoXLatents(m.vae, *latents);
  STAS_CHECK(frames.ok()) << frames.status().ToString();
  return {*latents, *frames, hook ? hook->steered_calls() : 0};
}

const at::Tensor& CogVideoXVanilla() {
  static const at::Tensor latents = RenderCogVideoX(Steering::kNone, nullptr, nullptr).latents;
  return latents;
}

class CogVideoXPlacement : public ::testing::TestWithParam<Steering> {};

TEST_P(CogVideoXPlacement, EveryPlacementRendersTheOneRankVideo) {
  const Steering s = GetParam();
  CheckEveryPlacement(2, s, WorldRank() == 0 && s != Steering::kNone ? CogVideoXVanilla() : at::Tensor(),
                      [&](models::SequenceParallel* sp, models::CfgPartner* cfg) {
                        return RenderCogVideoX(s, sp, cfg);
                      });
}

INSTANTIATE_TEST_SUITE_P(Steering, CogVideoXPlacement,
                         ::testing::Values(Steering::kNone, Steering::kOnline, Steering::kCalibrated));

// ------------------------------------------------------------------------------ the online median

// 2107 tokens: the median samples every 3rd token by global index, and the shard boundaries of 2, 3
// and 4 ranks fall between sampled tokens; |h| grows along the sequence, so shard medians differ.
TEST(OnlineMaDetection, MedianAndChannelsUnderMpiAreTheSingleRankOnes) {
  models::TokenGrid g;
  g.frames = 7;
  g.rows = 7;
  g.cols = 43;
  const at::Tensor full = SeededRandn({2, g.count(), 16}, 9) * at::linspace(1.0, 50.0, g.count()).view({1, -1, 1});
  const models::ShardLayout whole = steering::WholeGridLayout(g);
  const at::Tensor expected = steering::LayerMedianAbs(full, whole, nullptr);
  const steering::DetectedChannels expected_channels = steering::DetectMaChannels(full, whole, 3.0, 4, nullptr);

  auto comm = MakeCommunicator(MPI_COMM_WORLD, "sequence group");
  parallel::UlyssesAttention ulysses(*comm);
  const models::ShardLayout s = models::ShardLayout::For(g.count(), WorldRank(), WorldSize());
  const at::Tensor local = full.narrow(1, s.begin, s.local_real_tokens());
  const at::Tensor median = steering::LayerMedianAbs(local, s, &ulysses);
  const steering::DetectedChannels channels = steering::DetectMaChannels(local, s, 3.0, 4, &ulysses);
  EXPECT_TRUE(at::equal(median, expected)) << median << " vs " << expected;
  EXPECT_TRUE(at::equal(channels.index, expected_channels.index));
  EXPECT_TRUE(at::equal(channels.ratio, expected_channels.ratio));
}

}  // namespace
}  // namespace stas::testing

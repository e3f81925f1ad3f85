// Wan VAE decoder: config parsing, weight loading errors, streaming/causality invariants, and checks
// against the reference fixtures' data on shapes and batches the fixtures do not ship.
#include "models/wan/vae.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "common/fixture.h"
#include "models/dit.h"
#include "models/wan/vae_tiny.h"

namespace stas::models::wan {
namespace {

const std::string kFixtures = STAS_FIXTURES_DIR;

struct LoadedFixture {
  Fixture fixture;
  WanVaeConfig config;
  WanVaeDecoder decoder;
};

LoadedFixture LoadFixture(const std::string& name) {
  auto fixture = Fixture::Open(kFixtures + "/" + name);
  EXPECT_TRUE(fixture.ok()) << fixture.status().ToString();
  auto config = WanVaeConfig::FromJson(fixture->config());
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  auto decoder = WanVaeDecoder::Load(*config, fixture->weights(), at::TensorOptions().dtype(at::kFloat));
  EXPECT_TRUE(decoder.ok()) << decoder.status().ToString();
  return {std::move(fixture).value(), std::move(config).value(), std::move(decoder).value()};
}

at::Tensor Io(const Fixture& f, const std::string& name) {
  auto t = f.Io(name);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return *t;
}

void ExpectWithin(const at::Tensor& ours, const at::Tensor& ref, Tolerance tol, const std::string& what) {
  Comparison c = CompareTensors(what, ours, ref, tol);
  EXPECT_TRUE(c.ok()) << what << ": max_abs_err " << c.max_abs_error << " " << c.detail;
}

WanVaeConfig TinyConfig() {
  auto config = WanVaeConfig::FromJson(TinyWanVaeConfigJson());
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return *config;
}

WanVaeDecoder TinyDecoder(uint64_t seed = 7) {
  auto decoder = WanVaeDecoder::Load(TinyConfig(), TinyWanVaeWeights(seed),
                                     at::TensorOptions().dtype(at::kFloat));
  EXPECT_TRUE(decoder.ok()) << decoder.status().ToString();
  return *decoder;
}

at::Tensor Randn(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat));
}

// ---------------------------------------------------------------------------------------------------
// Config

TEST(WanVaeConfig, MissingKeysTakeDiffusersDefaults) {
  auto c = WanVaeConfig::FromJson(Json::object());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->base_dim, 96);
  EXPECT_EQ(c->decoder_base_dim, 96);
  EXPECT_EQ(c->z_dim, 16);
  EXPECT_EQ(c->dim_mult, (std::vector<int64_t>{1, 2, 4, 4}));
  EXPECT_EQ(c->temperal_downsample, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(c->latents_mean.size(), 16u);
  EXPECT_EQ(c->latents_std.size(), 16u);
  EXPECT_DOUBLE_EQ(c->latents_mean[0], -0.7571);
  EXPECT_DOUBLE_EQ(c->latents_std[15], 1.9160);
  EXPECT_EQ(c->patch_size, 1);
  EXPECT_EQ(c->OutputFrames(21), 81);
  EXPECT_EQ(c->spatial_upsampling(), 8);
}

TEST(WanVaeConfig, Wan22ConfigFields) {
  auto c = WanVaeConfig::FromJson(Json::parse(R"({"base_dim": 160, "decoder_base_dim": 256, "z_dim": 48,
      "is_residual": true, "in_channels": 12, "out_channels": 12, "patch_size": 2, "scale_factor_spatial": 16,
      "temperal_downsample": [false, true, true]})"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->decoder_base_dim, 256);
  EXPECT_TRUE(c->is_residual);
  EXPECT_EQ(c->video_channels(), 3);
  EXPECT_EQ(c->spatial_upsampling(), 16);
  EXPECT_EQ(c->OutputFrames(31), 121);
}

TEST(WanVaeConfig, NullDecoderBaseDimMeansBaseDim) {
  auto c = WanVaeConfig::FromJson(Json::parse(R"({"base_dim": 8, "decoder_base_dim": null, "patch_size": null})"));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->decoder_base_dim, 8);
  EXPECT_EQ(c->patch_size, 1);
}

TEST(WanVaeConfig, BadConfigsAreClearErrors) {
  auto expect_error = [](const char* json, const std::string& needle) {
    auto c = WanVaeConfig::FromJson(Json::parse(json));
    ASSERT_FALSE(c.ok()) << json;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status().message();
  };
  expect_error(R"({"temperal_downsample": [true]})", "temperal_downsample");
  expect_error(R"({"base_dim": "wide"})", "base_dim");
  expect_error(R"({"z_dim": 0})", "z_dim");
  expect_error(R"({"dim_mult": []})", "dim_mult");
  expect_error(R"({"patch_size": 2, "out_channels": 3})", "divisible");
  expect_error(R"([1, 2])", "not a JSON object");
  expect_error(R"({"is_residual": true, "base_dim": 8, "dim_mult": [1, 2, 3, 3]})", "residual up block");
}

// ---------------------------------------------------------------------------------------------------
// Structure: the tensors our loader asks for are exactly the reference implementation's decoder.

void ExpectShapesMatchFixtureWeights(const std::string& name) {
  auto fixture = Fixture::Open(kFixtures + "/" + name);
  ASSERT_TRUE(fixture.ok());
  auto config = WanVaeConfig::FromJson(fixture->config());
  ASSERT_TRUE(config.ok());
  auto shapes = WanVaeDecoder::WeightShapes(*config);
  ASSERT_TRUE(shapes.ok());
  std::map<std::string, std::vector<int64_t>> ours(shapes->begin(), shapes->end());
  std::map<std::string, std::vector<int64_t>> reference;
  for (const auto& n : fixture->weights().Names()) {
    if (n.rfind("decoder.", 0) != 0 && n.rfind("post_quant_conv.", 0) != 0) continue;
    reference[n] = fixture->weights().Get(n)->sizes().vec();
  }
  EXPECT_EQ(ours, reference) << name;
}

TEST(WanVaeDecoder, WeightShapesMatchUpstreamStateDicts) {
  ExpectShapesMatchFixtureWeights("wan_vae_tiny");
  ExpectShapesMatchFixtureWeights("wan22_vae_tiny");
}

// ---------------------------------------------------------------------------------------------------
// Against the reference fixtures on other inputs: causality gives the reference for prefixes, and
// batch rows are independent, so these are checks against diffusers' numbers, not our own.

void CheckPrefixesAgainstReference(const std::string& name) {
  LoadedFixture f = LoadFixture(name);
  at::Tensor latents = Io(f.fixture, "latents");
  at::Tensor video = Io(f.fixture, "video");
  for (int64_t k = 1; k < latents.size(2); ++k) {
    auto prefix = f.decoder.Decode(latents.narrow(2, 0, k));
    ASSERT_TRUE(prefix.ok()) << prefix.status().ToString();
    const int64_t frames = f.config.OutputFrames(k);
    ASSERT_EQ(prefix->size(2), frames);
    ExpectWithin(*prefix, video.narrow(2, 0, frames), f.fixture.tolerance(), name + " prefix " + std::to_string(k));
  }
}

TEST(WanVaeDecoder, LatentPrefixesDecodeToReferencePrefixes) {
  CheckPrefixesAgainstReference("wan_vae_tiny");
  CheckPrefixesAgainstReference("wan22_vae_tiny");
}

void CheckBatchAgainstReference(const std::string& name) {
  LoadedFixture f = LoadFixture(name);
  at::Tensor latents = Io(f.fixture, "latents");
  at::Tensor video = Io(f.fixture, "video");
  at::Tensor other = Randn(latents.sizes().vec(), 11);
  auto batch = f.decoder.Decode(at::cat({other, latents, other}, 0));
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  ASSERT_EQ(batch->size(0), 3);
  ExpectWithin(batch->narrow(0, 1, 1), video, f.fixture.tolerance(), name + " batch row 1");
  EXPECT_TRUE(at::allclose(batch->narrow(0, 0, 1), batch->narrow(0, 2, 1)));
  EXPECT_FALSE(at::allclose(batch->narrow(0, 0, 1), batch->narrow(0, 1, 1)));
}

TEST(WanVaeDecoder, BatchRowsAreDecodedIndependently) {
  CheckBatchAgainstReference("wan_vae_tiny");
  CheckBatchAgainstReference("wan22_vae_tiny");
}

TEST(WanVaeDecoder, ChunkSizeDoesNotChangeTheVideo) {
  for (const char* name : {"wan_vae_tiny", "wan22_vae_tiny"}) {
    LoadedFixture f = LoadFixture(name);
    at::Tensor latents = Io(f.fixture, "latents");
    at::Tensor video = Io(f.fixture, "video");
    for (int64_t chunk : {0, 1, 2, 3}) {
      WanVaeDecodeOptions options;
      options.max_chunk_frames = chunk;
      auto out = f.decoder.Decode(latents, options);
      ASSERT_TRUE(out.ok()) << out.status().ToString();
      ExpectWithin(*out, video, f.fixture.tolerance(), std::string(name) + " chunk " + std::to_string(chunk));
    }
  }
}

TEST(WanVaeDecoder, OutputDtypeAndDeviceOptions) {
  LoadedFixture f = LoadFixture("wan_vae_tiny");
  WanVaeDecodeOptions options;
  options.output_dtype = at::kDouble;
  auto out = f.decoder.Decode(Io(f.fixture, "latents"), options);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->scalar_type(), at::kDouble);
  ExpectWithin(*out, Io(f.fixture, "video"), f.fixture.tolerance(), "double output");
}

// ---------------------------------------------------------------------------------------------------
// Shapes, causality and streaming on other configs (the tiny built-in decoder, random weights).

TEST(WanVaeDecoder, OutputShapeFollowsTheConfig) {
  WanVaeDecoder decoder = TinyDecoder();
  for (int64_t f : {1, 2, 5}) {
    auto video = decoder.Decode(Randn({2, 16, f, 3, 5}, f));
    ASSERT_TRUE(video.ok()) << video.status().ToString();
    EXPECT_EQ(video->sizes(), (std::vector<int64_t>{2, 3, 1 + 4 * (f - 1), 24, 40}));
    EXPECT_LE(video->abs().max().item<float>(), 1.0f);
  }
}

TEST(WanVaeDecoder, Wan22StyleConfigWithRandomWeights) {
  // A residual config that differs from the shipped fixture: 3 levels, one temporal upsampling, 2 res blocks.
  auto config = WanVaeConfig::FromJson(Json::parse(R"({"base_dim": 4, "decoder_base_dim": 8, "z_dim": 5,
      "dim_mult": [1, 2, 2], "num_res_blocks": 2, "temperal_downsample": [true, false], "is_residual": true,
      "in_channels": 12, "out_channels": 12, "patch_size": 2})"));
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto shapes = WanVaeDecoder::WeightShapes(*config);
  ASSERT_TRUE(shapes.ok());
  std::map<std::string, at::Tensor> weights;
  uint64_t seed = 100;
  for (const auto& [name, shape] : *shapes) weights[name] = Randn(shape, seed++) * 0.2;
  auto decoder = WanVaeDecoder::Load(*config, WeightStore::FromTensors(weights), at::TensorOptions().dtype(at::kFloat));
  ASSERT_TRUE(decoder.ok()) << decoder.status().ToString();
  EXPECT_EQ(config->spatial_upsampling(), 8);  // 2 spatial upsamplings x patch 2
  EXPECT_EQ(config->temporal_upsampling(), 2);
  at::Tensor z = Randn({1, 5, 4, 2, 3}, 1);
  auto video = decoder->Decode(z);
  ASSERT_TRUE(video.ok()) << video.status().ToString();
  EXPECT_EQ(video->sizes(), (std::vector<int64_t>{1, 3, 7, 16, 24}));
  // Causal: changing the last latent frame leaves every earlier output frame bit-identical.
  at::Tensor z2 = z.clone();
  z2.narrow(2, 3, 1).add_(1.0);
  auto video2 = decoder->Decode(z2);
  ASSERT_TRUE(video2.ok());
  const int64_t kept = config->OutputFrames(3);
  EXPECT_TRUE(at::equal(video->narrow(2, 0, kept), video2->narrow(2, 0, kept)));
  EXPECT_FALSE(at::allclose(video->narrow(2, kept, 7 - kept), video2->narrow(2, kept, 7 - kept)));
}

TEST(WanVaeDecoder, CausalEarlierFramesIgnoreLaterLatents) {
  WanVaeDecoder decoder = TinyDecoder();
  at::Tensor z = Randn({1, 16, 5, 4, 4}, 3);
  auto base = decoder.Decode(z);
  ASSERT_TRUE(base.ok());
  for (int64_t k = 1; k < 5; ++k) {
    at::Tensor changed = z.clone();
    changed.narrow(2, k, 1).normal_();
    auto out = decoder.Decode(changed);
    ASSERT_TRUE(out.ok());
    const int64_t kept = 1 + 4 * (k - 1);
    EXPECT_TRUE(at::equal(base->narrow(2, 0, kept), out->narrow(2, 0, kept))) << "latent frame " << k;
    EXPECT_FALSE(at::allclose(base->narrow(2, kept, 4), out->narrow(2, kept, 4))) << "latent frame " << k;
  }
}

TEST(WanVaeDecoder, StreamingDeliversOrderedPiecesOfTheSameVideo) {
  WanVaeDecoder decoder = TinyDecoder();
  at::Tensor z = Randn({1, 16, 4, 3, 3}, 5);
  auto whole = decoder.Decode(z);
  ASSERT_TRUE(whole.ok());
  for (int64_t chunk : {0, 1, 3}) {
    WanVaeDecodeOptions options;
    options.max_chunk_frames = chunk;
    std::vector<at::Tensor> pieces;
    int64_t expected_first = 0;
    Status st = decoder.DecodeStreaming(z, options, [&](int64_t first, const at::Tensor& frames) {
      EXPECT_EQ(first, expected_first);
      if (chunk > 0) {
        EXPECT_LE(frames.size(2), chunk);
      } else {
        EXPECT_EQ(frames.size(2), first == 0 ? 1 : 4);  // one latent frame per piece
      }
      expected_first += frames.size(2);
      pieces.push_back(frames.clone());
      return Status::Ok();
    });
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(expected_first, 13);
    EXPECT_TRUE(at::allclose(at::cat(pieces, 2), *whole, 1e-5, 1e-6)) << "chunk " << chunk;
  }
  // A failing sink stops the decode and its status comes back.
  int calls = 0;
  Status st = decoder.DecodeStreaming(z, {}, [&](int64_t, const at::Tensor&) {
    ++calls;
    return Aborted("enough");
  });
  EXPECT_EQ(st.code(), StatusCode::kAborted);
  EXPECT_EQ(calls, 1);
}

size_t HeapInUse() {
  struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

TEST(WanVaeDecoder, StreamingMemoryDoesNotGrowWithFrames) {
  WanVaeDecoder decoder = TinyDecoder();
  // Latent 8x8 -> 64x64 video: one output frame is 48 KiB, 9 latent frames make 33 frames (1.6 MiB).
  // Heap in use is sampled at every piece; `keep` makes the sink hold the pieces, which shows that the
  // measurement does see memory that grows with the frames.
  auto peak_heap = [&](int64_t latent_frames, bool keep) {
    at::Tensor z = Randn({1, 16, latent_frames, 8, 8}, 9);
    std::vector<at::Tensor> kept;
    const size_t before = HeapInUse();
    size_t peak = before;
    Status st = decoder.DecodeStreaming(z, {}, [&](int64_t, const at::Tensor& frames) {
      if (keep) kept.push_back(frames.clone());
      peak = std::max(peak, HeapInUse());
      return Status::Ok();
    });
    EXPECT_TRUE(st.ok()) << st.ToString();
    return static_cast<double>(peak) - static_cast<double>(before);
  };
  peak_heap(2, false);  // warm up allocator pools and kernels
  const double short_run = peak_heap(3, false);
  const double long_run = peak_heap(9, false);
  const double keeping = peak_heap(9, true);
  const double video_bytes = 3.0 * 33 * 64 * 64 * 4;
  EXPECT_LT(long_run, short_run + 0.25 * video_bytes) << "short " << short_run << " long " << long_run;
  EXPECT_GT(keeping, long_run + 0.75 * video_bytes) << "keeping " << keeping << " streaming " << long_run;
}

// ---------------------------------------------------------------------------------------------------
// Errors

TEST(WanVaeDecoder, BadLatentsAreRejected) {
  WanVaeDecoder decoder = TinyDecoder();
  EXPECT_EQ(decoder.Decode(at::zeros({1, 15, 2, 4, 4})).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(decoder.Decode(at::zeros({1, 16, 4, 4})).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(decoder.Decode(at::zeros({1, 16, 0, 4, 4})).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(decoder.Decode(at::zeros({1, 16, 1, 4, 4}, at::kLong)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(decoder.Decode(at::Tensor()).status().code(), StatusCode::kInvalidArgument);
  WanVaeDecodeOptions negative;
  negative.max_chunk_frames = -1;
  EXPECT_EQ(decoder.Decode(at::zeros({1, 16, 1, 4, 4}), negative).status().code(), StatusCode::kInvalidArgument);
  auto msg = decoder.Decode(at::zeros({1, 15, 2, 4, 4})).status().message();
  EXPECT_NE(msg.find("z_dim is 16"), std::string::npos) << msg;
}

TEST(WanVaeDecoder, MissingWrongOrExtraWeightsAreClearErrors) {
  const WanVaeConfig config = TinyConfig();
  const auto options = at::TensorOptions().dtype(at::kFloat);
  auto weights = TinyWanVaeTensors(1);

  auto missing = weights;
  missing.erase("decoder.up_blocks.1.upsamplers.0.time_conv.weight");
  auto r = WanVaeDecoder::Load(config, WeightStore::FromTensors(missing), options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("decoder.up_blocks.1.upsamplers.0.time_conv.weight"), std::string::npos)
      << r.status().message();

  auto wrong = weights;
  wrong["decoder.conv_in.weight"] = at::zeros({16, 16, 3, 3, 1});
  r = WanVaeDecoder::Load(config, WeightStore::FromTensors(wrong), options);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("decoder.conv_in.weight"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("expected [16, 16, 3, 3, 3]"), std::string::npos) << r.status().message();

  auto extra = weights;
  extra["decoder.up_blocks.0.resnets.2.conv1.weight"] = at::zeros({1});
  extra["encoder.conv_in.weight"] = at::zeros({1});  // encoder tensors are ignored, not an error
  r = WanVaeDecoder::Load(config, WeightStore::FromTensors(extra), options);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("decoder.up_blocks.0.resnets.2.conv1.weight"), std::string::npos)
      << r.status().message();

  // A config that disagrees with the checkpoint (fewer res blocks) is caught by the extra tensors.
  WanVaeConfig fewer = config;
  fewer.num_res_blocks = 0;
  r = WanVaeDecoder::Load(fewer, WeightStore::FromTensors(weights), options);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("does the config match"), std::string::npos) << r.status().message();

  auto with_encoder = weights;
  with_encoder["encoder.conv_in.weight"] = at::zeros({1});
  with_encoder["quant_conv.weight"] = at::zeros({1});
  EXPECT_TRUE(WanVaeDecoder::Load(config, WeightStore::FromTensors(with_encoder), options).ok());
}

TEST(WanVaeDecoder, OptionalNormBiasIsApplied) {
  const WanVaeConfig config = TinyConfig();
  auto weights = TinyWanVaeTensors(2);
  const auto options = at::TensorOptions().dtype(at::kFloat);
  auto plain = WanVaeDecoder::Load(config, WeightStore::FromTensors(weights), options);
  weights["decoder.norm_out.bias"] = at::full({8, 1, 1, 1}, 0.5);
  auto biased = WanVaeDecoder::Load(config, WeightStore::FromTensors(weights), options);
  ASSERT_TRUE(plain.ok() && biased.ok()) << biased.status().ToString();
  at::Tensor z = Randn({1, 16, 1, 2, 2}, 4);
  EXPECT_FALSE(at::allclose(*plain->Decode(z), *biased->Decode(z)));
}

// ---------------------------------------------------------------------------------------------------
// Pipeline helpers

// ---------------------------------------------------------------------------------------------------
// Spatial tiles and the decode shared by a group

TEST(WanVaeConfig, UpBlocksReachCountsEveryConvolutionAfterTheMidBlock) {
  // Wan2.1 (4 levels, 3 resnets per up block): 3x2 convs at scales 1, 1/2, 1/4, 1/8 of a latent
  // position (11.25), the upsamplers' convs at 1/2, 1/4, 1/8 (0.875), conv_out at 1/8: 12.25 -> 13.
  EXPECT_EQ(WanVaeConfig{}.UpBlocksReach(), 13);
  // The tiny config (2 resnets per up block): 7.5 + 0.875 + 0.125 = 8.5 -> 9.
  EXPECT_EQ(TinyConfig().UpBlocksReach(), 9);
}

TEST(WanVaeHelpers, BandsCoverTheLongerSideInOrder) {
  auto bands = SplitIntoBands(5, 30, 4);  // columns: 8, 8, 7, 7
  ASSERT_EQ(bands.size(), 4u);
  int64_t next = 0;
  for (const LatentTile& b : bands) {
    EXPECT_EQ(b.top, 0);
    EXPECT_EQ(b.bottom, 5);
    EXPECT_EQ(b.left, next);
    EXPECT_GE(b.right - b.left, 7);
    EXPECT_LE(b.right - b.left, 8);
    next = b.right;
  }
  EXPECT_EQ(next, 30);
  auto rows = SplitIntoBands(9, 4, 2);  // taller than wide: rows 5 + 4
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].bottom, 5);
  EXPECT_EQ(rows[1].top, 5);
  EXPECT_EQ(rows[1].right, 4);
  EXPECT_TRUE(SplitIntoBands(2, 3, 4).empty());
  EXPECT_TRUE(SplitIntoBands(2, 3, 0).empty());
}

TEST(WanVaeDecoder, TilesDecodedWithTheHaloEqualTheWholeDecode) {
  WanVaeDecoder decoder = TinyDecoder();
  // Wide enough that every band's window (band + 9 per side) is a real part of the frame.
  at::Tensor z = Randn({1, 16, 2, 5, 30}, 11);
  auto whole = decoder.Decode(z);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  for (int parts : {2, 3}) {
    std::vector<at::Tensor> bands;
    for (const LatentTile& tile : SplitIntoBands(5, 30, parts)) {
      WanVaeDecodeOptions options;
      options.tile = tile;
      auto band = decoder.Decode(z, options);
      ASSERT_TRUE(band.ok()) << band.status().ToString();
      EXPECT_EQ(band->size(4), (tile.right - tile.left) * 8);
      bands.push_back(*band);
    }
    ExpectWithin(at::cat(bands, 4), *whole, {1e-5, 1e-5}, std::to_string(parts) + " column bands");
  }
  // A tile away from every edge, cut on rows and columns (the rows transposed into a tall frame).
  at::Tensor tall = z.transpose(3, 4).contiguous();  // 30 x 5
  auto tall_whole = decoder.Decode(tall);
  ASSERT_TRUE(tall_whole.ok());
  WanVaeDecodeOptions middle;
  middle.tile = LatentTile{11, 19, 1, 4};
  auto inner = decoder.Decode(tall, middle);
  ASSERT_TRUE(inner.ok()) << inner.status().ToString();
  ExpectWithin(*inner, tall_whole->narrow(3, 11 * 8, 8 * 8).narrow(4, 8, 3 * 8), {1e-5, 1e-5}, "inner tile");

  // Less context than the reach: the seam shows (so the halo above is what made the bands exact).
  WanVaeDecodeOptions short_halo;
  short_halo.tile = LatentTile{0, 5, 0, 15};
  short_halo.halo = TinyConfig().UpBlocksReach() - 3;
  auto cut = decoder.Decode(z, short_halo);
  ASSERT_TRUE(cut.ok());
  const double seam_error = (*cut - whole->narrow(4, 0, 15 * 8)).abs().max().item<double>();
  EXPECT_GT(seam_error, 1e-4);

  WanVaeDecodeOptions outside;
  outside.tile = LatentTile{0, 6, 0, 30};
  EXPECT_EQ(decoder.Decode(z, outside).status().code(), StatusCode::kInvalidArgument);
  outside.tile = LatentTile{0, 5, 10, 10};
  EXPECT_EQ(decoder.Decode(z, outside).status().code(), StatusCode::kInvalidArgument);
}

TEST(WanVaeDecoder, Wan22StyleTilesEqualTheWholeDecode) {
  auto config = WanVaeConfig::FromJson(Json::parse(R"({"base_dim": 4, "decoder_base_dim": 8, "z_dim": 5,
      "dim_mult": [1, 2, 2], "num_res_blocks": 2, "temperal_downsample": [true, false], "is_residual": true,
      "in_channels": 12, "out_channels": 12, "patch_size": 2})"));
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->UpBlocksReach(), 12);  // 10.5 + 0.75 + 0.25 = 11.5
  auto shapes = WanVaeDecoder::WeightShapes(*config);
  ASSERT_TRUE(shapes.ok());
  std::map<std::string, at::Tensor> weights;
  uint64_t seed = 300;
  for (const auto& [name, shape] : *shapes) weights[name] = Randn(shape, seed++) * 0.2;
  auto decoder = WanVaeDecoder::Load(*config, WeightStore::FromTensors(weights), at::TensorOptions().dtype(at::kFloat));
  ASSERT_TRUE(decoder.ok());
  at::Tensor z = Randn({1, 5, 3, 2, 28}, 3);
  auto whole = decoder->Decode(z);
  ASSERT_TRUE(whole.ok());
  std::vector<at::Tensor> bands;
  for (const LatentTile& tile : SplitIntoBands(2, 28, 2)) {
    WanVaeDecodeOptions options;
    options.tile = tile;
    auto band = decoder->Decode(z, options);
    ASSERT_TRUE(band.ok()) << band.status().ToString();
    bands.push_back(*band);
  }
  ExpectWithin(at::cat(bands, 4), *whole, {1e-5, 1e-5}, "residual variant, 2 bands");
}

// Ranks as threads: GatherSequence meets the other threads of its round (the only collective a
// shared decode uses); the attention collectives are not reached by the decoder.
class ThreadRendezvous {
 public:
  explicit ThreadRendezvous(int size) : size_(size), slots_(size) {}
  at::Tensor Gather(int rank, const at::Tensor& x) {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t round = round_;
    slots_[rank] = x;
    if (++arrived_ == size_) {
      result_ = at::cat(slots_, 1);
      arrived_ = 0;
      ++round_;
      changed_.notify_all();
    } else {
      changed_.wait(lock, [&] { return round_ != round; });
    }
    ++gathers_[rank];
    return result_;
  }
  int gathers(int rank) const { return gathers_.at(rank); }

 private:
  int size_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<at::Tensor> slots_;
  at::Tensor result_;
  int arrived_ = 0;
  int64_t round_ = 0;
  std::map<int, int> gathers_;
};

class ThreadRank final : public SequenceParallel {
 public:
  ThreadRank(int rank, int size, ThreadRendezvous* group) : rank_(rank), size_(size), group_(group) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  at::Tensor SelfAttention(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, int64_t) override {
    throw std::logic_error("not used by the decoder");
  }
  JointOutput JointSelfAttention(const Qkv&, const Qkv&, double, int64_t) override {
    throw std::logic_error("not used by the decoder");
  }
  at::Tensor GatherSequence(const at::Tensor& x) override { return group_->Gather(rank_, x); }
  at::Tensor AllReduceMax(const at::Tensor&) override { throw std::logic_error("not used by the decoder"); }

 private:
  int rank_, size_;
  ThreadRendezvous* group_;
};

TEST(WanVaeDecoder, ASharedDecodeGivesEveryRankTheWholeVideo) {
  WanVaeDecoder decoder = TinyDecoder();
  at::Tensor z = Randn({1, 16, 3, 4, 29}, 13);
  auto whole = decoder.Decode(z);
  ASSERT_TRUE(whole.ok());
  for (int size : {2, 3}) {
    ThreadRendezvous group(size);
    std::vector<std::vector<at::Tensor>> pieces(size);
    std::vector<Status> results(size, Status::Ok());
    std::vector<std::thread> threads;
    for (int r = 0; r < size; ++r)
      threads.emplace_back([&, r] {
        ThreadRank rank(r, size, &group);
        results[r] = decoder.DecodeShared(z, {}, rank, [&](int64_t, const at::Tensor& piece) {
          pieces[r].push_back(piece.clone());
          return Status::Ok();
        });
      });
    for (auto& t : threads) t.join();
    for (int r = 0; r < size; ++r) {
      ASSERT_TRUE(results[r].ok()) << results[r].ToString();
      ExpectWithin(at::cat(pieces[r], 2), *whole, {1e-5, 1e-5}, "rank " + std::to_string(r) + " of " + std::to_string(size));
    }
  }

  // The sink of one rank fails at its first piece: it gets no more pieces, but every rank still
  // finishes every gather (none waits forever) and only that rank reports the error.
  ThreadRendezvous group(2);
  std::vector<Status> results(2, Status::Ok());
  int failing_calls = 0;
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      ThreadRank rank(r, 2, &group);
      results[r] = decoder.DecodeShared(z, {}, rank, [&](int64_t, const at::Tensor&) {
        if (r != 0) return Status::Ok();
        ++failing_calls;
        return IoError("disk full");
      });
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(results[0].code(), StatusCode::kIoError);
  EXPECT_TRUE(results[1].ok()) << results[1].ToString();
  EXPECT_EQ(failing_calls, 1);
  EXPECT_EQ(group.gathers(0), group.gathers(1));
  EXPECT_GT(group.gathers(0), 1);

  // More ranks than latent columns, or a tile of its own: refused before any collective.
  ThreadRendezvous unused(8);
  ThreadRank eighth(0, 8, &unused);
  at::Tensor narrow = Randn({1, 16, 1, 2, 3}, 1);
  auto sink = [](int64_t, const at::Tensor&) { return Status::Ok(); };
  EXPECT_EQ(decoder.DecodeShared(narrow, {}, eighth, sink).code(), StatusCode::kInvalidArgument);
  WanVaeDecodeOptions tiled;
  tiled.tile = LatentTile{0, 2, 0, 1};
  ThreadRank lone(0, 2, &unused);
  EXPECT_EQ(decoder.DecodeShared(narrow, tiled, lone, sink).code(), StatusCode::kInvalidArgument);
}

TEST(WanVaeHelpers, DenormalizeIsPerChannelAffine) {
  const WanVaeConfig config = TinyConfig();
  at::Tensor latents = Randn({2, 16, 3, 2, 2}, 8);
  auto z = DenormalizeWanLatents(latents, config);
  ASSERT_TRUE(z.ok()) << z.status().ToString();
  for (int64_t c = 0; c < 16; ++c) {
    at::Tensor expected = latents.select(1, c) * config.latents_std[c] + config.latents_mean[c];
    EXPECT_TRUE(at::allclose(z->select(1, c), expected, 1e-6, 1e-6)) << "channel " << c;
  }
  EXPECT_EQ(DenormalizeWanLatents(at::zeros({1, 4, 1, 2, 2}), config).status().code(), StatusCode::kInvalidArgument);
  WanVaeConfig zero_std = config;
  zero_std.latents_std[3] = 0.0;
  EXPECT_EQ(DenormalizeWanLatents(latents, zero_std).status().code(), StatusCode::kInvalidArgument);
  WanVaeConfig short_mean = config;
  short_mean.latents_mean.pop_back();
  EXPECT_EQ(DenormalizeWanLatents(latents, short_mean).status().code(), StatusCode::kInvalidArgument);
}

TEST(WanVaeHelpers, VideoToFramesMapsRangeAndLayout) {
  at::Tensor video = at::zeros({1, 3, 2, 1, 4});
  video[0][0][1][0][0] = -1.0;
  video[0][1][1][0][1] = 1.0;
  video[0][2][1][0][2] = 3.0;
  at::Tensor frames = WanVideoToFrames(video);
  EXPECT_EQ(frames.sizes(), (std::vector<int64_t>{1, 2, 3, 1, 4}));
  EXPECT_FLOAT_EQ(frames[0][1][0][0][0].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(frames[0][1][1][0][1].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(frames[0][1][2][0][2].item<float>(), 1.0f);  // clamped
  EXPECT_FLOAT_EQ(frames[0][0][0][0][3].item<float>(), 0.5f);
}

// ---------------------------------------------------------------------------------------------------
// The tiny built-in decoder

TEST(TinyWanVae, DeterministicPerSeedAndComplete) {
  auto a = TinyWanVaeTensors(3), b = TinyWanVaeTensors(3), c = TinyWanVaeTensors(4);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    EXPECT_TRUE(at::equal(t, b.at(name))) << name;
    EXPECT_FALSE(at::equal(t, c.at(name))) << name;
  }
  auto shapes = WanVaeDecoder::WeightShapes(TinyConfig());
  ASSERT_TRUE(shapes.ok());
  EXPECT_EQ(a.size(), shapes->size());
  EXPECT_EQ(TinyConfig().z_dim, 16);
}

TEST(TinyWanVae, DecodesToAVideoThatUsesTheRange) {
  WanVaeDecoder decoder = TinyDecoder(0);
  at::Tensor z = Randn({1, 16, 3, 8, 8}, 21);
  auto video = decoder.Decode(*DenormalizeWanLatents(z, decoder.config()));
  ASSERT_TRUE(video.ok());
  const double clamped = (video->abs() >= 0.999).to(at::kFloat).mean().item<double>();
  const double spread = video->std().item<double>();
  EXPECT_LT(clamped, 0.2) << "most pixels saturate";
  EXPECT_GT(spread, 0.1) << "flat video";
  // Every frame has spatial structure, and frames differ from each other.
  for (int64_t t = 0; t < video->size(2); ++t)
    EXPECT_GT(video->select(2, t).std().item<double>(), 0.05) << "frame " << t;
  EXPECT_FALSE(at::allclose(video->select(2, 0), video->select(2, 8), 0.0, 0.05));
  // Different latents give different videos.
  auto other = decoder.Decode(Randn({1, 16, 3, 8, 8}, 22));
  ASSERT_TRUE(other.ok());
  EXPECT_GT((*other - *video).abs().mean().item<double>(), 0.05);
}

}  // namespace
}  // namespace stas::models::wan

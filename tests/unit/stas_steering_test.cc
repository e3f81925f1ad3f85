// STAS: token masks, MA channel detection and calibration files, the reference and the update, CFG
// rows, sharded equivalence (simulated shards on threads) and the hook's invariants.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "common/check.h"
#include "common/json.h"
#include "steering/ma_channels.h"
#include "steering/stas_hook.h"
#include "steering/token_mask.h"
#include "support/temp_dir.h"
#include "support/thread_sequence_parallel.h"

namespace stas::steering {
namespace {

using models::BlockContext;
using models::CfgBranch;
using models::ShardLayout;
using models::TokenGrid;

TokenGrid Grid(int64_t f, int64_t r, int64_t c) {
  TokenGrid g;
  g.frames = f;
  g.rows = r;
  g.cols = c;
  return g;
}

StasOptions Enabled() {
  StasOptions o;
  o.enabled = true;
  return o;
}

std::vector<int64_t> Steered(const TokenGrid& g, const StasOptions& o) {
  return SteeredLocalTokens(g, WholeGridLayout(g), MaskSpec::Resolve(o, g));
}

// ---------------------------------------------------------------------------------------------
// Token masks

TEST(StasTokenMask, DefaultRowsModeIsFirstFrameAndFirstLastRowOfLaterFrames) {
  const TokenGrid g = Grid(4, 3, 5);
  std::vector<int64_t> expected;
  for (int64_t f = 0; f < g.frames; ++f)
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t c = 0; c < g.cols; ++c)
        if (f == 0 || r == 0 || r == g.rows - 1) expected.push_back((f * g.rows + r) * g.cols + c);
  EXPECT_EQ(Steered(g, Enabled()), expected);
  EXPECT_EQ(ClassifyToken(0, g, MaskSpec::Resolve(Enabled(), g)), TokenClass::kFirstFrame);
  EXPECT_EQ(ClassifyToken(15, g, MaskSpec::Resolve(Enabled(), g)), TokenClass::kBoundary);
  EXPECT_EQ(ClassifyToken(15 + 7, g, MaskSpec::Resolve(Enabled(), g)), TokenClass::kInterior);
}

TEST(StasTokenMask, OddSizesAndWidthNotARowMultiple) {
  const TokenGrid g = Grid(3, 3, 3);  // 9 tokens per frame
  StasOptions o = Enabled();
  o.boundary_width = 4;  // head 0..3 and tail 5..8: only in-frame index 4 is interior
  std::vector<int64_t> expected;
  for (int64_t t = 0; t < g.count(); ++t)
    if (t < 9 || t % 9 != 4) expected.push_back(t);
  EXPECT_EQ(Steered(g, o), expected);

  o.boundary_width = 2;
  expected.clear();
  for (int64_t t = 0; t < g.count(); ++t) {
    const int64_t i = t % 9;
    if (t < 9 || i < 2 || i >= 7) expected.push_back(t);
  }
  EXPECT_EQ(Steered(g, o), expected);
}

TEST(StasTokenMask, WidthOverHalfAFrameTakesWholeFrameAndZeroTakesOnlyFrameZero) {
  const TokenGrid g = Grid(3, 2, 3);
  StasOptions o = Enabled();
  o.boundary_width = 100;
  EXPECT_EQ(static_cast<int64_t>(Steered(g, o).size()), g.count());
  o.boundary_width = 0;
  const auto only_first = Steered(g, o);
  ASSERT_EQ(static_cast<int64_t>(only_first.size()), g.tokens_per_frame());
  EXPECT_EQ(only_first.back(), g.tokens_per_frame() - 1);
}

TEST(StasTokenMask, OneFrameVideoIsAllFirstFrame) {
  const TokenGrid g = Grid(1, 3, 4);
  for (auto mode : {BoundaryMode::kRows, BoundaryMode::kFrames}) {
    StasOptions o = Enabled();
    o.boundary_mode = mode;
    EXPECT_EQ(static_cast<int64_t>(Steered(g, o).size()), g.count());
    for (TokenClass c : ClassifyShardTokens(g, WholeGridLayout(g), MaskSpec::Resolve(o, g)))
      EXPECT_EQ(c, TokenClass::kFirstFrame);
  }
}

std::set<int64_t> SteeredFrames(const TokenGrid& g, const StasOptions& o) {
  std::set<int64_t> frames;
  const auto tokens = Steered(g, o);
  for (int64_t t : tokens) frames.insert(t / g.tokens_per_frame());
  // Frames mode steers whole frames only.
  EXPECT_EQ(static_cast<int64_t>(tokens.size()), static_cast<int64_t>(frames.size()) * g.tokens_per_frame());
  return frames;
}

TEST(StasTokenMask, FramesModeTakesChunkBoundaryFrames) {
  StasOptions o = Enabled();
  o.boundary_mode = BoundaryMode::kFrames;
  EXPECT_EQ(SteeredFrames(Grid(5, 2, 2), o), (std::set<int64_t>{0, 1, 4}));  // one chunk 1..4
  o.chunk_frames = 3;
  EXPECT_EQ(SteeredFrames(Grid(7, 2, 2), o), (std::set<int64_t>{0, 1, 3, 4, 6}));  // chunks 1-3, 4-6
  EXPECT_EQ(SteeredFrames(Grid(6, 2, 2), o), (std::set<int64_t>{0, 1, 3, 4, 5}));  // 1-3, partial 4-5
  EXPECT_EQ(SteeredFrames(Grid(2, 2, 2), o), (std::set<int64_t>{0, 1}));
}

TEST(StasTokenMask, ShardsBuildTheirOwnPartAndSkipPadding) {
  const TokenGrid g = Grid(3, 3, 5);  // 45 tokens
  const auto whole = Steered(g, Enabled());
  for (int size : {2, 4, 7}) {
    std::vector<int64_t> joined;
    int64_t real_total = 0;
    for (int rank = 0; rank < size; ++rank) {
      const ShardLayout s = ShardLayout::For(g.count(), rank, size);
      real_total += s.local_real_tokens();
      for (int64_t t : SteeredLocalTokens(g, s, MaskSpec::Resolve(Enabled(), g))) {
        EXPECT_LT(t, s.local_real_tokens());
        joined.push_back(s.begin + t);
      }
    }
    EXPECT_EQ(real_total, g.count());
    EXPECT_EQ(joined, whole) << "size " << size;
  }
}

// ---------------------------------------------------------------------------------------------
// Calibrated channel files

MaChannelSet SampleSet() {
  MaChannelSet s;
  s.model = "tiny";
  s.hidden_dim = 32;
  s.num_blocks = 4;
  s.global = {{3, 17}, {900.0, 400.0}};
  s.blocks[2] = {{5}, {250.0}};
  s.blocks[3] = {{}, {}};
  return s;
}

TEST(StasChannelFile, RoundTripAndPerBlockFallback) {
  testing::TempDir dir;
  ASSERT_TRUE(SampleSet().Save(dir.File("ma.json")).ok());
  auto loaded = MaChannelSet::Load(dir.File("ma.json"));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->ToJson(), SampleSet().ToJson());
  EXPECT_EQ(loaded->ChannelsForBlock(0), (std::vector<int64_t>{3, 17}));
  EXPECT_EQ(loaded->ChannelsForBlock(2), (std::vector<int64_t>{5}));
  EXPECT_TRUE(loaded->ChannelsForBlock(3).empty());
}

TEST(StasChannelFile, RejectsBadFiles) {
  const Json good = SampleSet().ToJson();
  auto expect_bad = [](Json j, const std::string& needle) {
    auto r = MaChannelSet::FromJson(j);
    ASSERT_FALSE(r.ok()) << j.dump();
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
  };
  Json j = good;
  j["extra"] = 1;
  expect_bad(j, "unknown key 'extra'");
  j = good;
  j["format"] = "v0";
  expect_bad(j, "format");
  j = good;
  j["global"]["channels"] = {3, 32};
  expect_bad(j, "channel 32 outside");
  j = good;
  j["global"]["channels"] = {3, 3};
  expect_bad(j, "listed twice");
  j = good;
  j["blocks"][0]["block"] = 9;
  expect_bad(j, "block 9 outside");
  j = good;
  j["global"]["channels"] = "3";
  expect_bad(j, "ma channels");
  testing::TempDir dir;
  EXPECT_FALSE(MaChannelSet::Load(dir.File("missing.json")).ok());
}

// ---------------------------------------------------------------------------------------------
// Planted massive activations

constexpr int64_t kDim = 32;
const std::vector<int64_t> kPlanted = {3, 17};

// [B, L, D] noise with planted MAs in kPlanted: first-frame tokens x1000 (row b scaled by (1 + b)),
// boundary tokens x300, interior x20. `extra_tokens` of garbage (huge values) are appended as padding.
at::Tensor PlantedHidden(const TokenGrid& g, int64_t batch, int64_t extra_tokens = 0, uint64_t seed = 7) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor h = at::normal(0.0, 1.0, {batch, g.count() + extra_tokens, kDim}, gen);
  const MaskSpec spec = MaskSpec::Resolve(Enabled(), g);
  auto acc = h.accessor<float, 3>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < g.count(); ++t) {
      const TokenClass cls = ClassifyToken(t, g, spec);
      const float scale = cls == TokenClass::kFirstFrame ? 1000.f * (1 + b) : cls == TokenClass::kBoundary ? 300.f : 20.f;
      for (int64_t c : kPlanted) acc[b][t][c] = (acc[b][t][c] >= 0 ? 1.f : -1.f) * scale * (1.f + 0.001f * t);
    }
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = g.count(); t < g.count() + extra_tokens; ++t) acc[b][t][3] = 1e9f, acc[b][t][9] = -1e9f;
  return h;
}

BlockContext Context(const TokenGrid& g, int step = 0, int num_steps = 10, int block = 0) {
  BlockContext c;
  c.block = block;
  c.num_blocks = 4;
  c.step = step;
  c.num_steps = num_steps;
  c.grid = g;
  c.shard = WholeGridLayout(g);
  return c;
}

// The expected update computed independently, element by element in double precision.
at::Tensor ExpectedUpdate(const at::Tensor& original, const TokenGrid& g, const StasOptions& o,
                          const std::vector<int64_t>& channels, const std::vector<bool>& rows,
                          int64_t text_tokens = 0) {
  at::Tensor expected = original.clone();
  auto in = original.accessor<float, 3>();
  auto out = expected.accessor<float, 3>();
  const MaskSpec spec = MaskSpec::Resolve(o, g);
  for (int64_t b = 0; b < original.size(0); ++b) {
    if (!rows[b]) continue;
    double r = 0;
    for (int64_t t = 0; t < g.count(); ++t)
      for (int64_t c : channels) r = std::max(r, std::abs(static_cast<double>(in[b][text_tokens + t][c])));
    for (int64_t t = 0; t < g.count(); ++t) {
      if (ClassifyToken(t, g, spec) == TokenClass::kInterior) continue;
      for (int64_t c : channels) {
        const double h = in[b][text_tokens + t][c];
        const double sign = h > 0 ? 1 : (h < 0 ? -1 : 0);
        out[b][text_tokens + t][c] = static_cast<float>(h + o.lambda * (o.alpha * r * sign - h));
      }
    }
  }
  return expected;
}

// Elements outside `touched` must be bit-identical; inside, equal within float rounding.
void ExpectUpdate(const at::Tensor& actual, const at::Tensor& expected, const at::Tensor& original) {
  const at::Tensor touched = expected.ne(original);
  EXPECT_TRUE(at::equal(actual.masked_select(touched.logical_not()), original.masked_select(touched.logical_not())))
      << "an element outside mask x channels changed";
  EXPECT_TRUE(at::allclose(actual, expected, 1e-5, 1e-3));
  EXPECT_GT(touched.sum().item<int64_t>(), 0);
}

TEST(StasPlanted, OnlineDetectionFindsExactlyThePlantedChannels) {
  const TokenGrid g = Grid(4, 3, 4);
  // Padding tokens carry huge values in channels 3 and 9: neither detection nor R may see them.
  const at::Tensor h = PlantedHidden(g, 2, /*extra_tokens=*/5);
  const at::Tensor video = h.narrow(1, 0, g.count());
  DetectedChannels d = DetectMaChannels(video, WholeGridLayout(g), 100.0, 8, nullptr);
  ASSERT_EQ(d.index.sizes(), (std::vector<int64_t>{2, 8}));
  for (int64_t b = 0; b < 2; ++b) {
    std::set<int64_t> found;
    for (int64_t i = 0; i < 8; ++i)
      if (d.valid[b][i].item<bool>()) found.insert(d.index[b][i].item<int64_t>());
    EXPECT_EQ(found, std::set<int64_t>(kPlanted.begin(), kPlanted.end())) << "row " << b;
  }
  // A stricter tau than any ratio detects nothing.
  EXPECT_FALSE(DetectMaChannels(video, WholeGridLayout(g), 1e9, 8, nullptr).valid.any().item<bool>());
}

TEST(StasPlanted, HookUpdatesExactlyMaskedTokensTimesChannelsWithPerSampleReference) {
  const TokenGrid g = Grid(4, 3, 4);
  StasOptions o = Enabled();
  o.alpha = 0.9;
  o.lambda = 0.7;
  const at::Tensor original = PlantedHidden(g, 2, /*extra_tokens=*/5);
  BlockContext ctx = Context(g);
  ctx.shard = ShardLayout::For(g.count(), 0, 1);
  ctx.shard.local_tokens = g.count() + 5;  // a shard holding 5 padding tokens after the real ones
  ctx.branches = {CfgBranch::kUncond, CfgBranch::kCond};

  auto hook = MakeStasHook(o);
  ASSERT_TRUE(hook.ok() && *hook);
  at::Tensor h = original.clone();
  (*hook)->AfterBlock(h, ctx);
  EXPECT_EQ((*hook)->steered_calls(), 1);
  const at::Tensor expected = ExpectedUpdate(original, g, o, kPlanted, {true, true});
  ExpectUpdate(h, expected, original);
  // Row 1's first frame is twice as large: each row has its own reference R_b.
  const double r0 = original[0].narrow(0, 0, g.count()).index_select(1, at::tensor(kPlanted)).abs().max().item<double>();
  const double r1 = original[1].narrow(0, 0, g.count()).index_select(1, at::tensor(kPlanted)).abs().max().item<double>();
  EXPECT_GT(r1, 1.5 * r0);
  // With lambda = 1 every masked MA entry lands on +-alpha R_b exactly (within rounding).
  o.lambda = 1.0;
  auto replace = MakeStasHook(o);
  at::Tensor h2 = original.clone();
  (*replace)->AfterBlock(h2, ctx);
  EXPECT_NEAR(std::abs(h2[0][0][3].item<double>()), 0.9 * r0, 1e-3 * r0);
  EXPECT_NEAR(std::abs(h2[1][0][3].item<double>()), 0.9 * r1, 1e-3 * r1);
  EXPECT_NEAR(std::abs(h2[1][g.tokens_per_frame()][17].item<double>()), 0.9 * r1, 1e-3 * r1);
  // Padding is never touched.
  EXPECT_TRUE(at::equal(h.narrow(1, g.count(), 5), original.narrow(1, g.count(), 5)));
}

TEST(StasPlanted, CalibratedChannelsAndTextPrefix) {
  const TokenGrid g = Grid(3, 2, 5);
  const int64_t text = 4;
  testing::TempDir dir;
  MaChannelSet set = SampleSet();
  set.global = {{17}, {1.0}};
  ASSERT_TRUE(set.Save(dir.File("ma.json")).ok());
  StasOptions o = Enabled();
  o.channels_file = dir.File("ma.json");
  o.lambda = 1.5;  // extrapolation
  at::Tensor original = at::cat({at::full({2, text, kDim}, 5e4), PlantedHidden(g, 2)}, 1);
  BlockContext ctx = Context(g);
  ctx.text_tokens = text;
  auto hook = MakeStasHook(o, {"tiny", kDim, 4});
  ASSERT_TRUE(hook.ok()) << hook.status().ToString();
  at::Tensor h = original.clone();
  (*hook)->AfterBlock(h, ctx);
  ExpectUpdate(h, ExpectedUpdate(original, g, o, {17}, {true, true}, text), original);
  // Block 3 has an empty calibrated list: nothing happens there.
  at::Tensor h3 = original.clone();
  (*hook)->AfterBlock(h3, Context(g, 0, 10, 3));
  EXPECT_TRUE(at::equal(h3, original));
}

TEST(StasHookRules, CondOnlySteersOnlyConditionalRows) {
  const TokenGrid g = Grid(3, 3, 4);
  StasOptions o = Enabled();
  o.branches = SteerBranches::kCondOnly;
  const at::Tensor original = PlantedHidden(g, 2);
  BlockContext ctx = Context(g);
  ctx.branches = {CfgBranch::kUncond, CfgBranch::kCond};
  auto hook = MakeStasHook(o);
  at::Tensor h = original.clone();
  (*hook)->AfterBlock(h, ctx);
  EXPECT_TRUE(at::equal(h[0], original[0]));
  ExpectUpdate(h, ExpectedUpdate(original, g, o, kPlanted, {false, true}), original);
  // A batch of only unconditional rows is not touched at all.
  ctx.branches = {CfgBranch::kUncond, CfgBranch::kUncond};
  at::Tensor u = original.clone();
  (*hook)->AfterBlock(u, ctx);
  EXPECT_TRUE(at::equal(u, original));
  EXPECT_EQ((*hook)->steered_calls(), 1);
}

TEST(StasHookRules, StepWindowBlocksAndDisabledAreBitIdentical) {
  const TokenGrid g = Grid(3, 2, 3);
  const at::Tensor original = PlantedHidden(g, 1);
  StasOptions o = Enabled();
  o.steps = 3;
  o.blocks = {1};
  auto hook = MakeStasHook(o);
  for (int step = -1; step < 6; ++step)
    for (int block = 0; block < 3; ++block) {
      at::Tensor h = original.clone();
      (*hook)->AfterBlock(h, Context(g, step, 6, block));
      const bool should = step >= 0 && step < 3 && block == 1;
      EXPECT_EQ(!at::equal(h, original), should) << "step " << step << " block " << block;
    }
  o.steps = 0;  // K = 0
  auto none = MakeStasHook(o);
  for (int step = 0; step < 6; ++step) {
    at::Tensor h = original.clone();
    (*none)->AfterBlock(h, Context(g, step, 6, 1));
    EXPECT_TRUE(at::equal(h, original));
  }
  EXPECT_EQ((*none)->steered_calls(), 0);
  StasOptions off;
  auto disabled = MakeStasHook(off);
  ASSERT_TRUE(disabled.ok());
  EXPECT_EQ(disabled->get(), nullptr);
  // Default K = round(0.4 N).
  EXPECT_EQ(Enabled().SteeredSteps(50), 20);
  EXPECT_EQ(off.SteeredSteps(50), 0);
}

TEST(StasHookRules, FactoryRejectsMismatchedModels) {
  testing::TempDir dir;
  ASSERT_TRUE(SampleSet().Save(dir.File("ma.json")).ok());
  StasOptions o = Enabled();
  o.channels_file = dir.File("ma.json");
  EXPECT_EQ(MakeStasHook(o, {"tiny", 64, 4}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeStasHook(o, {"tiny", 32, 30}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(MakeStasHook(o, {"other", 32, 4}).ok());  // another model id only warns
  o.channels_file = dir.File("missing.json");
  EXPECT_FALSE(MakeStasHook(o).ok());
  StasOptions b = Enabled();
  b.blocks = {7};
  EXPECT_EQ(MakeStasHook(b, {"", 0, 4}).status().code(), StatusCode::kInvalidArgument);
}

TEST(StasHookRules, LowPrecisionAndNonContiguousKeepOtherElementsBitIdentical) {
  const TokenGrid g = Grid(2, 3, 3);
  const at::Tensor original = PlantedHidden(g, 2).to(at::kBFloat16);
  auto hook = MakeStasHook(Enabled());
  at::Tensor h = original.clone();
  (*hook)->AfterBlock(h, Context(g));
  const at::Tensor expected = ExpectedUpdate(original.to(at::kFloat), g, Enabled(), kPlanted, {true, true});
  const at::Tensor touched = expected.ne(original.to(at::kFloat));
  EXPECT_TRUE(at::equal(h.masked_select(touched.logical_not()), original.masked_select(touched.logical_not())));
  EXPECT_TRUE(at::allclose(h.to(at::kFloat), expected, 1e-2, 1e-2));

  // A non-contiguous residual view (batch-strided) is updated in place through its storage.
  at::Tensor storage = PlantedHidden(g, 2).transpose(0, 1).contiguous();  // [L, B, D]
  at::Tensor view = storage.transpose(0, 1);                             // [B, L, D], non-contiguous
  const at::Tensor before = view.clone();
  (*hook)->AfterBlock(view, Context(g));
  ExpectUpdate(storage.transpose(0, 1), ExpectedUpdate(before, g, Enabled(), kPlanted, {true, true}), before);
}

// ---------------------------------------------------------------------------------------------
// Sharded equivalence: shards on threads with a SequenceParallel whose collectives meet in memory.

using testing::ThreadGroup;
using testing::ThreadSequenceParallel;

// Runs `options` on `full` [B, L, D] unsharded and split over `size` shards; returns both results.
std::pair<at::Tensor, at::Tensor> RunShardedAndWhole(const StasOptions& options, const TokenGrid& g,
                                                     const at::Tensor& full, int size, int64_t* exchanges) {
  auto whole_hook = MakeStasHook(options);
  at::Tensor whole = full.clone();
  BlockContext ctx = Context(g);
  ctx.branches = {CfgBranch::kCond, CfgBranch::kUncond};
  (*whole_hook)->AfterBlock(whole, ctx);

  ThreadGroup group(size);
  std::vector<at::Tensor> parts(size);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size; ++rank) {
    threads.emplace_back([&, rank] {
      const ShardLayout s = ShardLayout::For(g.count(), rank, size);
      // This shard's tokens, padding filled with huge garbage that must not leak into R or detection.
      at::Tensor local = at::full({full.size(0), s.local_tokens, full.size(2)}, -3e8);
      local.narrow(1, 0, s.local_real_tokens()).copy_(full.narrow(1, s.begin, s.local_real_tokens()));
      ThreadSequenceParallel sp(&group, rank, size);
      BlockContext c = ctx;
      c.shard = s;
      c.parallel = &sp;
      auto hook = MakeStasHook(options);
      hook.value()->AfterBlock(local, c);
      parts[rank] = local.narrow(1, 0, s.local_real_tokens());
    });
  }
  for (auto& t : threads) t.join();
  *exchanges = group.exchanges();
  return {whole, at::cat(parts, 1)};
}

TEST(StasSharded, ShardsGiveTheSameUpdateAsOneRank) {
  const TokenGrid g = Grid(5, 3, 3);  // 45 tokens: uneven splits with padding
  const at::Tensor full = PlantedHidden(g, 2, 0, 11);
  for (int size : {2, 3, 4}) {
    for (bool online : {true, false}) {
      StasOptions o = Enabled();
      o.lambda = 0.8;
      testing::TempDir dir;
      if (!online) {
        MaChannelSet set = SampleSet();
        ASSERT_TRUE(set.Save(dir.File("ma.json")).ok());
        o.channels_file = dir.File("ma.json");
      }
      int64_t exchanges = 0;
      auto [whole, sharded] = RunShardedAndWhole(o, g, full, size, &exchanges);
      EXPECT_FALSE(at::equal(whole, full));
      // R is an exact max and the update elementwise, so sharding changes nothing at all.
      EXPECT_TRUE(at::equal(whole, sharded)) << "size " << size << " online " << online;
      // One AllReduceMax for R (+ peak max and median gather when online), per rank.
      EXPECT_EQ(exchanges, size * (online ? 3 : 1));
    }
  }
}

TEST(StasSharded, OnlineMedianIsExactlyTheSingleRankOne) {
  // 7 x 7 x 43 = 2107 tokens: the median samples every 3rd token by global index, and with 2, 3 or 4
  // shards the shard boundaries fall between sampled tokens. |h| grows along the sequence, so each
  // shard's own median differs from the global one (a median of shard medians would be off).
  const TokenGrid g = Grid(7, 7, 43);
  const at::Tensor ramp = at::linspace(1.0, 50.0, g.count()).view({1, g.count(), 1});
  const at::Tensor full = at::randn({2, g.count(), 8}, at::detail::createCPUGenerator(5), at::kFloat) * ramp;
  const ShardLayout whole_layout = WholeGridLayout(g);
  const at::Tensor expected = LayerMedianAbs(full, whole_layout, nullptr);
  const DetectedChannels expected_channels = DetectMaChannels(full, whole_layout, 3.0, 4, nullptr);
  // The sample is every 3rd token: the exact median of those values.
  EXPECT_TRUE(at::equal(expected, std::get<0>(full.slice(1, 0, g.count(), 3).abs().reshape({2, -1}).median(1))));
  for (int size : {2, 3, 4}) {
    ThreadGroup group(size);
    std::vector<at::Tensor> medians(size);
    std::vector<DetectedChannels> detected(size);
    std::vector<std::thread> threads;
    for (int rank = 0; rank < size; ++rank)
      threads.emplace_back([&, rank] {
        const ShardLayout s = ShardLayout::For(g.count(), rank, size);
        ThreadSequenceParallel sp(&group, rank, size);
        const at::Tensor local = full.narrow(1, s.begin, s.local_real_tokens());
        medians[rank] = LayerMedianAbs(local, s, &sp);
        detected[rank] = DetectMaChannels(local, s, 3.0, 4, &sp);
      });
    for (auto& t : threads) t.join();
    for (int rank = 0; rank < size; ++rank) {
      EXPECT_TRUE(at::equal(medians[rank], expected)) << "size " << size << " rank " << rank;
      EXPECT_TRUE(at::equal(detected[rank].index, expected_channels.index)) << "size " << size;
      EXPECT_TRUE(at::equal(detected[rank].ratio, expected_channels.ratio)) << "size " << size;
    }
  }
}

}  // namespace
}  // namespace stas::steering

// MA analysis: records (channels, class hierarchy, profiles), calibration, the HTML report, and the
// analysis under simulated sequence parallelism.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "steering/ma_analysis.h"
#include "steering/stas_hook.h"
#include "support/temp_dir.h"
#include "support/thread_sequence_parallel.h"

namespace stas::steering {
namespace {

using models::BlockContext;
using models::CfgBranch;
using models::TokenGrid;

constexpr int64_t kDim = 24;

TokenGrid Grid() {
  TokenGrid g;
  g.frames = 3;
  g.rows = 4;
  g.cols = 5;
  return g;
}

// Row 0 (uncond) carries its MA in channel 7, row 1 (cond) in channels 2 and 11: first frame 2000,
// boundary 500, interior 50, all divided by (1 + step).
at::Tensor Hidden(const TokenGrid& g, int step, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor h = at::normal(0.0, 1.0, {2, g.count(), kDim}, gen);
  StasOptions o;
  const MaskSpec spec = MaskSpec::Resolve(o, g);
  auto a = h.accessor<float, 3>();
  for (int64_t t = 0; t < g.count(); ++t) {
    const TokenClass c = ClassifyToken(t, g, spec);
    const float m = (c == TokenClass::kFirstFrame ? 2000.f : c == TokenClass::kBoundary ? 500.f : 50.f) / (1 + step);
    a[0][t][7] = m;
    a[1][t][2] = m * (t % 2 ? -1.f : 1.f);
    a[1][t][11] = 0.5f * m;
  }
  return h;
}

BlockContext Context(const TokenGrid& g, int step, int block) {
  BlockContext c;
  c.block = block;
  c.num_blocks = 2;
  c.step = step;
  c.num_steps = 3;
  c.grid = g;
  c.shard = WholeGridLayout(g);
  c.branches = {CfgBranch::kUncond, CfgBranch::kCond};
  return c;
}

void RunAll(models::ResidualHook& hook, const TokenGrid& g) {
  for (int step = 0; step < 3; ++step)
    for (int block = 0; block < 2; ++block) {
      at::Tensor h = Hidden(g, step, 100 * step + block);
      const at::Tensor before = h.clone();
      hook.AfterBlock(h, Context(g, step, block));
      EXPECT_TRUE(at::equal(h, before)) << "the analysis must only read";
    }
}

TEST(MaAnalysis, RecordsChannelsHierarchyAndProfiles) {
  const TokenGrid g = Grid();
  MaAnalysisHook hook(MaAnalysisOptions{});
  hook.BeginRun({{"prompt", "a cat"}, {"seed", 1}});
  RunAll(hook, g);
  const Json j = hook.ToJson("tiny");
  EXPECT_EQ(j["format"], kMaAnalysisFormat);
  EXPECT_EQ(j["num_blocks"], 2);
  EXPECT_EQ(j["num_steps"], 3);
  EXPECT_EQ(j["token_counts"]["first_frame"], 20);
  EXPECT_EQ(j["token_counts"]["boundary"], 20);  // top and bottom rows of frames 1 and 2
  EXPECT_EQ(j["token_counts"]["interior"], 20);
  ASSERT_EQ(j["records"].size(), 6u);
  double previous_first = 1e30;
  for (const Json& r : j["records"]) {
    std::set<int64_t> channels;
    for (const Json& c : r["channels"]) channels.insert(c["channel"].get<int64_t>());
    EXPECT_EQ(channels, (std::set<int64_t>{2, 11})) << r.dump();  // the cond row only
    const double ff = r["first_frame"], bd = r["boundary"], in = r["interior"];
    const int step = r["step"];
    EXPECT_NEAR(ff, 2000.0 / (1 + step), 1.0);
    EXPECT_NEAR(bd, 500.0 / (1 + step), 1.0);
    EXPECT_NEAR(in, 50.0 / (1 + step), 1.0);
    if (r["block"] == 0) {
      EXPECT_LT(ff, previous_first);  // strongest early
      previous_first = ff;
    }
  }
  // Default profile steps: first, middle, last; one value per token here (60 tokens < 2048 points).
  const Json& p = j["profiles"];
  EXPECT_EQ(p["bin_tokens"], 1);
  ASSERT_EQ(p["data"].size(), 3u);
  const Json& first = p["data"][0]["blocks"][0];
  ASSERT_EQ(first.size(), 60u);
  EXPECT_NEAR(first[0].get<double>(), 2000.0, 1.0);
  EXPECT_NEAR(first[20].get<double>(), 500.0, 1.0);   // frame 1, first row
  EXPECT_NEAR(first[27].get<double>(), 50.0, 1.0);    // frame 1, interior
}

TEST(MaAnalysis, ProfilesAreBinnedByMaximum) {
  const TokenGrid g = Grid();
  MaAnalysisOptions o;
  o.profile_points = 7;  // 60 tokens -> bins of 9
  o.profile_steps = {1};
  MaAnalysisHook hook(o);
  RunAll(hook, g);
  const Json j = hook.ToJson("tiny");
  EXPECT_EQ(j["profiles"]["bin_tokens"], 9);
  ASSERT_EQ(j["profiles"]["data"].size(), 1u);
  EXPECT_EQ(j["profiles"]["data"][0]["step"], 1);
  const Json& bins = j["profiles"]["data"][0]["blocks"][1];
  ASSERT_EQ(bins.size(), 7u);
  // Bin 2 = tokens 18..26: 18, 19 are frame 0, so its max is the first-frame magnitude.
  EXPECT_NEAR(bins[2].get<double>(), 1000.0, 1.0);
  // Bin 3 = tokens 27..35: frame 1 interior (27..34) and its last row starts at 35.
  EXPECT_NEAR(bins[3].get<double>(), 250.0, 1.0);
}

TEST(MaAnalysis, CalibrationFeedsTheHook) {
  const TokenGrid g = Grid();
  MaAnalysisHook hook(MaAnalysisOptions{});
  EXPECT_FALSE(hook.Calibrate("tiny", kDim).ok());  // nothing recorded
  RunAll(hook, g);
  auto set = hook.Calibrate("tiny", kDim);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->num_blocks, 2);
  EXPECT_EQ(set->hidden_dim, kDim);
  EXPECT_EQ(set->global.channels, (std::vector<int64_t>{2, 11}));  // ties on detections: higher ratio first
  EXPECT_EQ(set->ChannelsForBlock(1), (std::vector<int64_t>{2, 11}));
  EXPECT_GT(set->global.peak_median_ratios[0], set->global.peak_median_ratios[1]);
  testing::TempDir dir;
  ASSERT_TRUE(set->Save(dir.File("ma_channels.json")).ok());
  StasOptions o;
  o.enabled = true;
  o.channels_file = dir.File("ma_channels.json");
  auto stas = MakeStasHook(o, {"tiny", kDim, 2});
  ASSERT_TRUE(stas.ok()) << stas.status().ToString();
  EXPECT_FALSE(stas.value()->online());
}

TEST(MaAnalysis, ReportIsSelfContainedAndEmbedsTheAnalysis) {
  const TokenGrid g = Grid();
  MaAnalysisHook hook(MaAnalysisOptions{});
  hook.BeginRun({{"prompt", "evil </script><script>alert(1)</script> & <b>"}});
  RunAll(hook, g);
  const Json j = hook.ToJson("tiny");
  const std::string html = RenderMaReportHtml(j);
  EXPECT_EQ(html.rfind("<!doctype html>", 0), 0u);
  // Exactly the two script blocks of the page: the prompt cannot close the data block.
  size_t count = 0;
  for (size_t pos = html.find("</script>"); pos != std::string::npos; pos = html.find("</script>", pos + 1)) ++count;
  EXPECT_EQ(count, 2u);
  const std::string open = "<script id=\"analysis\" type=\"application/json\">";
  const size_t begin = html.find(open) + open.size();
  const size_t end = html.find("</script>", begin);
  auto embedded = ParseJson(html.substr(begin, end - begin), "embedded analysis");
  ASSERT_TRUE(embedded.ok()) << embedded.status().ToString();
  EXPECT_EQ(*embedded, j);
  // No external assets.
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("href="), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
}

TEST(MaAnalysis, ShardedAnalysisRecordsTheSame) {
  const TokenGrid g = Grid();
  MaAnalysisHook whole(MaAnalysisOptions{});
  RunAll(whole, g);
  const Json expected = whole.ToJson("tiny");
  const int size = 4;  // 60 tokens -> 15 per shard
  testing::ThreadGroup group(size);
  std::vector<Json> results(size);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size; ++rank)
    threads.emplace_back([&, rank] {
      testing::ThreadSequenceParallel sp(&group, rank, size);
      MaAnalysisHook hook(MaAnalysisOptions{});
      const models::ShardLayout s = models::ShardLayout::For(g.count(), rank, size);
      for (int step = 0; step < 3; ++step)
        for (int block = 0; block < 2; ++block) {
          at::Tensor h = Hidden(g, step, 100 * step + block).narrow(1, s.begin, s.local_tokens).clone();
          BlockContext c = Context(g, step, block);
          c.shard = s;
          c.parallel = &sp;
          hook.AfterBlock(h, c);
        }
      results[rank] = hook.ToJson("tiny");
    });
  for (auto& t : threads) t.join();
  // The median samples tokens by global index and is taken over the gathered samples, so every
  // record (channels, ratios, medians, magnitudes) is exactly the single-rank one.
  for (int rank = 0; rank < size; ++rank) EXPECT_EQ(results[rank], expected) << "rank " << rank;
}

}  // namespace
}  // namespace stas::steering

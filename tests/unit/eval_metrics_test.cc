// eval/: temporal metrics on synthetic videos with known answers, the MP4 reader, paired statistics
// and bad inputs.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "eval/mp4_reader.h"
#include "eval/paired_stats.h"
#include "eval/video_metrics.h"
#include "storage/mp4_writer.h"
#include "support/optional_dependency.h"
#include "support/temp_dir.h"

namespace stas::eval {
namespace {

// A smooth random picture [H, W, 3] in [0.1, 0.9] (smooth so H.264 keeps it nearly intact).
at::Tensor Picture(int64_t seed, int64_t h = 48, int64_t w = 64) {
  at::manual_seed(seed);
  at::Tensor coarse = at::rand({1, 3, h / 8, w / 8});
  at::Tensor fine = at::upsample_bilinear2d(coarse, {h, w}, false);
  return fine.squeeze(0).permute({1, 2, 0}).mul(0.8).add(0.1).contiguous();
}

at::Tensor Repeat(const at::Tensor& picture, int64_t frames) { return picture.unsqueeze(0).repeat({frames, 1, 1, 1}); }

// Frames [0, cut) show one picture, [cut, T) another.
at::Tensor CutVideo(int64_t frames, int64_t cut) {
  return at::cat({Repeat(Picture(1), cut), Repeat(Picture(2), frames - cut)}, 0);
}

TEST(EvalChunks, FrameZeroIsAloneThenGroupsOfTheCompression) {
  const int64_t expected[] = {0, 1, 1, 1, 1, 2, 2, 2, 2, 3};
  for (int64_t t = 0; t < 10; ++t) EXPECT_EQ(ChunkOfFrame(t, 4), expected[t]) << t;
  EXPECT_EQ(ChunkOfFrame(8, 8), 1);
  EXPECT_EQ(ChunkOfFrame(9, 8), 2);
  EXPECT_EQ(ChunkOfFrame(3, 1), 3);
}

TEST(EvalMetrics, AStaticVideoIsPerfectlyConsistent) {
  auto m = EvaluateFrames(Repeat(Picture(7), 17), MetricOptions{});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(m->pairs.size(), 16u);
  for (const PairMetrics& p : m->pairs) {
    EXPECT_NEAR(p.ssim, 1.0, 1e-9);
    EXPECT_EQ(p.psnr, kPsnrCap);
    EXPECT_EQ(p.flicker, 0.0);
  }
  // 17 frames: chunks {0} {1-4} {5-8} {9-12} {13-16}: 4 cross-chunk pairs, 12 within.
  EXPECT_EQ(m->cross_chunk.pairs, 4);
  EXPECT_EQ(m->within_chunk.pairs, 12);
  EXPECT_NEAR(m->all.ssim, 1.0, 1e-9);
  const Json j = m->ToJson();
  EXPECT_EQ(j["summary"]["cross_chunk"]["pairs"], 4);
  EXPECT_EQ(j["pairs"][0]["class"], "cross");
  EXPECT_EQ(j["pairs"][1]["class"], "within");
}

TEST(EvalMetrics, KnownPsnrOfAConstantShift) {
  const at::Tensor a = Picture(3).unsqueeze(0);
  const at::Tensor b = a + 0.1;  // every value 25.5 of 255 apart: PSNR = 20 log10(255 / 25.5) = 20 dB
  EXPECT_NEAR(PsnrPairs(a, b)[0], 20.0, 1e-4);
  EXPECT_LT(SsimPairs(a, b)[0], 1.0);
  EXPECT_NEAR(SsimPairs(a, a)[0], 1.0, 1e-9);
}

// SSIM by its definition, one window at a time (Wang et al. 2004, eq. 13 with Gaussian weights), against
// the separable-filter implementation.
TEST(EvalMetrics, SsimMatchesTheDefinitionWindowByWindow) {
  at::manual_seed(11);
  const int64_t h = 14, w = 17, k = 11;
  const at::Tensor grey_a = at::rand({h, w}, at::kDouble), grey_b = (grey_a * 0.7 + at::rand({h, w}, at::kDouble) * 0.3);
  // Grey frames: R = G = B, so luma is the value itself (x 255).
  const at::Tensor a = grey_a.unsqueeze(-1).expand({h, w, 3}).unsqueeze(0).to(at::kFloat);
  const at::Tensor b = grey_b.unsqueeze(-1).expand({h, w, 3}).unsqueeze(0).to(at::kFloat);
  const at::Tensor x = Luma(a)[0].to(at::kDouble), y = Luma(b)[0].to(at::kDouble);
  std::vector<double> g(k);
  double gsum = 0;
  for (int64_t i = 0; i < k; ++i) gsum += g[i] = std::exp(-std::pow(i - 5.0, 2) / (2 * 1.5 * 1.5));
  const double c1 = std::pow(0.01 * 255, 2), c2 = std::pow(0.03 * 255, 2);
  double total = 0;
  int64_t windows = 0;
  auto X = x.accessor<double, 2>(), Y = y.accessor<double, 2>();
  for (int64_t r = 0; r + k <= h; ++r)
    for (int64_t c = 0; c + k <= w; ++c) {
      double mx = 0, my = 0, sxx = 0, syy = 0, sxy = 0;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j) {
          const double wt = g[i] * g[j] / (gsum * gsum);
          mx += wt * X[r + i][c + j];
          my += wt * Y[r + i][c + j];
        }
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j) {
          const double wt = g[i] * g[j] / (gsum * gsum), dx = X[r + i][c + j] - mx, dy = Y[r + i][c + j] - my;
          sxx += wt * dx * dx;
          syy += wt * dy * dy;
          sxy += wt * dx * dy;
        }
      total += ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2));
      ++windows;
    }
  EXPECT_EQ(windows, 4 * 7);
  EXPECT_NEAR(SsimPairs(a, b)[0], total / windows, 1e-6);
}

TEST(EvalMetrics, ACutShowsExactlyAtItsPairAndInTheRightChunkClass) {
  // Cut before frame 9 (pair 8-9 crosses from latent chunk 2 to 3), then before frame 7 (6-7 is within chunk 2).
  for (const auto& [cut, cross] : {std::pair<int64_t, bool>{9, true}, {7, false}}) {
    auto m = EvaluateFrames(CutVideo(17, cut), MetricOptions{});
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    for (const PairMetrics& p : m->pairs) {
      if (p.first == cut - 1) {
        EXPECT_LT(p.ssim, 0.6) << "cut " << cut;
        EXPECT_LT(p.psnr, 30.0);
        EXPECT_EQ(p.cross_chunk, cross);
      } else {
        EXPECT_NEAR(p.ssim, 1.0, 1e-9) << "pair " << p.first << " of cut " << cut;
      }
    }
    const MetricSummary& hit = cross ? m->cross_chunk : m->within_chunk;
    const MetricSummary& clean = cross ? m->within_chunk : m->cross_chunk;
    EXPECT_LT(hit.ssim, 1.0 - 1e-3);
    EXPECT_NEAR(clean.ssim, 1.0, 1e-9);
  }
}

TEST(EvalMetrics, FlickerEveryFourthFrameLandsOnTheCrossChunkPairs) {
  // Each latent chunk has its own brightness (+0 / +0.1 alternating): the mean luma jumps by 25.5
  // exactly where a chunk ends, every 4th pair, and nowhere inside a chunk.
  std::vector<at::Tensor> frames;
  const at::Tensor base = Picture(5) * 0.8;
  for (int64_t t = 0; t < 17; ++t) frames.push_back(base + (ChunkOfFrame(t, 4) % 2 ? 0.1 : 0.0));
  auto m = EvaluateFrames(at::stack(frames), MetricOptions{});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  for (const PairMetrics& p : m->pairs) {
    if (p.cross_chunk) EXPECT_NEAR(p.flicker, 25.5, 1e-3) << p.first;
    else EXPECT_NEAR(p.flicker, 0.0, 1e-6) << p.first;
    EXPECT_EQ(p.cross_chunk, p.first % 4 == 0) << p.first;
  }
  EXPECT_NEAR(m->cross_chunk.flicker, 25.5, 1e-3);
  EXPECT_NEAR(m->within_chunk.flicker, 0.0, 1e-6);
  // With chunks of 8 frames the same video's jumps are partly inside chunks.
  MetricOptions eight;
  eight.temporal_compression = 8;
  auto m8 = EvaluateFrames(at::stack(frames), eight);
  ASSERT_TRUE(m8.ok());
  EXPECT_GT(m8->within_chunk.flicker, 0.0);
}

TEST(EvalMp4, RoundTripThroughTheStorageWriterKeepsTheCut) {
  STAS_NEEDS_FFMPEG(storage::HaveFfmpeg(), "built without FFmpeg");
  testing::TempDir dir;
  const std::string path = dir.File("cut.mp4");
  ASSERT_TRUE(storage::WriteMp4(path, CutVideo(17, 9), storage::Mp4Options{}).ok());
  auto video = ReadVideo(path);
  ASSERT_TRUE(video.ok()) << video.status().ToString();
  EXPECT_EQ(video->num_frames(), 17);
  EXPECT_EQ(video->height(), 48);
  EXPECT_EQ(video->width(), 64);
  EXPECT_NEAR(video->fps, 16.0, 1e-6);
  EXPECT_EQ(video->frames.scalar_type(), at::kFloat);
  // Decoded pixels are close to what was written (lossy codec, chroma subsampling).
  EXPECT_LT((video->frames - CutVideo(17, 9)).abs().mean().item<double>(), 0.03);
  auto m = EvaluateVideoFile(path, MetricOptions{});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  int64_t worst = 0;
  for (const PairMetrics& p : m->pairs)
    if (p.ssim < m->pairs[worst].ssim) worst = p.first;
  EXPECT_EQ(worst, 8);
  EXPECT_TRUE(m->pairs[8].cross_chunk);
  for (const PairMetrics& p : m->pairs)
    if (p.first != 8) EXPECT_GT(p.ssim, 0.95) << p.first;
  EXPECT_LT(m->pairs[8].ssim, 0.6);

  auto first3 = ReadVideo(path, ReadOptions{3});
  ASSERT_TRUE(first3.ok());
  EXPECT_EQ(first3->num_frames(), 3);
}

TEST(EvalMp4, AStaticMp4StaysNearlyStatic) {
  STAS_NEEDS_FFMPEG(storage::HaveFfmpeg(), "built without FFmpeg");
  testing::TempDir dir;
  ASSERT_TRUE(storage::WriteMp4(dir.File("s.mp4"), Repeat(Picture(9), 9), storage::Mp4Options{}).ok());
  auto m = EvaluateVideoFile(dir.File("s.mp4"), MetricOptions{});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_GT(m->all.ssim, 0.99);
  EXPECT_LT(m->all.flicker, 0.5);
}

TEST(EvalBadInput, MissingFileNotAVideoAndMismatchedSizesAreClearErrors) {
  testing::TempDir dir;
  auto missing = ReadVideo(dir.File("nope.mp4"));
  ASSERT_FALSE(missing.ok());
  if (CanReadVideo()) {
    EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
    EXPECT_NE(missing.status().message().find("no such file"), std::string::npos);
    auto text = ReadVideo(dir.Write("notes.mp4", "this is not a video\n"));
    ASSERT_FALSE(text.ok());
    EXPECT_EQ(text.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(text.status().message().find("not a video"), std::string::npos) << text.status().message();
    auto folder = ReadVideo(dir.path());
    EXPECT_EQ(folder.status().code(), StatusCode::kInvalidArgument);
  } else {
    EXPECT_EQ(missing.status().code(), StatusCode::kNotImplemented);
    EXPECT_NE(missing.status().message().find("built without FFmpeg"), std::string::npos);
  }

  auto one = EvaluateFrames(Repeat(Picture(1), 1), MetricOptions{}, {}, "one.mp4");
  ASSERT_FALSE(one.ok());
  EXPECT_NE(one.status().message().find("at least 2 frames"), std::string::npos);
  auto shape = EvaluateFrames(at::zeros({4, 8, 8}), MetricOptions{});
  EXPECT_EQ(shape.status().code(), StatusCode::kInvalidArgument);
  auto bytes = EvaluateFrames(at::zeros({4, 8, 8, 3}, at::kByte), MetricOptions{});
  EXPECT_EQ(bytes.status().code(), StatusCode::kInvalidArgument);
  MetricOptions zero;
  zero.temporal_compression = 0;
  EXPECT_FALSE(EvaluateFrames(Repeat(Picture(1), 3), zero).ok());

  auto mismatch = CompareVideos(Repeat(Picture(1), 5), Repeat(Picture(1, 32, 32), 5));
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("different sizes"), std::string::npos);
  auto frames = CompareVideos(Repeat(Picture(1), 5), Repeat(Picture(1), 4));
  EXPECT_FALSE(frames.ok());
  auto same = CompareVideos(Repeat(Picture(1), 5), Repeat(Picture(1), 5));
  ASSERT_TRUE(same.ok());
  EXPECT_NEAR(same->ssim, 1.0, 1e-9);
}

TEST(EvalStats, PairedTIntervalMatchesTheTextbook) {
  EXPECT_NEAR(StudentT975(1), 12.706, 1e-3);
  EXPECT_NEAR(StudentT975(10), 2.228, 1e-3);
  EXPECT_NEAR(StudentT975(40), 2.021, 2e-3);
  EXPECT_NEAR(StudentT975(120), 1.980, 2e-3);
  EXPECT_NEAR(StudentT975(100000), 1.960, 1e-3);
  const PairedInterval r = PairedTInterval({1, 2, 3});
  EXPECT_EQ(r.n, 3);
  EXPECT_DOUBLE_EQ(r.mean, 2.0);
  EXPECT_DOUBLE_EQ(r.sd, 1.0);
  ASSERT_TRUE(r.has_ci);
  EXPECT_NEAR(r.low, 2.0 - 4.303 / std::sqrt(3.0), 1e-9);
  EXPECT_NEAR(r.high, 2.0 + 4.303 / std::sqrt(3.0), 1e-9);
  const PairedInterval single = PairedTInterval({0.5});
  EXPECT_EQ(single.n, 1);
  EXPECT_FALSE(single.has_ci);
  EXPECT_DOUBLE_EQ(single.mean, 0.5);
}

}  // namespace
}  // namespace stas::eval

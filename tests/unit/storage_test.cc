// storage/: MP4 encoding (checked with ffprobe), manifests, the output layout and its commit race,
// latent checkpoints, and that no temporary file is ever left behind.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "common/json.h"
#include "storage/latent_checkpoint.h"
#include "storage/manifest.h"
#include "storage/mp4_writer.h"
#include "storage/output_layout.h"
#include "support/optional_dependency.h"
#include "support/run_command.h"
#include "support/temp_dir.h"

namespace stas::storage {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> ListFolder(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// A moving gradient, so the encoder sees real motion and every frame differs.
at::Tensor TestFrames(int t, int h, int w) {
  auto ti = at::arange(t).view({t, 1, 1, 1}).to(at::kFloat);
  auto yi = at::arange(h).view({1, h, 1, 1}).to(at::kFloat);
  auto xi = at::arange(w).view({1, 1, w, 1}).to(at::kFloat);
  auto ci = at::arange(3).view({1, 1, 1, 3}).to(at::kFloat);
  return ((xi * 4 + yi * 2 + ti * 16 + ci * 64).remainder(256)).to(at::kByte);
}

struct ProbeResult {
  bool ok = false;
  std::string codec, pix_fmt, frame_rate;
  int width = 0, height = 0, frames = 0;
  std::string raw;
};

ProbeResult Probe(const std::string& file) {
  auto r = testing::RunCommand("ffprobe -v error -count_frames -select_streams v:0 -show_entries "
                               "stream=codec_name,width,height,r_frame_rate,nb_read_frames,pix_fmt -of json '" +
                               file + "'");
  ProbeResult p;
  p.raw = r.output;
  if (r.exit_code != 0) return p;
  auto j = ParseJson(r.output, "ffprobe output");
  if (!j.ok() || !j->contains("streams") || (*j)["streams"].empty()) return p;
  const Json& s = (*j)["streams"][0];
  p.codec = s.value("codec_name", "");
  p.pix_fmt = s.value("pix_fmt", "");
  p.frame_rate = s.value("r_frame_rate", "");
  p.width = s.value("width", 0);
  p.height = s.value("height", 0);
  p.frames = std::stoi(s.value("nb_read_frames", "0"));
  p.ok = true;
  return p;
}

Mp4Options Opts(int width, int height, int fps) {
  Mp4Options o;
  o.width = width;
  o.height = height;
  o.fps = fps;
  return o;
}

#define SKIP_WITHOUT_FFMPEG() STAS_NEEDS_FFMPEG(HaveFfmpeg(), "built without FFmpeg")

TEST(Mp4Writer, WritesAVideoFfprobeReadsWithTheRequestedFramesSizeAndFps) {
  SKIP_WITHOUT_FFMPEG();
  testing::TempDir dir;
  const std::string out = dir.File("clip.mp4");
  ASSERT_TRUE(WriteMp4(out, TestFrames(9, 48, 64), Opts(0, 0, 12)).ok());
  ProbeResult p = Probe(out);
  ASSERT_TRUE(p.ok) << p.raw;
  EXPECT_EQ(p.frames, 9);
  EXPECT_EQ(p.width, 64);
  EXPECT_EQ(p.height, 48);
  EXPECT_EQ(p.frame_rate, "12/1");
  EXPECT_EQ(p.pix_fmt, "yuv420p");
  EXPECT_EQ(ListFolder(dir.path()), std::vector<std::string>{"clip.mp4"});
}

// Several encoder threads (the default: one per core) hold frames back in flight; Finish must drain
// them all.
TEST(Mp4Writer, ThreadedEncodingKeepsEveryFrame) {
  SKIP_WITHOUT_FFMPEG();
  testing::TempDir dir;
  const at::Tensor frames = TestFrames(40, 48, 64);
  for (int threads : {1, 4, 0}) {
    Mp4Options o = Opts(64, 48, 16);
    o.threads = threads;
    const std::string out = dir.File("t" + std::to_string(threads) + ".mp4");
    ASSERT_TRUE(WriteMp4(out, frames, o).ok()) << threads;
    ProbeResult p = Probe(out);
    ASSERT_TRUE(p.ok) << p.raw;
    EXPECT_EQ(p.frames, 40) << threads << " threads";
  }
}

TEST(Mp4Writer, EncodesIncrementallyWithTheRequestedCodec) {
  SKIP_WITHOUT_FFMPEG();
  testing::TempDir dir;
  Mp4Options o;
  o.width = 32;
  o.height = 16;
  o.fps = 8;
  o.codec = "mpeg4";
  auto w = Mp4Writer::Open(dir.File("m.mp4"), o);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ((*w)->codec_name(), "mpeg4");
  at::Tensor all = TestFrames(5, 16, 32);
  ASSERT_TRUE((*w)->WriteFrames(all.slice(0, 0, 2)).ok());
  ASSERT_TRUE((*w)->WriteFrames(all[2]).ok());  // a single [H, W, 3] frame
  ASSERT_TRUE((*w)->WriteFrames(all.slice(0, 3, 5).to(at::kFloat).div(255.0)).ok());
  EXPECT_EQ((*w)->frames_written(), 5);
  EXPECT_FALSE(fs::exists(dir.File("m.mp4")));  // nothing visible before Finish
  ASSERT_TRUE((*w)->Finish().ok());
  ProbeResult p = Probe(dir.File("m.mp4"));
  ASSERT_TRUE(p.ok) << p.raw;
  EXPECT_EQ(p.codec, "mpeg4");
  EXPECT_EQ(p.frames, 5);
  EXPECT_EQ(p.frame_rate, "8/1");
}

TEST(Mp4Writer, DefaultCodecIsH264WhenLibx264IsPresent) {
  SKIP_WITHOUT_FFMPEG();
  testing::TempDir dir;
  auto w = Mp4Writer::Open(dir.File("a.mp4"), Opts(16, 16, 4));
  ASSERT_TRUE(w.ok());
  const bool has_x264 = testing::RunCommand("ffmpeg -hide_banner -encoders | grep -q libx264").exit_code == 0;
  EXPECT_EQ((*w)->codec_name(), has_x264 ? "libx264" : "mpeg4");
}

TEST(Mp4Writer, AbandonedOrFailedWritesLeaveNoFiles) {
  SKIP_WITHOUT_FFMPEG();
  testing::TempDir dir;
  {
    auto w = Mp4Writer::Open(dir.File("a.mp4"), Opts(32, 32, 8));
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->WriteFrames(TestFrames(3, 32, 32)).ok());
    EXPECT_TRUE(fs::exists((*w)->temp_path()));
  }  // destroyed without Finish
  {
    auto w = Mp4Writer::Open(dir.File("b.mp4"), Opts(32, 32, 8));
    ASSERT_TRUE(w.ok());
    Status st = (*w)->WriteFrames(TestFrames(1, 16, 32));  // wrong size
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_FALSE((*w)->Finish().ok());
  }
  {
    auto w = Mp4Writer::Open(dir.File("c.mp4"), Opts(32, 32, 8));
    ASSERT_TRUE(w.ok());
    EXPECT_EQ((*w)->Finish().code(), StatusCode::kInvalidArgument);  // no frames
  }
  {
    auto w = Mp4Writer::Open(dir.File("d.mp4"), Opts(32, 32, 8));
    ASSERT_TRUE(w.ok());
    EXPECT_FALSE((*w)->WriteFrames(at::zeros({1, 32, 32, 4}, at::kByte)).ok());  // not RGB
    EXPECT_FALSE((*w)->WriteFrames(at::zeros({1, 32, 32, 3}, at::kInt)).ok());   // not uint8/float
  }
  EXPECT_TRUE(ListFolder(dir.path()).empty());
}

TEST(Mp4Writer, RefusesBadOptionsAndMissingFoldersCreatingNothing) {
  testing::TempDir dir;
  auto missing = Mp4Writer::Open(dir.File("no/such/folder/x.mp4"), Opts(32, 32, 8));
  ASSERT_FALSE(missing.ok());
  if (HaveFfmpeg()) {
    EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
    EXPECT_NE(missing.status().message().find("does not exist"), std::string::npos);
  }
  EXPECT_EQ(Mp4Writer::Open(dir.File("x.mp4"), Opts(33, 32, 8)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Mp4Writer::Open(dir.File("x.mp4"), Opts(32, 32, 0)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Mp4Writer::Open(dir.path(), Opts(32, 32, 8)).status().code(), StatusCode::kInvalidArgument);
  Mp4Options negative_threads = Opts(32, 32, 8);
  negative_threads.threads = -1;
  EXPECT_EQ(Mp4Writer::Open(dir.File("x.mp4"), negative_threads).status().code(), StatusCode::kInvalidArgument);
  if (HaveFfmpeg()) {
    Mp4Options o = Opts(32, 32, 8);
    o.codec = "no-such-encoder";
    auto w = Mp4Writer::Open(dir.File("x.mp4"), o);
    EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(w.status().message().find("no-such-encoder"), std::string::npos);
  }
  EXPECT_TRUE(ListFolder(dir.path()).empty());
}

TEST(Mp4Writer, WithoutFfmpegOpenSaysSo) {
  if (HaveFfmpeg()) GTEST_SKIP() << "this build has FFmpeg";
  testing::TempDir dir;
  auto w = Mp4Writer::Open(dir.File("x.mp4"), Opts(32, 32, 8));
  EXPECT_EQ(w.status().code(), StatusCode::kNotImplemented);
  EXPECT_NE(w.status().message().find("built without FFmpeg"), std::string::npos);
}

TEST(Mp4Writer, FinishReplacesAnExistingFileWhole) {
  SKIP_WITHOUT_FFMPEG();
  testing::TempDir dir;
  const std::string out = dir.Write("v.mp4", "old bytes");
  ASSERT_TRUE(WriteMp4(out, TestFrames(5, 32, 32), Opts(0, 0, 10)).ok());
  EXPECT_EQ(Probe(out).frames, 5);
  EXPECT_EQ(ListFolder(dir.path()), std::vector<std::string>{"v.mp4"});
}

TEST(VideoConversion, MapsMinusOneToOneOntoBytesAndMovesChannelsLast) {
  // [3, T=2, H=1, W=2] with distinct values per channel, frame and pixel.
  at::Tensor v = at::tensor({-1.0f, -0.5f, 0.0f, 0.5f,    // c0: t0 (w0, w1), t1 (w0, w1)
                             1.0f, 2.0f, -3.0f, 0.25f,    // c1 (out-of-range values clamp)
                             0.1f, -0.1f, 0.9f, -0.9f})   // c2
                     .view({3, 2, 1, 2});
  at::Tensor f = VideoToRgbFrames(v);
  ASSERT_EQ(f.sizes(), (at::IntArrayRef{2, 1, 2, 3}));
  ASSERT_EQ(f.scalar_type(), at::kByte);
  auto expect = [](float x) { return static_cast<int>(std::nearbyint(std::clamp((x + 1.0f) * 0.5f, 0.0f, 1.0f) * 255.0f)); };
  const float src[3][2][2] = {{{-1.0f, -0.5f}, {0.0f, 0.5f}}, {{1.0f, 2.0f}, {-3.0f, 0.25f}}, {{0.1f, -0.1f}, {0.9f, -0.9f}}};
  for (int c = 0; c < 3; ++c)
    for (int t = 0; t < 2; ++t)
      for (int w = 0; w < 2; ++w) EXPECT_EQ(f[t][0][w][c].item<int>(), expect(src[c][t][w])) << c << t << w;
  EXPECT_EQ(f[0][0][0][0].item<int>(), 0);
  EXPECT_EQ(f[0][0][0][1].item<int>(), 255);
  // A batch of one is accepted; float frames in [0, 1] round to the nearest byte.
  EXPECT_TRUE(VideoToRgbFrames(v.unsqueeze(0)).equal(f));
  auto u8 = ToUint8Frames(at::full({1, 2, 2, 3}, 0.5f));
  ASSERT_TRUE(u8.ok());
  EXPECT_EQ((*u8)[0][0][0][0].item<int>(), 128);
}

Manifest SampleManifest() {
  Manifest m;
  m.job_id = "0123456789abcdef0123456789abcdef";
  m.prompt = "a red fox \"quoted\" \xC3\xA9";
  m.negative_prompt = "blurry";
  m.seed = 18446744073709551615ull;
  m.model = "tiny";
  m.model_family = "tiny";
  m.width = 96;
  m.height = 64;
  m.frames = 17;
  m.fps = 16;
  m.steps = 8;
  m.guidance = 5.0;
  m.shift = 3.0;
  m.stas = Json{{"enabled", true}, {"alpha", 1.5}};
  m.timings_s = {{"text_encode", 0.5}, {"denoise", 2.0}, {"decode", 0.25}, {"encode", 0.125}, {"total", 2.875}};
  m.codec = "libx264";
  m.device = "cpu";
  m.dtype = "float32";
  m.sequence_parallel = 2;
  m.cfg_parallel = true;
  m.resumed_from_step = 3;
  return m;
}

TEST(Manifest, RoundTripsEveryFieldThroughItsFile) {
  testing::TempDir dir;
  Manifest m = SampleManifest();
  FillEnvironment(m);
  EXPECT_FALSE(m.created_at.empty());
  EXPECT_EQ(m.versions.count("stas"), 1u);
  EXPECT_EQ(m.versions.count("libtorch"), 1u);
  EXPECT_EQ(m.versions.count("ffmpeg"), 1u);
  ASSERT_TRUE(WriteManifest(dir.File("m.json"), m).ok());
  EXPECT_EQ(ListFolder(dir.path()), std::vector<std::string>{"m.json"});
  auto back = ReadManifest(dir.File("m.json"));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->ToJson(), m.ToJson());
  EXPECT_EQ(back->seed, m.seed);
  EXPECT_EQ(back->prompt, m.prompt);
  EXPECT_EQ(back->timings_s.at("denoise"), 2.0);
  EXPECT_EQ(back->stas["alpha"], 1.5);
  EXPECT_TRUE(back->cfg_parallel);
  EXPECT_EQ(back->sequence_parallel, 2);
}

TEST(Manifest, RejectsDamagedOrFutureFiles) {
  Json j = SampleManifest().ToJson();
  j["format_version"] = kManifestFormatVersion + 1;
  EXPECT_EQ(Manifest::FromJson(j).status().code(), StatusCode::kInvalidArgument);
  j = SampleManifest().ToJson();
  j.erase("prompt");
  EXPECT_EQ(Manifest::FromJson(j).status().code(), StatusCode::kInvalidArgument);
  j = SampleManifest().ToJson();
  j["frames"] = "many";
  EXPECT_EQ(Manifest::FromJson(j).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(Manifest::FromJson(Json::array()).ok());
}

TEST(OutputLayout, PathsFollowDatasetAndNameOrJobId) {
  OutputLayout layout("/srv/out");
  auto single = layout.PathsFor("abc123", "", "");
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(single->folder, "/srv/out/single");
  EXPECT_EQ(single->video, "/srv/out/single/abc123.mp4");
  EXPECT_EQ(single->manifest, "/srv/out/single/abc123.json");
  auto named = layout.PathsFor("abc123", "foxes", "fox-01");
  ASSERT_TRUE(named.ok());
  EXPECT_EQ(named->video, "/srv/out/foxes/fox-01.mp4");
  EXPECT_EQ(named->manifest, "/srv/out/foxes/fox-01.json");
  for (const std::string& bad : std::vector<std::string>{"../up", "a/b", "a\\b", "..", ".hidden", "a\nb"}) {
    EXPECT_EQ(layout.PathsFor("abc123", bad, "").status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(layout.PathsFor("abc123", "", bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(layout.PathsFor("", "", "").ok());
  EXPECT_FALSE(OutputLayout("").PathsFor("abc", "", "").ok());
}

TEST(OutputLayout, ConcurrentCommitsOfOneJobLeaveExactlyOneOutputAndNoTemporaries) {
  testing::TempDir dir;
  OutputLayout layout(dir.path());
  for (int round = 0; round < 20; ++round) {
    auto paths = layout.PathsFor("job" + std::to_string(round), "race", "");
    ASSERT_TRUE(paths.ok());
    ASSERT_TRUE(OutputLayout::EnsureFolder(*paths).ok());
    constexpr int kRuns = 4;
    std::vector<std::string> temps;
    for (int r = 0; r < kRuns; ++r)
      temps.push_back(dir.Write("race/" + fs::path(TemporaryPathFor(paths->video)).filename().string(),
                                "video from run " + std::to_string(r)));
    std::vector<CommitOutcome> outcomes(kRuns);
    std::vector<std::string> errors(kRuns);
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int r = 0; r < kRuns; ++r) {
      threads.emplace_back([&, r] {
        ready.fetch_add(1);
        while (ready.load() < kRuns) std::this_thread::yield();
        Manifest m = SampleManifest();
        m.job_id = "job" + std::to_string(round);
        m.codec = "run " + std::to_string(r);
        auto res = CommitOutput(*paths, temps[r], m);
        if (res.ok()) outcomes[r] = *res;
        else errors[r] = res.status().ToString();
      });
    }
    for (auto& t : threads) t.join();
    int committed = 0, winner = -1;
    for (int r = 0; r < kRuns; ++r) {
      ASSERT_TRUE(errors[r].empty()) << errors[r];
      if (outcomes[r] == CommitOutcome::kCommitted) {
        ++committed;
        winner = r;
      }
    }
    ASSERT_EQ(committed, 1) << "round " << round;
    EXPECT_TRUE(IsCommitted(*paths));
    EXPECT_EQ(*ReadFile(paths->video), "video from run " + std::to_string(winner));
    auto manifest = ReadManifest(paths->manifest);
    ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
    EXPECT_EQ(manifest->codec, "run " + std::to_string(winner));  // the winner's manifest, not a loser's
    EXPECT_EQ(manifest->video_file, "job" + std::to_string(round) + ".mp4");
  }
  std::vector<std::string> names = ListFolder(dir.File("race"));
  EXPECT_EQ(names.size(), 40u);  // 20 videos + 20 manifests
  for (const auto& n : names) EXPECT_EQ(n.find(".tmp."), std::string::npos) << n;
}

TEST(OutputLayout, ALaterCommitRepairsAMissingManifestButNeverReplacesOne) {
  testing::TempDir dir;
  OutputLayout layout(dir.path());
  auto paths = layout.PathsFor("j1", "", "");
  ASSERT_TRUE(paths.ok());
  ASSERT_TRUE(OutputLayout::EnsureFolder(*paths).ok());
  dir.Write("single/j1.mp4", "first");  // a run that died between the video and manifest renames
  const std::string temp = dir.Write("single/.j1.mp4.tmp.1.2", "second");
  Manifest m = SampleManifest();
  m.codec = "second";
  auto r = CommitOutput(*paths, temp, m);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, CommitOutcome::kAlreadyCommitted);
  EXPECT_EQ(*ReadFile(paths->video), "first");
  ASSERT_TRUE(ReadManifest(paths->manifest).ok());
  const std::string temp2 = dir.Write("single/.j1.mp4.tmp.3.4", "third");
  m.codec = "third";
  ASSERT_TRUE(CommitOutput(*paths, temp2, m).ok());
  EXPECT_EQ(ReadManifest(paths->manifest)->codec, "second");
  EXPECT_EQ(ListFolder(dir.File("single")), (std::vector<std::string>{"j1.json", "j1.mp4"}));
}

TEST(OutputLayout, CommitIntoAMissingFolderFailsAndRemovesTheTemporary) {
  testing::TempDir dir;
  OutputLayout layout(dir.File("storage"));
  auto paths = layout.PathsFor("j1", "", "");
  ASSERT_TRUE(paths.ok());
  const std::string temp = dir.Write(".j1.mp4.tmp.1.2", "bytes");
  auto r = CommitOutput(*paths, temp, SampleManifest());
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(fs::exists(temp));
}

TEST(OutputLayout, SweepRemovesOnlyTemporaryFiles) {
  testing::TempDir dir;
  for (const std::string& keep : std::vector<std::string>{"a.mp4", "a.json", "x.tmp.y.mp4", "b.tmp.mp4"}) dir.Write(keep, "k");
  for (const std::string& drop : std::vector<std::string>{".a.mp4.tmp.12.34", "a.json.tmp.12.3456", ".j.safetensors.tmp.1.2"}) dir.Write(drop, "d");
  auto none = RemoveStaleTemporaryFiles(dir.path(), 3600);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0);  // all too young
  auto removed = RemoveStaleTemporaryFiles(dir.path(), 0);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 3);
  EXPECT_EQ(ListFolder(dir.path()), (std::vector<std::string>{"a.json", "a.mp4", "b.tmp.mp4", "x.tmp.y.mp4"}));
}

TEST(LatentCheckpointStore, SavesLoadsAndRemovesAJobsDenoisingState) {
  testing::TempDir dir;
  LatentCheckpointStore store(dir.path());
  LatentCheckpoint c;
  c.job_id = "feedbeef";
  c.step = 3;
  c.num_steps = 8;
  c.latents = at::randn({1, 16, 5, 8, 12});
  c.scheduler_state["model_outputs"] = at::randn({2, 1, 16, 5, 8, 12});
  c.scheduler_state["lower_order_nums"] = at::tensor({2}, at::kLong);
  EXPECT_EQ(store.Load("feedbeef").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(store.Save(c).ok());
  EXPECT_EQ(store.PathFor("feedbeef"), dir.File(".checkpoints/feedbeef.safetensors"));
  EXPECT_TRUE(store.Exists("feedbeef"));
  auto back = store.Load("feedbeef");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->step, 3);
  EXPECT_EQ(back->num_steps, 8);
  EXPECT_TRUE(back->latents.equal(c.latents));
  ASSERT_EQ(back->scheduler_state.size(), 2u);
  EXPECT_TRUE(back->scheduler_state.at("model_outputs").equal(c.scheduler_state.at("model_outputs")));
  EXPECT_TRUE(back->scheduler_state.at("lower_order_nums").equal(c.scheduler_state.at("lower_order_nums")));
  // A later save replaces the earlier one whole.
  c.step = 6;
  ASSERT_TRUE(store.Save(c).ok());
  EXPECT_EQ(store.Load("feedbeef")->step, 6);
  EXPECT_EQ(ListFolder(store.folder()), std::vector<std::string>{"feedbeef.safetensors"});
  ASSERT_TRUE(store.Remove("feedbeef").ok());
  EXPECT_FALSE(store.Exists("feedbeef"));
  EXPECT_TRUE(store.Remove("feedbeef").ok());  // idempotent
}

TEST(LatentCheckpointStore, RefusesAnotherJobsDamagedOrInvalidCheckpoints) {
  testing::TempDir dir;
  LatentCheckpointStore store(dir.path());
  LatentCheckpoint c;
  c.job_id = "job-a";
  c.step = 1;
  c.num_steps = 4;
  c.latents = at::zeros({1, 4, 1, 2, 2});
  ASSERT_TRUE(store.Save(c).ok());
  fs::copy_file(store.PathFor("job-a"), store.PathFor("job-b"));
  auto other = store.Load("job-b");
  EXPECT_EQ(other.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(other.status().message().find("belongs to job job-a"), std::string::npos) << other.status().ToString();
  fs::resize_file(store.PathFor("job-a"), 20);
  EXPECT_EQ(store.Load("job-a").status().code(), StatusCode::kInvalidArgument);
  c.step = 5;  // past num_steps
  EXPECT_EQ(store.Save(c).code(), StatusCode::kInvalidArgument);
  c.step = 1;
  c.job_id = "../escape";
  EXPECT_EQ(store.Save(c).code(), StatusCode::kInvalidArgument);
  c.job_id = "job-c";
  c.latents = at::Tensor();
  EXPECT_EQ(store.Save(c).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(store.Exists("job-c"));
}

}  // namespace
}  // namespace stas::storage

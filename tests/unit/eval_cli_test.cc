// `stas eval` and `stas render-suite` as a user runs them: tables, JSON, exit codes, VBench names.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>

#include "common/json.h"
#include "storage/mp4_writer.h"
#include "support/optional_dependency.h"
#include "support/run_command.h"
#include "support/temp_dir.h"

namespace stas {
namespace {

std::string Stas(const std::string& args) { return std::string(STAS_BINARY) + " " + args; }

// 9 frames, a cut before frame 5 (pair 4-5 crosses chunks 1 -> 2).
std::string WriteCutVideo(const testing::TempDir& dir, const std::string& name) {
  at::manual_seed(3);
  const at::Tensor a = at::upsample_bilinear2d(at::rand({1, 3, 6, 8}), {48, 64}, false).squeeze(0).permute({1, 2, 0});
  const at::Tensor b = at::upsample_bilinear2d(at::rand({1, 3, 6, 8}), {48, 64}, false).squeeze(0).permute({1, 2, 0});
  const at::Tensor frames = at::cat({a.unsqueeze(0).repeat({5, 1, 1, 1}), b.unsqueeze(0).repeat({4, 1, 1, 1})}, 0);
  const std::string path = dir.File(name);
  EXPECT_TRUE(storage::WriteMp4(path, frames, storage::Mp4Options{}).ok());
  return path;
}

TEST(EvalCommand, PrintsAPairTableAndAChunkSummary) {
  STAS_NEEDS_FFMPEG(storage::HaveFfmpeg(), "built without FFmpeg");
  testing::TempDir dir;
  const std::string video = WriteCutVideo(dir, "cut.mp4");
  auto r = testing::RunCommand(Stas("eval " + video));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("9 frames, 64x48"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("  4-5  "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("within-chunk (6 pairs)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cross-chunk  (2 pairs)"), std::string::npos) << r.output;
}

TEST(EvalCommand, JsonForVideosAndForADatasetFolder) {
  STAS_NEEDS_FFMPEG(storage::HaveFfmpeg(), "built without FFmpeg");
  testing::TempDir dir;
  WriteCutVideo(dir, "a.mp4");
  std::filesystem::create_directories(dir.File("set/sub"));
  std::filesystem::copy_file(dir.File("a.mp4"), dir.File("set/a.mp4"));
  std::filesystem::copy_file(dir.File("a.mp4"), dir.File("set/sub/b.mp4"));
  dir.Write("set/notes.txt", "not a video");
  // stdout alone is the JSON document (progress lines go to stderr).
  auto r = testing::RunCommand("(" + Stas("eval --json --dataset " + dir.File("set")) + " > " + dir.File("out.json") + ")");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto parsed = ReadJsonFile(dir.File("out.json"));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString() << "\n" << r.output;
  const Json& j = *parsed;
  ASSERT_EQ(j["videos"].size(), 2u);
  EXPECT_EQ(j["summary"]["videos"], 2);
  EXPECT_EQ(j["summary"]["cross_chunk"]["pairs"], 4);
  EXPECT_EQ(j["summary"]["within_chunk"]["pairs"], 12);
  const Json& pair = j["videos"][0]["pairs"][4];
  EXPECT_EQ(pair["pair"], Json::array({4, 5}));
  EXPECT_EQ(pair["class"], "cross");
  EXPECT_LT(pair["ssim"].get<double>(), 0.6);
  // Eight frames per latent frame: 4-5 is now inside chunk 1.
  auto r8 = testing::RunCommand(Stas("eval --json --temporal-compression 8 " + dir.File("a.mp4")));
  ASSERT_EQ(r8.exit_code, 0) << r8.output;
  EXPECT_EQ(Json::parse(r8.output)["videos"][0]["pairs"][4]["class"], "within");
}

TEST(EvalCommand, BadInputsExitTwoWithAClearMessage) {
  testing::TempDir dir;
  auto missing = testing::RunCommand(Stas("eval " + dir.File("missing.mp4")));
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.output.find("missing.mp4: no such file"), std::string::npos) << missing.output;
  auto none = testing::RunCommand(Stas("eval"));
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.output.find("give VIDEO... or --dataset DIR"), std::string::npos) << none.output;
  auto empty = testing::RunCommand(Stas("eval --dataset " + dir.path()));
  EXPECT_EQ(empty.exit_code, 2);
  EXPECT_NE(empty.output.find("no .mp4 files"), std::string::npos) << empty.output;
  if (!storage::HaveFfmpeg()) {  // the rest needs videos
    EXPECT_FALSE(testing::DependencyRequired("STAS_REQUIRE_FFMPEG")) << "built without FFmpeg";
    return;
  }
  auto text = testing::RunCommand(Stas("eval " + dir.Write("fake.mp4", "hello")));
  EXPECT_EQ(text.exit_code, 2);
  EXPECT_NE(text.output.find("fake.mp4 is not a video"), std::string::npos) << text.output;
  const std::string video = WriteCutVideo(dir, "v.mp4");
  auto dino = testing::RunCommand(Stas("eval --dino " + dir.File("dino.pt") + " " + video));
  EXPECT_EQ(dino.exit_code, 2);
  EXPECT_NE(dino.output.find("--dino"), std::string::npos) << dino.output;
  auto tc = testing::RunCommand(Stas("eval --temporal-compression 0 " + video));
  EXPECT_EQ(tc.exit_code, 2);
}

TEST(RenderSuiteCommand, NamesVideosAsVBenchExpects) {
  STAS_NEEDS_FFMPEG(storage::HaveFfmpeg(), "built without FFmpeg");
  testing::TempDir dir;
  const std::string prompts = dir.Write("suite.txt", "a red fox\n\na blue bird\n");
  const std::string out = dir.File("suite");
  auto r = testing::RunCommand(Stas("render-suite --prompts " + prompts + " --samples 2 --seed 10 --frames 5 --steps 1 "
                                    "--height 32 --width 32 --out " + out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* name : {"a red fox-0.mp4", "a red fox-1.mp4", "a blue bird-0.mp4", "a blue bird-1.mp4"})
    EXPECT_TRUE(std::filesystem::exists(out + "/" + name)) << name << "\n" << r.output;
  // Only the videos in the folder; manifests beside in manifests/, sample i with seed --seed + i.
  int mp4 = 0;
  for (const auto& e : std::filesystem::directory_iterator(out)) mp4 += e.path().extension() == ".mp4";
  EXPECT_EQ(mp4, 4);
  auto manifest = ReadJsonFile(out + "/manifests/a red fox-1.json");
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  EXPECT_EQ((*manifest)["seed"], 11);
  // A second run finds everything there and renders nothing.
  auto again = testing::RunCommand(Stas("render-suite --prompts " + prompts + " --samples 2 --seed 10 --frames 5 "
                                        "--steps 1 --height 32 --width 32 --out " + out));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("0 to render, 4 already there"), std::string::npos) << again.output;
  // A prompt that cannot be a file name is refused, naming its line.
  auto slash = testing::RunCommand(Stas("render-suite --prompts " + dir.Write("bad.txt", "ok\nup/down\n") + " --out " +
                                        dir.File("bad")));
  EXPECT_EQ(slash.exit_code, 2);
  EXPECT_NE(slash.output.find("bad.txt:2"), std::string::npos) << slash.output;
}

}  // namespace
}  // namespace stas

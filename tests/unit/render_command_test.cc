// `stas render` end to end on the built-in tiny model: the MP4 that ffprobe reads back, the manifest
// beside it, and bad inputs that exit 2 with a clear message and write nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "common/json.h"
#include "storage/manifest.h"
#include "storage/mp4_writer.h"
#include "support/optional_dependency.h"
#include "support/run_command.h"
#include "support/temp_dir.h"

namespace stas {
namespace {

namespace fs = std::filesystem;

std::string Stas() { return std::string(STAS_BINARY); }

std::vector<std::string> ListFolder(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

struct Probe {
  int frames = -1, width = -1, height = -1;
  std::string rate, codec, raw;
};

Probe ProbeVideo(const std::string& file) {
  auto r = testing::RunCommand("ffprobe -v error -count_frames -select_streams v:0 -show_entries "
                               "stream=codec_name,width,height,r_frame_rate,nb_read_frames -of json '" + file + "'");
  Probe p;
  p.raw = r.output;
  auto j = ParseJson(r.output, "ffprobe");
  if (r.exit_code != 0 || !j.ok() || (*j)["streams"].empty()) return p;
  const Json& s = (*j)["streams"][0];
  p.frames = std::stoi(s.value("nb_read_frames", "-1"));
  p.width = s.value("width", -1);
  p.height = s.value("height", -1);
  p.rate = s.value("r_frame_rate", "");
  p.codec = s.value("codec_name", "");
  return p;
}

#define SKIP_WITHOUT_FFMPEG() STAS_NEEDS_FFMPEG(storage::HaveFfmpeg(), "built without FFmpeg")

TEST(RenderCommand, TinyModelWritesTheRequestedVideoAndItsManifest) {
  SKIP_WITHOUT_FFMPEG();
  testing::TempDir dir;
  const std::string out = dir.File("fox.mp4");
  auto r = testing::RunCommand(Stas() + " render --model tiny --prompt 'a red fox' --frames 9 --steps 2 --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("timings:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step 2/2"), std::string::npos) << r.output;  // per-step lines when not a TTY
  Probe p = ProbeVideo(out);
  EXPECT_EQ(p.frames, 9) << p.raw;
  EXPECT_EQ(p.width, 96);   // the tiny model's default size
  EXPECT_EQ(p.height, 64);
  EXPECT_EQ(p.rate, "16/1");
  EXPECT_EQ(ListFolder(dir.path()), (std::vector<std::string>{"fox.json", "fox.mp4"}));

  auto m = storage::ReadManifest(dir.File("fox.json"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->prompt, "a red fox");
  EXPECT_EQ(m->model, "tiny");
  EXPECT_EQ(m->frames, 9);
  EXPECT_EQ(m->steps, 2);
  EXPECT_EQ(m->width, 96);
  EXPECT_EQ(m->height, 64);
  EXPECT_EQ(m->fps, 16);
  EXPECT_EQ(m->video_file, "fox.mp4");
  EXPECT_EQ(m->codec, p.codec == "h264" ? "libx264" : p.codec);
  EXPECT_EQ(m->job_id.size(), 32u);
  for (const char* stage : {"text_encode", "denoise", "decode", "encode", "total"})
    EXPECT_GT(m->timings_s.count(stage), 0u) << stage;
  EXPECT_GE(m->timings_s.at("total"), m->timings_s.at("denoise"));
  EXPECT_EQ(m->versions.count("libtorch"), 1u);
  EXPECT_FALSE(m->stas["enabled"].get<bool>());
}

TEST(RenderCommand, SizeFpsSeedAndStasFlagsReachTheVideoAndManifest) {
  SKIP_WITHOUT_FFMPEG();
  testing::TempDir dir;
  const std::string out = dir.File("s.mp4");
  auto r = testing::RunCommand(Stas() + " render --model tiny --prompt 'a fox' --height 32 --width 48 --frames 5 "
                                        "--steps 2 --fps 8 --seed 7 --guidance 3.5 --shift 2.0 --stas --stas-steps 1 "
                                        "--stas-alpha 2.0 --stas-blocks 0,2 --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Probe p = ProbeVideo(out);
  EXPECT_EQ(p.frames, 5) << p.raw;
  EXPECT_EQ(p.width, 48);
  EXPECT_EQ(p.height, 32);
  EXPECT_EQ(p.rate, "8/1");
  auto m = storage::ReadManifest(dir.File("s.json"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->seed, 7u);
  EXPECT_EQ(m->guidance, 3.5);
  EXPECT_EQ(m->shift, 2.0);
  EXPECT_TRUE(m->stas["enabled"].get<bool>());
  EXPECT_EQ(m->stas["alpha"].get<double>(), 2.0);
  EXPECT_EQ(m->stas["blocks"], Json::array({0, 2}));
  EXPECT_EQ(m->stas["steered_steps"].get<int>(), 1);
  // Steering ran: 2 selected blocks x 2 CFG forwards in the single steered step.
  EXPECT_EQ(m->stas["steered_calls"].get<int>(), 4);
}

TEST(RenderCommand, TheSameSeedRendersTheSameVideo) {
  SKIP_WITHOUT_FFMPEG();
  testing::TempDir dir;
  const std::string args = " render --model tiny --prompt 'same' --frames 5 --steps 2 --seed 3 --out ";
  ASSERT_EQ(testing::RunCommand(Stas() + args + dir.File("a.mp4")).exit_code, 0);
  ASSERT_EQ(testing::RunCommand(Stas() + args + dir.File("b.mp4")).exit_code, 0);
  auto decode = [](const std::string& f) {
    return testing::RunCommand("ffmpeg -v error -i '" + f + "' -f rawvideo -pix_fmt rgb24 - | md5sum").output;
  };
  EXPECT_EQ(decode(dir.File("a.mp4")), decode(dir.File("b.mp4")));
  auto other = testing::RunCommand(Stas() + " render --model tiny --prompt 'same' --frames 5 --steps 2 --seed 4 --out " +
                                   dir.File("c.mp4"));
  ASSERT_EQ(other.exit_code, 0) << other.output;
  EXPECT_NE(decode(dir.File("a.mp4")), decode(dir.File("c.mp4")));
}

struct BadInput {
  std::string name;
  std::string args;     // appended to `stas render`
  std::string message;  // expected in the output
};

TEST(RenderCommand, BadInputsExitTwoWithAClearMessageAndWriteNothing) {
  testing::TempDir dir;
  testing::TempDir models;
  models.Write("not-a-model/readme.txt", "x");
  const std::string ok = " --model tiny --prompt 'a red fox' --frames 9 --steps 2";
  const std::string out = " --out " + dir.File("x.mp4");
  const std::vector<BadInput> cases = {
      {"frames 10", ok + " --frames 10" + out, "frames must be 4k+1"},
      {"height 50", ok + " --height 50" + out, "height must be a multiple of 16"},
      {"steps 0", ok + " --steps 0" + out, "steps must be in [1, 1000]"},
      {"long prompt", " --model tiny --prompt '" + std::string(8 * 1024 + 1, 'a') + "'" + out, "the limit is 8 KiB"},
      {"empty prompt", " --model tiny" + out, "prompt must not be empty"},
      {"missing model folder", " --model " + models.File("nowhere") + " --prompt fox" + out,
       "checkpoint folder not found"},
      {"not a model folder", " --model " + models.File("not-a-model") + " --prompt fox" + out, "no model_index.json"},
      {"out into a missing folder", ok + " --out " + dir.File("missing/x.mp4"), "does not exist"},
      {"out not an mp4", ok + " --out " + dir.File("x.avi"), "must name an .mp4 file"},
      {"no out", ok, "--out FILE.mp4 is required"},
      {"stas block beyond the model", ok + " --stas --stas-blocks 0,99" + out, "99"},
      {"bad stas block list", ok + " --stas --stas-blocks 0,x" + out, "--stas-blocks: 'x' is not a block index"},
  };
  for (const auto& c : cases) {
    auto r = testing::RunCommand(Stas() + " render" + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.name << ": " << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.name << ": " << r.output;
    EXPECT_NE(r.output.find("stas render: "), std::string::npos) << c.name << ": " << r.output;
    EXPECT_TRUE(ListFolder(dir.path()).empty()) << c.name << " left files behind";
  }
}

TEST(RenderCommand, StasSettingsNeedStasAndArgumentSyntaxErrorsFail) {
  testing::TempDir dir;
  const std::string base = Stas() + " render --model tiny --prompt fox --out " + dir.File("x.mp4");
  auto needs = testing::RunCommand(base + " --stas-alpha 2");
  EXPECT_NE(needs.exit_code, 0);
  EXPECT_NE(needs.output.find("--stas"), std::string::npos) << needs.output;
  auto syntax = testing::RunCommand(base + " --frames many");
  EXPECT_NE(syntax.exit_code, 0);
  auto both = testing::RunCommand(base + " --stas --stas-steps 3 --stas-fraction 0.5");
  EXPECT_NE(both.exit_code, 0);
  EXPECT_TRUE(ListFolder(dir.path()).empty());
}

// Decoded RGB bytes of every frame (ffmpeg), for comparing two encodes of nearly equal frames.
std::string DecodeRgb(const std::string& file) {
  return testing::RunCommand("ffmpeg -v error -i '" + file + "' -f rawvideo -pix_fmt rgb24 -").output;
}

double MeanAbsDifference(const std::string& a, const std::string& b) {
  if (a.size() != b.size() || a.empty()) return 1e9;
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i)
    sum += std::abs(static_cast<int>(static_cast<unsigned char>(a[i])) - static_cast<int>(static_cast<unsigned char>(b[i])));
  return sum / static_cast<double>(a.size());
}

std::string Mpirun(int ranks) {
  return std::string(MPIEXEC) + " --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " -x OMP_NUM_THREADS=1 ";
}

TEST(RenderCommand, AGroupOfRanksUnderMpirunRendersTheSameVideoAsOneProcess) {
  SKIP_WITHOUT_FFMPEG();
  testing::TempDir dir;
  const std::string args = " render --model tiny --prompt 'a red fox' --frames 9 --steps 2 --seed 5 --stas --out ";
  auto one = testing::RunCommand(Stas() + args + dir.File("one.mp4"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto sp = testing::RunCommand(Mpirun(2) + Stas() + args + dir.File("sp2.mp4") + " --sp 2");
  ASSERT_EQ(sp.exit_code, 0) << sp.output;
  auto cfg = testing::RunCommand(Mpirun(2) + Stas() + args + dir.File("cfg2.mp4") + " --cfg-parallel");
  ASSERT_EQ(cfg.exit_code, 0) << cfg.output;
  // One writer per group: the two-rank runs leave exactly one video and one manifest each.
  EXPECT_EQ(ListFolder(dir.path()),
            (std::vector<std::string>{"cfg2.json", "cfg2.mp4", "one.json", "one.mp4", "sp2.json", "sp2.mp4"}));
  const std::string reference = DecodeRgb(dir.File("one.mp4"));
  ASSERT_EQ(reference.size(), 9u * 64 * 96 * 3);
  // Sharded attention and the split CFG branches change float rounding only: the decoded videos
  // agree to well under one grey level on average.
  EXPECT_LT(MeanAbsDifference(reference, DecodeRgb(dir.File("sp2.mp4"))), 0.5);
  EXPECT_LT(MeanAbsDifference(reference, DecodeRgb(dir.File("cfg2.mp4"))), 0.5);
  auto m = storage::ReadManifest(dir.File("sp2.json"));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->sequence_parallel, 2);
  EXPECT_FALSE(m->cfg_parallel);
  auto mc = storage::ReadManifest(dir.File("cfg2.json"));
  ASSERT_TRUE(mc.ok());
  EXPECT_EQ(mc->sequence_parallel, 1);
  EXPECT_TRUE(mc->cfg_parallel);
}

TEST(RenderCommand, ASequenceParallelGroupSharesTheDecodeInExactBands) {
  SKIP_WITHOUT_FFMPEG();
  testing::TempDir dir;
  // 256 pixels wide = 32 latent columns: each rank decodes 16 of them plus a 9-column halo, so the
  // seam between the two bands is a real one.
  const std::string args = " render --model tiny --prompt 'a red fox' --height 64 --width 256 --frames 5 --steps 2 --seed 3 --out ";
  auto one = testing::RunCommand(Stas() + args + dir.File("one.mp4"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto sp = testing::RunCommand(Mpirun(2) + Stas() + args + dir.File("sp2.mp4") + " --sp 2");
  ASSERT_EQ(sp.exit_code, 0) << sp.output;
  auto m1 = storage::ReadManifest(dir.File("one.json"));
  auto m2 = storage::ReadManifest(dir.File("sp2.json"));
  ASSERT_TRUE(m1.ok() && m2.ok());
  EXPECT_EQ(m1->decode_ranks, 1);
  EXPECT_EQ(m2->decode_ranks, 2);
  const std::string reference = DecodeRgb(dir.File("one.mp4"));
  ASSERT_EQ(reference.size(), 5u * 64 * 256 * 3);
  EXPECT_LT(MeanAbsDifference(reference, DecodeRgb(dir.File("sp2.mp4"))), 0.5);
}

TEST(RenderCommand, ARankCountThatIsNotOneGroupIsRefused) {
  testing::TempDir dir;
  auto r = testing::RunCommand(Mpirun(2) + Stas() + " render --model tiny --prompt fox --frames 5 --steps 1 --out " +
                               dir.File("x.mp4"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("mpirun -np 1"), std::string::npos) << r.output;
  auto heads = testing::RunCommand(Mpirun(3) + Stas() + " render --model tiny --prompt fox --frames 5 --steps 1 --sp 3 --out " +
                                   dir.File("x.mp4"));
  EXPECT_NE(heads.exit_code, 0) << heads.output;
  EXPECT_NE(heads.output.find("heads"), std::string::npos) << heads.output;
  EXPECT_TRUE(ListFolder(dir.path()).empty());
}

TEST(RenderCommand, HelpListsTheRenderFlags) {
  auto r = testing::RunCommand(Stas() + " render --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag : {"--model", "--prompt", "--negative-prompt", "--height", "--width", "--frames", "--steps",
                           "--guidance", "--shift", "--seed", "--fps", "--stas", "--stas-alpha", "--stas-lambda",
                           "--stas-steps", "--stas-fraction", "--stas-blocks", "--stas-boundary-width",
                           "--stas-boundary-mode", "--stas-branches", "--stas-channels", "--sp", "--cfg-parallel",
                           "--out"})
    EXPECT_NE(r.output.find(flag), std::string::npos) << flag;
}

}  // namespace
}  // namespace stas

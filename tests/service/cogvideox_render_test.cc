// CogVideoX end to end on a tiny config (label: service): a diffusers-format checkpoint folder assembled
// from the cogvideox_pipeline_tiny reference fixture (transformer, VAE, DDIM config) and the t5_tiny
// encoder, rendered by `stas render` (1 rank, and 2 ranks with sequence parallelism and STAS), analysed by
// `stas analyze`, and rendered through the service by a 2-rank sequence-parallel worker group. Checks the
// family's defaults (8 fps) and size rules (multiples of 16, 8k+1 frames) on the way.
#include <gtest/gtest.h>

#include <filesystem>

#include "service_stack.h"
#include "support/tiny_checkpoints.h"

namespace stas::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class CogVideoXRender : public ::testing::Test {
 protected:
  void SetUp() override {
    checkpoint_ = dir_.File("CogVideoX-tiny");
    const std::string error = WriteTinyCogVideoXCheckpoint(checkpoint_);
    ASSERT_TRUE(error.empty()) << error;
  }
  std::string Render(const std::string& args, const std::string& launcher = "") {
    return launcher + std::string(STAS_BINARY) + " render --model " + ShellQuote(checkpoint_) + " " + args + " 2>&1";
  }
  static std::string Mpirun(int np) {
    std::string m = std::string(MPIEXEC) + " --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 ";
    if (::geteuid() == 0) m += "--allow-run-as-root ";
    return m + "-np " + std::to_string(np) + " ";
  }
  TempDir dir_;
  std::string checkpoint_;
};

TEST_F(CogVideoXRender, StasRenderWritesAn8FpsVideoOfTheRequestedSize) {
  const std::string out = dir_.File("fox.mp4");
  auto r = RunCommand(Render("--prompt 'a red fox' --height 32 --width 48 --frames 9 --steps 2 --out " + out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const VideoInfo info = Probe(out);
  EXPECT_EQ(info.width, 48) << info.raw;
  EXPECT_EQ(info.height, 32) << info.raw;
  EXPECT_EQ(info.frames, 9) << info.raw;
  EXPECT_EQ(info.rate, "8/1") << "CogVideoX renders at 8 fps by default: " << info.raw;
  auto manifest = ReadJsonFile(dir_.File("fox.json"));
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  EXPECT_EQ((*manifest)["model_family"], "cogvideox") << manifest->dump();

  for (const char* bad_size : {"--height 40 --width 48 --frames 9", "--height 32 --width 48 --frames 13"}) {
    auto bad = RunCommand(Render("--prompt fox " + std::string(bad_size) + " --steps 2 --out " + dir_.File("bad.mp4")));
    EXPECT_EQ(bad.exit_code, 2) << bad_size << ": " << bad.output;
    EXPECT_TRUE(bad.output.find("multiple of 16") != std::string::npos || bad.output.find("8k+1") != std::string::npos)
        << bad.output;
    EXPECT_FALSE(fs::exists(dir_.File("bad.mp4")));
  }
}

TEST_F(CogVideoXRender, SequenceParallelStasRenderAndAnalysis) {
  // STAS with online detection at a low threshold (random weights have no real massive activations).
  const std::string stas = " --stas --stas-steps 2 --stas-tau 1.5 --prompt 'a lighthouse' --height 32 --width 48 "
                           "--frames 9 --steps 3 --seed 5";
  auto one = RunCommand(Render("--out " + dir_.File("one.mp4") + stas));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto two = RunCommand(Render("--sp 2 --out " + dir_.File("two.mp4") + stas, Mpirun(2)));
  ASSERT_EQ(two.exit_code, 0) << two.output;
  auto m1 = ReadJsonFile(dir_.File("one.json"));
  auto m2 = ReadJsonFile(dir_.File("two.json"));
  ASSERT_TRUE(m1.ok() && m2.ok());
  EXPECT_EQ((*m2)["parallel"]["sequence_parallel"], 2) << m2->dump();
  const int calls = (*m1)["stas"].value("steered_calls", -1);
  EXPECT_EQ(calls, 2 * 2 * 2) << "2 steered steps x 2 blocks x 2 CFG forwards: " << m1->dump();
  EXPECT_EQ((*m2)["stas"].value("steered_calls", -1), calls) << m2->dump();
  EXPECT_EQ(Probe(dir_.File("two.mp4")).frames, 9);

  const std::string analysis = dir_.File("analysis");
  auto a = RunCommand(std::string(STAS_BINARY) + " analyze --model " + ShellQuote(checkpoint_) +
                      " --prompt 'a lighthouse' --height 32 --width 48 --frames 9 --steps 2 --tau 1.5 --out " +
                      analysis + " 2>&1");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  auto result = ReadJsonFile(analysis + "/analysis.json");
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ((*result)["records"].size(), 2u * 2u) << "one record per step and block";
  EXPECT_TRUE(fs::exists(analysis + "/ma_channels.json"));
}

TEST_F(CogVideoXRender, TheServiceRendersACogVideoXJobOnASequenceParallelGroup) {
  ServiceStack stack;
  ASSERT_TRUE(stack.StartRedis()) << stack.Logs();
  ASSERT_TRUE(stack.StartCoordinator()) << stack.Logs();
  stack.StartWorkers("cog", 2, {"--sp", "2"}, checkpoint_);
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.ConnectedWorkers() >= 1; }, 120s)) << stack.Logs();
  auto ids = stack.Submit("--model " + ShellQuote(checkpoint_) +
                          " --prompt 'a boat at sea' --height 32 --width 32 --frames 9 --steps 2");
  ASSERT_EQ(ids.size(), 1u) << stack.Logs();
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.State(ids[0]) == "done"; }, 180s))
      << stack.Job(ids[0]).dump() << stack.Logs();
  EXPECT_EQ(stack.CountVideos(ids[0]), 1);
}

}  // namespace
}  // namespace stas::testing

// Wan2.2 end to end on a tiny config (label: service): a diffusers-format checkpoint folder assembled
// from the wan22_pipeline_tiny reference fixture (its Wan2.2-style transformer, 48-channel-style
// residual VAE with patch size 2 and 16x spatial compression, scheduler config) plus the built-in tiny
// text encoder and tokenizer, rendered by `stas render` and through the service (redis-server,
// coordinator, an MPI worker group serving that folder). Checks the family's defaults (24 fps) and size
// rules (multiples of 32) on the way.
#include <gtest/gtest.h>

#include <filesystem>

#include "service_stack.h"
#include "support/tiny_checkpoints.h"

namespace stas::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class Wan22Render : public ::testing::Test {
 protected:
  void SetUp() override {
    checkpoint_ = dir_.File("Wan2.2-tiny");
    const std::string error = WriteTinyWan22Checkpoint(checkpoint_);
    ASSERT_TRUE(error.empty()) << error;
  }
  TempDir dir_;
  std::string checkpoint_;
};

TEST_F(Wan22Render, StasRenderWritesA24FpsVideoOfTheRequestedSize) {
  const std::string out = dir_.File("fox.mp4");
  auto r = RunCommand(std::string(STAS_BINARY) + " render --model " + ShellQuote(checkpoint_) +
                      " --prompt 'a red fox' --height 64 --width 96 --frames 5 --steps 2 --out " + out + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const VideoInfo info = Probe(out);
  EXPECT_EQ(info.width, 96) << info.raw;
  EXPECT_EQ(info.height, 64) << info.raw;
  EXPECT_EQ(info.frames, 5) << info.raw;
  EXPECT_EQ(info.rate, "24/1") << "Wan2.2 renders at 24 fps by default: " << info.raw;
  auto manifest = ReadJsonFile(dir_.File("fox.json"));
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  EXPECT_NE(manifest->dump().find("wan2.2"), std::string::npos) << manifest->dump();

  auto bad = RunCommand(std::string(STAS_BINARY) + " render --model " + ShellQuote(checkpoint_) +
                        " --prompt fox --height 48 --width 96 --frames 5 --steps 2 --out " + dir_.File("bad.mp4") +
                        " 2>&1");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("multiple of 32"), std::string::npos) << bad.output;
  EXPECT_FALSE(fs::exists(dir_.File("bad.mp4")));
}

TEST_F(Wan22Render, TheServiceRendersAWan22Job) {
  ServiceStack stack;
  ASSERT_TRUE(stack.StartRedis()) << stack.Logs();
  ASSERT_TRUE(stack.StartCoordinator()) << stack.Logs();
  stack.StartWorkers("w22", 1, {}, checkpoint_);
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.ConnectedWorkers() >= 1; }, 120s)) << stack.Logs();
  auto ids = stack.Submit("--model " + ShellQuote(checkpoint_) +
                          " --prompt 'a boat at sea' --height 64 --width 64 --frames 5 --steps 2");
  ASSERT_EQ(ids.size(), 1u) << stack.Logs();
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.State(ids[0]) == "done"; }, 180s))
      << stack.Job(ids[0]).dump() << stack.Logs();
  EXPECT_EQ(stack.CountVideos(ids[0]), 1);
}

}  // namespace
}  // namespace stas::testing

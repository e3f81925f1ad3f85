// Untrusted input that never reaches a worker's files or wraps silently: UTF-8 handling, the frame
// limits, job specs naming files, checked integers, the one name check, symlinked dataset folders,
// cost limits per model family.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "common/json.h"
#include "common/text.h"
#include "protocol/protocol.h"
#include "steering/stas_options.h"
#include "storage/output_layout.h"
#include "support/temp_dir.h"
#include "models/registry.h"
#include "jobspec/render_spec.h"
#include "worker/worker_process.h"

namespace stas {
namespace {

TEST(Utf8, TruncationNeverSplitsACharacterAndRepairsBadBytes) {
  EXPECT_EQ(TruncateUtf8("ab\xc3\xa9", 3), "ab");
  EXPECT_EQ(TruncateUtf8("ab\xc3\xa9", 4), "ab\xc3\xa9");
  EXPECT_TRUE(IsValidUtf8(TruncateUtf8("\xff\xfe ok", 100)));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // a surrogate
  EXPECT_TRUE(IsValidUtf8("\xf0\x9f\x8e\xac"));   // an emoji
}

TEST(Frames, EncodingNeverThrowsOnInvalidUtf8) {
  Json m = {{"type", "failed"}, {"error", std::string("cut \xc3", 5)}};
  EXPECT_NO_THROW(protocol::EncodeFrame(m));
}

TEST(Frames, PreHelloFramesAreSmall) {
  protocol::FrameDecoder decoder(protocol::kMaxPreHelloFrameBytes);
  const uint32_t n = 1u << 20;  // announces 1 MiB
  const char header[4] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                          static_cast<char>(n)};
  decoder.Append(header, 4);
  auto next = decoder.Next();
  EXPECT_FALSE(next.ok()) << "a 1 MiB frame must be refused before hello, without buffering it";
}

TEST(JobSpecs, NameNoFileOfTheWorker) {
  auto spec = jobspec::RenderSpec::FromJson(
      {{"prompt", "p"}, {"stas", {{"enabled", true}, {"channels_file", "/dev/zero"}}}});
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("calibration"), std::string::npos) << spec.status().message();
  // A local render may still use a file; it never travels in a job's JSON.
  steering::StasOptions local;
  local.channels_file = "/tmp/ma.json";
  EXPECT_TRUE(local.Validate().ok());
  EXPECT_FALSE(steering::StasOptions::FromJson(local.ToJson()).ok());
}

TEST(JobSpecs, InlineChannelsAreValidatedAndBounded) {
  Json channels = {{"format", "stas-ma-channels/1"}, {"model", "tiny"}, {"hidden_dim", 64}, {"num_blocks", 2},
                   {"tau", 100}, {"k", 8}, {"global", {{"channels", {3, 5}}, {"peak_median_ratios", {200.0, 150.0}}}}};
  auto ok = steering::StasOptions::FromJson({{"enabled", true}, {"channels", channels}});
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
  Json bad = channels;
  bad["global"]["channels"] = {99};  // outside hidden_dim
  bad["global"]["peak_median_ratios"] = {1.0};
  EXPECT_FALSE(steering::StasOptions::FromJson({{"enabled", true}, {"channels", bad}}).ok());
  EXPECT_FALSE(steering::StasOptions::FromJson({{"calibration", "../../x"}}).ok());
}

TEST(JobSpecs, IntegersDoNotWrap) {
  const uint64_t wraps_to_one = (uint64_t{1} << 32) + 1;
  EXPECT_FALSE(steering::StasOptions::FromJson({{"steps", wraps_to_one}}).ok());
  EXPECT_FALSE(steering::StasOptions::FromJson({{"blocks", {wraps_to_one}}}).ok());
  EXPECT_FALSE(steering::StasOptions::FromJson({{"max_channels", wraps_to_one}}).ok());
  EXPECT_FALSE(jobspec::RenderSpec::FromJson({{"prompt", "p"}, {"steps", wraps_to_one}}).ok());
}

TEST(Names, OneCheckForServerAndWorker) {
  for (const char* bad : {".hidden", "a\x7f" "b", "a/b", "..", "bad\xff"}) {
    jobspec::RenderSpec s;
    s.prompt = "p";
    s.output_name = bad;
    EXPECT_FALSE(s.Validate().ok()) << bad;
    EXPECT_FALSE(storage::ValidateOutputComponent(bad, "name").ok()) << bad;
    s.output_name.clear();
    s.dataset = bad;
    EXPECT_FALSE(s.Validate().ok()) << bad;
  }
  jobspec::RenderSpec s;
  s.prompt = "p";
  s.output_name = "0123456789abcdef0123456789abcdef";
  EXPECT_FALSE(s.Validate().ok()) << "an output name shaped like a job id could take another job's path";
}

TEST(Storage, ADatasetFolderThatIsALinkIsNotFollowed) {
  testing::TempDir root, outside;
  ASSERT_EQ(::symlink(outside.path().c_str(), root.File("birds").c_str()), 0);
  auto paths = storage::OutputLayout(root.path()).PathsFor("0123456789abcdef0123456789abcdef", "birds", "");
  ASSERT_TRUE(paths.ok());
  EXPECT_FALSE(storage::OutputLayout::EnsureFolder(*paths).ok());
  auto plain = storage::OutputLayout(root.path()).PathsFor("0123456789abcdef0123456789abcdef", "cats", "");
  EXPECT_TRUE(storage::OutputLayout::EnsureFolder(*plain).ok());
  EXPECT_TRUE(std::filesystem::is_directory(root.File("cats")));
}

TEST(AssignedOutput, TheWorkerWritesOnlyASafePathUnderItsStorageFolder) {
  const std::string job = "0123456789abcdef0123456789abcdef";
  auto single = worker::AssignedOutputPaths("/srv/videos", job, "single/" + job + ".mp4");
  ASSERT_TRUE(single.ok()) << single.status().ToString();
  EXPECT_EQ(single->video, "/srv/videos/single/" + job + ".mp4");
  EXPECT_EQ(single->manifest, "/srv/videos/single/" + job + ".json");
  auto named = worker::AssignedOutputPaths("/srv/videos", job, "birds/fox-01.mp4");
  ASSERT_TRUE(named.ok());
  EXPECT_EQ(named->folder, "/srv/videos/birds");
  EXPECT_EQ(named->video, "/srv/videos/birds/fox-01.mp4");
  for (const std::string bad :
       {"", "fox.mp4", "/etc/cron.d/x.mp4", "../x.mp4", "single/../../x.mp4", "../../etc/x.mp4", "./x.mp4",
        "single/.hidden.mp4", "single/.mp4", "a/b/c.mp4", "single//x.mp4", "single/x.json", "single/x.mp4/",
        "single\\..\\x.mp4", "single/x\x01.mp4", "birds\x7f/x.mp4", "single/\xff.mp4"}) {
    auto r = worker::AssignedOutputPaths("/srv/videos", job, bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << "'" << bad << "' was accepted";
  }
}

TEST(CostLimits, TheTinyModelRefusesALargeVideoNamingTheLimit) {
  auto tiny = models::DescribeFamily("tiny");
  auto wan21 = models::DescribeFamily("wan2.1");
  ASSERT_TRUE(tiny.ok() && wan21.ok());
  jobspec::RenderSpec s;
  s.prompt = "p";
  s.frames = 81;
  s.height = 720;
  s.width = 1280;
  auto st = s.CheckCostLimits(*tiny, jobspec::DefaultCostLimits(*tiny));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("limit"), std::string::npos);
  EXPECT_NE(st.message().find("--limit tiny:"), std::string::npos) << st.message();
  jobspec::RenderSpec small;
  small.prompt = "p";
  EXPECT_TRUE(small.CheckCostLimits(*tiny, jobspec::DefaultCostLimits(*tiny)).ok());
  jobspec::RenderSpec wan = s;
  wan.frames = 1001;
  EXPECT_FALSE(wan.CheckCostLimits(*wan21, jobspec::DefaultCostLimits(*wan21)).ok());
  EXPECT_TRUE(s.CheckCostLimits(*wan21, jobspec::DefaultCostLimits(*wan21)).ok());
  jobspec::CostLimitOverrides overrides;
  ASSERT_TRUE(jobspec::ParseCostLimitOverride("tiny:frames=81,pixels=921600", &overrides).ok());
  EXPECT_TRUE(s.CheckCostLimits(*tiny, jobspec::CostLimitsFor(*tiny, overrides)).ok());
  EXPECT_FALSE(s.CheckCostLimits(*wan21, jobspec::CostLimitsFor(*wan21, {{"wan2.1", {41, 1280 * 720, 1000}}})).ok());
  EXPECT_FALSE(jobspec::ParseCostLimitOverride("tiny:frames=-1", &overrides).ok());
  EXPECT_FALSE(jobspec::ParseCostLimitOverride("nope:frames=1", &overrides).ok());
  EXPECT_FALSE(jobspec::ParseCostLimitOverride("tiny:colour=1", &overrides).ok());
}

}  // namespace
}  // namespace stas

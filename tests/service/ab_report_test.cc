// `stas ab` end to end on the built-in tiny model: renders with and without STAS (locally, and through
// the render service with --server), evaluates, and writes a report a headless browser can show.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/json.h"
#include "service_stack.h"
#include "support/run_command.h"
#include "support/temp_dir.h"

namespace stas::testing {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Small and fast: 9 frames of 64x64, 2 steps.
const char* kSmall = " --stas --frames 9 --steps 2 --height 64 --width 64 --stas-fraction 1.0";

TEST(AbReport, LocalRunWritesASelfContainedReportWithEverySection) {
  TempDir dir;
  const std::string prompts = dir.Write("prompts.txt", "a red fox running through snow\na lighthouse at dusk\n");
  const std::string out = dir.File("ab");
  auto r = RunCommand(std::string(STAS_BINARY) + " ab --model tiny --prompts " + prompts + " --seeds 3" + kSmall +
                      " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Progress on stderr (merged here), a summary table on stdout.
  EXPECT_NE(r.output.find("2 prompt(s) x 1 seed(s) x {baseline, stas} = 4 videos"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("SSIM, cross-chunk pairs"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("wrote " + out + "/report.html"), std::string::npos) << r.output;
  for (const char* v : {"p1-s3-baseline.mp4", "p1-s3-stas.mp4", "p2-s3-baseline.mp4", "p2-s3-stas.mp4"})
    EXPECT_TRUE(std::filesystem::exists(out + "/videos/" + v)) << v;
  for (const char* f : {"ma/analysis.json", "ma/report.html", "ma/ma_channels.json", "report.json"})
    EXPECT_TRUE(std::filesystem::exists(out + "/" + f)) << f << "\n" << r.output;

  const Json report = Json::parse(Slurp(out + "/report.json"));
  ASSERT_EQ(report["cases"].size(), 2u);
  EXPECT_EQ(report["cases"][0]["seed"], 3);
  EXPECT_EQ(report["settings"]["stas"]["stas"]["enabled"], true);
  EXPECT_EQ(report["settings"]["baseline"]["stas"]["enabled"], false);
  // Two cases: every metric has a mean delta and a 95% interval around it.
  const Json& ssim = report["summary"]["ssim_cross"];
  EXPECT_EQ(ssim["n"], 2);
  ASSERT_TRUE(ssim["ci95"].is_array()) << ssim.dump();
  EXPECT_LE(ssim["ci95"][0].get<double>(), ssim["mean_delta"].get<double>());
  EXPECT_GE(ssim["ci95"][1].get<double>(), ssim["mean_delta"].get<double>());
  // STAS changed the videos (it steers every step here), from the same noise.
  EXPECT_LT(report["cases"][0]["stas_vs_baseline"]["psnr"].get<double>(), 100.0);
  EXPECT_TRUE(report["ma_report"]["summary"]["step0_mean_ma_magnitude"]["first_frame"].is_number());

  const std::string html = Slurp(out + "/report.html");
  EXPECT_NE(html.find("<video src=\"videos/p1-s3-baseline.mp4\""), std::string::npos);
  EXPECT_NE(html.find("<video src=\"videos/p1-s3-stas.mp4\""), std::string::npos);
  EXPECT_EQ(html.find("<script src"), std::string::npos) << "no external scripts";
  for (const char* external : {"src=\"http", "href=\"http", "<link", "@import"})
    EXPECT_EQ(html.find(external), std::string::npos) << external << ": no external assets";

  std::string browser;
  for (const char* b : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (::access(b, X_OK) == 0) browser = b;
  if (browser.empty()) GTEST_SKIP() << "chromium is not installed: the browser check is skipped";
  auto dom = RunCommand("timeout 60 " + browser +
                        " --headless --no-sandbox --disable-gpu --disable-background-networking "
                        "--disable-component-update --disable-sync --no-first-run --virtual-time-budget=2000 "
                        "--dump-dom file://" + out + "/report.html 2>/dev/null");
  for (const char* expected : {"STAS A/B report", "id=\"summary\"", "95% CI (paired t)", "id=\"videos\"",
                               "Side by side", "id=\"metrics\"", "Per-prompt metrics", "a lighthouse at dusk",
                               "id=\"ma-report\"", "Massive-activation report", "<iframe"})
    EXPECT_NE(dom.output.find(expected), std::string::npos) << expected << "\n" << dom.output.substr(0, 3000);
}

TEST(AbReport, BadInputExitsTwoAndRendersNothing) {
  TempDir dir;
  const std::string out = dir.File("ab");
  auto no_prompts = RunCommand(std::string(STAS_BINARY) + " ab --out " + out);
  EXPECT_EQ(no_prompts.exit_code, 2);
  EXPECT_NE(no_prompts.output.find("--prompts FILE is required"), std::string::npos) << no_prompts.output;
  const std::string prompts = dir.Write("p.txt", "a fox\n");
  auto frames = RunCommand(std::string(STAS_BINARY) + " ab --prompts " + prompts + " --frames 10 --out " + out);
  EXPECT_EQ(frames.exit_code, 2);
  EXPECT_NE(frames.output.find("4k+1"), std::string::npos) << frames.output;
  auto seeds = RunCommand(std::string(STAS_BINARY) + " ab --prompts " + prompts + " --seeds x --out " + out);
  EXPECT_EQ(seeds.exit_code, 2);
  EXPECT_NE(seeds.output.find("--seeds"), std::string::npos) << seeds.output;
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(AbReport, ThroughTheRenderServiceWithServer) {
  ServiceStack stack;
  ASSERT_TRUE(stack.StartRedis()) << stack.Logs();
  ASSERT_TRUE(stack.StartCoordinator()) << stack.Logs();
  stack.StartWorkers("ab", 1);
  TempDir dir;
  const std::string prompts = dir.Write("prompts.txt", "a paper boat on a pond\n");
  const std::string out = dir.File("remote");
  auto r = RunCommand("timeout 300 " + std::string(STAS_BINARY) + " ab --server " + stack.server() + " --prompts " +
                      prompts + " --seeds 1" + kSmall + " --no-analysis --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output << stack.Logs();
  EXPECT_NE(r.output.find("submitted 2 job(s)"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(out + "/videos/p1-s1-baseline.mp4"));
  EXPECT_TRUE(std::filesystem::exists(out + "/videos/p1-s1-stas.mp4"));
  const Json report = Json::parse(Slurp(out + "/report.json"));
  EXPECT_EQ(report["settings"]["backend"], stack.server());
  EXPECT_EQ(report["cases"][0]["baseline"]["metrics"]["frames"], 9);
  EXPECT_EQ(report["summary"]["ssim_all"]["n"], 1);
  EXPECT_TRUE(report["summary"]["ssim_all"]["ci95"].is_null());
  EXPECT_NE(Slurp(out + "/report.html").find("skipped (--no-analysis)"), std::string::npos);
}

}  // namespace
}  // namespace stas::testing

#include <gtest/gtest.h>

#include "common/safetensors.h"
#include "support/run_command.h"
#include "support/temp_dir.h"

namespace stas {
namespace {

TEST(CheckFixtureCommand, UnknownComponentExitsNonZeroNamingIt) {
  testing::TempDir dir;
  dir.Write("meta.json", R"({"component":"warp_drive","config":{},"inputs":[],"outputs":["y"],)"
                         R"("tolerance":{"atol":1e-4,"rtol":1e-4}})");
  ASSERT_TRUE(WriteSafetensors(dir.File("io.safetensors"), {{"y", at::zeros({1})}}).ok());
  auto r = testing::RunCommand(std::string(STAS_BINARY) + " check-fixture " + dir.path());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("component warp_drive not implemented"), std::string::npos) << r.output;
}

TEST(CheckFixtureCommand, MalformedFixtureIsAClearError) {
  testing::TempDir dir;
  dir.Write("meta.json", "{not json");
  auto r = testing::RunCommand(std::string(STAS_BINARY) + " check-fixture " + dir.path());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("not valid JSON"), std::string::npos) << r.output;
}

TEST(StasCommand, EverySubcommandHasHelp) {
  auto r = testing::RunCommand(std::string(STAS_BINARY) + " --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("check-fixture"), std::string::npos) << r.output;
  auto sub = testing::RunCommand(std::string(STAS_BINARY) + " check-fixture --help");
  EXPECT_EQ(sub.exit_code, 0);
  EXPECT_NE(sub.output.find("tolerance"), std::string::npos) << sub.output;
}

}  // namespace
}  // namespace stas

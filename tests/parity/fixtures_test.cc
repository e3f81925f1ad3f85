// Runs every shipped reference fixture through `check-fixture`'s engine. Components that are not
// implemented yet are reported as skipped (by name), never as passing.
#include <gtest/gtest.h>

#include <filesystem>

#include "models/components.h"

namespace fs = std::filesystem;

namespace {

std::vector<std::string> FixtureDirs() {
  std::vector<std::string> dirs;
  for (const auto& e : fs::directory_iterator(STAS_FIXTURES_DIR))
    if (e.is_directory() && fs::exists(e.path() / "meta.json")) dirs.push_back(e.path().filename().string());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

class FixtureParity : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureParity, MatchesReference) {
  const std::string dir = std::string(STAS_FIXTURES_DIR) + "/" + GetParam();
  auto report = stas::models::CheckFixture(dir);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  if (!report->implemented) GTEST_SKIP() << "component " << report->component << " not implemented";
  for (const auto& c : report->outputs)
    EXPECT_TRUE(c.ok()) << GetParam() << " output " << c.name << " max_abs_err " << c.max_abs_error << " "
                        << c.detail;
  for (const auto& name : report->missing_outputs)
    ADD_FAILURE() << GetParam() << ": output " << name << " not produced";
}

INSTANTIATE_TEST_SUITE_P(Shipped, FixtureParity, ::testing::ValuesIn(FixtureDirs()),
                         [](const auto& info) { return info.param; });

}  // namespace

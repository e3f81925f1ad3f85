// tests/fixtures/make_fixtures.py can make every shipped fixture again: each folder of tests/fixtures has
// its entry in the script's catalogue, and the script names no folder that is not shipped. (Running the
// script needs torch and diffusers, which CI has not; tests/fixtures/README.md says where it runs.)
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

namespace fs = std::filesystem;

namespace {

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::set<std::string> ShippedFixtures() {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(STAS_FIXTURES_DIR))
    if (entry.is_directory() && fs::exists(entry.path() / "meta.json")) names.insert(entry.path().filename().string());
  return names;
}

// The catalogue's entries are lines of the form `("NAME", lambda: ...)`.
std::set<std::string> CatalogueEntries(const std::string& script) {
  std::set<std::string> names;
  const std::regex entry(R"re(\(\s*"([a-z0-9_]+)"\s*,\s*lambda\s*:)re");
  for (auto it = std::sregex_iterator(script.begin(), script.end(), entry); it != std::sregex_iterator(); ++it)
    names.insert((*it)[1].str());
  return names;
}

TEST(FixtureGenerator, CatalogueEntriesAreParsed) {
  const auto names = CatalogueEntries(R"(FIXTURES = [
    ("wan_vae_tiny", lambda: wan_vae("wan_vae_tiny", cfg, (1, 4, 3, 4, 6), 2)),
    ("t5_b3",
     lambda: t5("t5_b3")),
]
not_an_entry("x", 1))");
  EXPECT_EQ(names, (std::set<std::string>{"wan_vae_tiny", "t5_b3"}));
}

TEST(FixtureGenerator, MakesEveryShippedFixture) {
  const fs::path script = fs::path(STAS_FIXTURES_DIR) / "make_fixtures.py";
  ASSERT_TRUE(fs::exists(script)) << script;
  const auto made = CatalogueEntries(ReadFile(script));
  const auto shipped = ShippedFixtures();
  ASSERT_FALSE(shipped.empty());
  for (const auto& name : shipped) EXPECT_TRUE(made.count(name)) << name << " is shipped but make_fixtures.py cannot make it";
  for (const auto& name : made) EXPECT_TRUE(shipped.count(name)) << name << " is in make_fixtures.py but not shipped";
}

}  // namespace

// Keeps the arrows between the libraries pointing down (docs/ARCHITECTURE.md): the coordinator and
// the worker both sit on protocol/ and jobspec/, and neither includes or links the other. CMake alone
// does not catch a new `#include "worker/..."` in the coordinator while the cli and tests link both,
// so this scans the sources.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "support/temp_dir.h"

namespace stas::testing {
namespace {

namespace fs = std::filesystem;

// A library folder and the folders (libraries) it must not include.
struct LayerRule {
  std::string folder;
  std::vector<std::string> forbidden;
};

const std::vector<LayerRule>& Rules() {
  static const std::vector<LayerRule> rules = {
      {"coordinator", {"worker"}},
      {"worker", {"coordinator"}},
      {"protocol", {"coordinator", "worker", "jobspec"}},
      {"jobspec", {"coordinator", "worker", "protocol"}},
  };
  return rules;
}

// Every `#include "<forbidden>/..."` in the .h/.cc files under root/rule.folder, as "file:line: text".
std::vector<std::string> ForbiddenIncludes(const fs::path& root, const LayerRule& rule) {
  std::vector<std::string> found;
  const fs::path folder = root / rule.folder;
  if (!fs::is_directory(folder)) return found;
  std::vector<std::regex> patterns;  // built once: std::regex is slow to construct
  for (const std::string& library : rule.forbidden)
    patterns.emplace_back("^\\s*#\\s*include\\s*\"" + library + "/");
  for (const auto& entry : fs::recursive_directory_iterator(folder)) {
    const std::string ext = entry.path().extension().string();
    if (!entry.is_regular_file() || (ext != ".h" && ext != ".cc")) continue;
    std::ifstream in(entry.path());
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      if (line.find("include") == std::string::npos) continue;
      for (const std::regex& pattern : patterns) {
        if (std::regex_search(line, pattern))
          found.push_back(fs::relative(entry.path(), root).string() + ":" + std::to_string(number) + ": " + line);
      }
    }
  }
  return found;
}

// The `stas_<forbidden>` targets named in root/rule.folder/CMakeLists.txt (its link dependencies).
std::vector<std::string> ForbiddenLinks(const fs::path& root, const LayerRule& rule) {
  std::vector<std::string> found;
  std::ifstream in(root / rule.folder / "CMakeLists.txt");
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.rfind("#", 0) == 0) continue;
    for (const std::string& library : rule.forbidden) {
      if (std::regex_search(line, std::regex("\\bstas_" + library + "\\b")))
        found.push_back(rule.folder + "/CMakeLists.txt:" + std::to_string(number) + ": " + line);
    }
  }
  return found;
}

std::string Joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += "  " + l + "\n";
  return out;
}

TEST(Layering, NoLibraryIncludesOrLinksALibraryBesideOrAboveIt) {
  const fs::path root = STAS_SOURCE_DIR;
  ASSERT_TRUE(fs::is_directory(root / "coordinator")) << root;
  for (const LayerRule& rule : Rules()) {
    const auto includes = ForbiddenIncludes(root, rule);
    EXPECT_TRUE(includes.empty()) << rule.folder << "/ includes a library it must not:\n" << Joined(includes);
    const auto links = ForbiddenLinks(root, rule);
    EXPECT_TRUE(links.empty()) << rule.folder << "/ links a library it must not:\n" << Joined(links);
  }
}

// The scan itself can fail: a coordinator header that includes a worker header, or a coordinator
// target that links the worker, is reported with its file and line; a comment is not.
TEST(Layering, TheScanReportsACoordinatorThatIncludesOrLinksTheWorker) {
  TempDir dir;
  dir.Write("coordinator/fine.h", "// #include \"worker/renderer.h\" is not allowed here\n#include \"jobspec/render_spec.h\"\n");
  dir.Write("coordinator/bad.cc", "#include <string>\n  #include \"worker/renderer.h\"\n");
  dir.Write("coordinator/CMakeLists.txt", "# not stas_worker\nstas_library(stas_coordinator DEPS stas_protocol stas_worker)\n");
  const LayerRule rule{"coordinator", {"worker"}};
  const auto includes = ForbiddenIncludes(dir.path(), rule);
  ASSERT_EQ(includes.size(), 1u) << Joined(includes);
  EXPECT_EQ(includes[0], "coordinator/bad.cc:2:   #include \"worker/renderer.h\"");
  const auto links = ForbiddenLinks(dir.path(), rule);
  ASSERT_EQ(links.size(), 1u) << Joined(links);
  EXPECT_EQ(links[0].rfind("coordinator/CMakeLists.txt:2: ", 0), 0u) << links[0];
}

}  // namespace
}  // namespace stas::testing

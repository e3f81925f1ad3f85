// The switch that turns "skipped: Redis/FFmpeg missing" into a failure in CI (tests/support/optional_dependency.h).
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "support/optional_dependency.h"

namespace stas::testing {
namespace {

constexpr const char* kVariable = "STAS_REQUIRE_OPTIONAL_DEPENDENCY_TEST";

class OptionalDependencyTest : public ::testing::Test {
 protected:
  void TearDown() override { unsetenv(kVariable); }
};

TEST_F(OptionalDependencyTest, RequiredOnlyWhenSetToSomethingButZero) {
  unsetenv(kVariable);
  EXPECT_FALSE(DependencyRequired(kVariable));
  setenv(kVariable, "", 1);
  EXPECT_FALSE(DependencyRequired(kVariable));
  setenv(kVariable, "0", 1);
  EXPECT_FALSE(DependencyRequired(kVariable));
  setenv(kVariable, "1", 1);
  EXPECT_TRUE(DependencyRequired(kVariable));
  setenv(kVariable, "yes", 1);
  EXPECT_TRUE(DependencyRequired(kVariable));
}

void NeedsAMissingDependency() {
  STAS_NEEDS_DEPENDENCY(false, kVariable, "the thing under test is missing");
}

void NeedsAPresentDependency(bool* reached_the_end) {
  STAS_NEEDS_DEPENDENCY(true, kVariable, "never said");
  *reached_the_end = true;
}

TEST_F(OptionalDependencyTest, AMissingRequiredDependencyFails) {
  setenv(kVariable, "1", 1);
  EXPECT_FATAL_FAILURE(NeedsAMissingDependency(), "the thing under test is missing");
}

TEST_F(OptionalDependencyTest, APresentDependencyNeitherFailsNorSkips) {
  setenv(kVariable, "1", 1);
  bool reached_the_end = false;
  NeedsAPresentDependency(&reached_the_end);
  EXPECT_TRUE(reached_the_end);
  EXPECT_FALSE(IsSkipped());
  EXPECT_FALSE(HasFailure());
}

// What CI promises: with the variables set (deploy/run-tests.sh), this build has both dependencies.
TEST(OptionalDependency, RequiredDependenciesAreBuiltIn) {
  if (DependencyRequired("STAS_REQUIRE_REDIS")) EXPECT_TRUE(STAS_HAVE_REDIS) << "STAS_REQUIRE_REDIS=1 but built without Redis";
  if (DependencyRequired("STAS_REQUIRE_FFMPEG")) EXPECT_TRUE(STAS_HAVE_FFMPEG) << "STAS_REQUIRE_FFMPEG=1 but built without FFmpeg";
}

}  // namespace
}  // namespace stas::testing

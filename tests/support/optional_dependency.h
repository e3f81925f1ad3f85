// Tests of features behind optional dependencies (Redis, FFmpeg) skip when the build or the machine lacks
// the dependency, so a developer without it still gets a useful run of everything else. CI must not pass
// that way: deploy/run-tests.sh sets STAS_REQUIRE_REDIS=1 and STAS_REQUIRE_FFMPEG=1, and then a missing
// dependency fails the test instead of skipping it.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace stas::testing {

// True when the environment variable is set to anything but "" or "0".
inline bool DependencyRequired(const char* env_name) {
  const char* value = std::getenv(env_name);
  return value != nullptr && *value != '\0' && std::string(value) != "0";
}

}  // namespace stas::testing

// Statement macro for a test body or SetUp: carries on when `available`; otherwise fails the test when the
// environment variable `env_name` requires the dependency, and skips it when not. `why` says what is missing.
#define STAS_NEEDS_DEPENDENCY(available, env_name, why)                                              \
  if (available) {                                                                                  \
  } else if (::stas::testing::DependencyRequired(env_name))                                         \
    FAIL() << why << " (" << env_name << " is set: a missing dependency fails instead of skipping)"; \
  else                                                                                              \
    GTEST_SKIP() << why

#define STAS_NEEDS_REDIS(available, why) STAS_NEEDS_DEPENDENCY(available, "STAS_REQUIRE_REDIS", why)
#define STAS_NEEDS_FFMPEG(available, why) STAS_NEEDS_DEPENDENCY(available, "STAS_REQUIRE_FFMPEG", why)

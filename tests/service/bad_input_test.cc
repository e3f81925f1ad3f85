// Bad input through `stas submit` and the HTTP API (docs/DESIGN.md#bad-input): each case gets a clear error
// and queues nothing. Prints "BADINPUT <channel> <case>: <message>" lines for docs/RELIABILITY.md.
#include <gtest/gtest.h>

#include "service_stack.h"

namespace stas::testing {
namespace {

struct Case {
  std::string name;
  std::string submit_args;   // `stas submit` flags (empty: not expressible on the command line)
  std::string http_body;     // POST /jobs body (empty: not expressible over HTTP)
  std::string expect;        // a piece of the error message both must contain
};

std::string LongPrompt() { return std::string(9000, 'a'); }

class BadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    stack_ = new ServiceStack();
    ASSERT_TRUE(stack_->StartRedis()) << stack_->Logs();
    ASSERT_TRUE(stack_->StartCoordinator()) << stack_->Logs();
  }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  void TearDown() override {
    // Nothing was queued by any bad submission.
    Json all = stack_->GetJson("/jobs?limit=1");
    EXPECT_EQ(all.value("total", -1), 0) << all.dump();
  }

  void Check(const Case& c) {
    if (!c.submit_args.empty()) {
      auto r = stack_->Stas("submit --server " + stack_->server() + " " + c.submit_args);
      EXPECT_NE(r.exit_code, 0) << c.name << ": " << r.output;
      EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.name << ": " << r.output;
      std::string first_line = r.output.substr(0, r.output.find('\n'));
      std::printf("BADINPUT submit %s: %s\n", c.name.c_str(), first_line.substr(0, 300).c_str());
    }
    if (!c.http_body.empty()) {
      TempDir tmp;
      const std::string body = tmp.Write("body.json", c.http_body);
      auto r = RunCommand("curl -s -w '\\n%{http_code}' -H 'Content-Type: application/json' --data-binary @" + body +
                          " " + stack_->server() + "/jobs");
      const size_t nl = r.output.rfind('\n');
      const std::string code = r.output.substr(nl + 1);
      const std::string answer = r.output.substr(0, nl);
      EXPECT_EQ(code, "400") << c.name << ": " << r.output;
      EXPECT_NE(answer.find(c.expect), std::string::npos) << c.name << ": " << answer;
      std::printf("BADINPUT http %s: %s %s\n", c.name.c_str(), code.c_str(), answer.substr(0, 300).c_str());
    }
    std::fflush(stdout);
  }

  static ServiceStack* stack_;
};
ServiceStack* BadInput::stack_ = nullptr;

TEST_F(BadInput, MalformedJson) {
  TempDir tmp;
  const std::string file = tmp.Write("broken.jsonl", "{\"prompt\": \"ok\"}\n{\"prompt\": \"unterminated\n");
  Check({"malformed_json", "--dataset " + file, "{\"prompt\": \"x\",", "JSON"});
}

TEST_F(BadInput, UnknownField) {
  TempDir tmp;
  const std::string file = tmp.Write("unknown.jsonl", "{\"prompt\": \"x\", \"colour\": \"red\"}\n");
  Check({"unknown_field", "--dataset " + file, R"({"prompt": "x", "colour": "red"})", "unknown field 'colour'"});
}

TEST_F(BadInput, FramesNotFourKPlusOne) {
  Check({"frames_not_4k+1", "--prompt x --frames 10", R"({"prompt": "x", "frames": 10})", "4k+1"});
}

TEST_F(BadInput, SizeNotMultipleOf16) {
  Check({"height_not_multiple_of_16", "--prompt x --height 100", R"({"prompt": "x", "height": 100})",
         "multiple of 16"});
  Check({"width_not_multiple_of_16", "--prompt x --width 70", R"({"prompt": "x", "width": 70})", "multiple of 16"});
}

TEST_F(BadInput, SizeNotMultipleOf32ForWan22) {
  Check({"height_not_multiple_of_32_wan2.2", "--prompt x --model Wan2.2-TI2V-5B-Diffusers --height 48",
         R"({"prompt": "x", "model": "Wan2.2-TI2V-5B-Diffusers", "height": 48})", "multiple of 32"});
}

TEST_F(BadInput, StepsOutOfRange) {
  Check({"steps_0", "--prompt x --steps 0", R"({"prompt": "x", "steps": 0})", "steps"});
  Check({"steps_1001", "--prompt x --steps 1001", R"({"prompt": "x", "steps": 1001})", "steps"});
}

TEST_F(BadInput, PromptOver8KiB) {
  Check({"prompt_over_8KiB", "--prompt " + LongPrompt(), R"({"prompt": ")" + LongPrompt() + R"("})", "8 KiB"});
}

TEST_F(BadInput, UnknownModel) {
  Check({"unknown_model", "--prompt x --model no-such-model", R"({"prompt": "x", "model": "no-such-model"})",
         "model"});
}

TEST_F(BadInput, OutputNameWithPathSeparator) {
  TempDir tmp;
  // (A leading "../" is refused earlier, for its dot: tests/unit/render_spec_test.cc.)
  const std::string file = tmp.Write("escape.jsonl", "{\"prompt\": \"x\", \"output_name\": \"x/../../etc/evil\"}\n");
  Check({"output_name_with_separator", "--dataset " + file, R"({"prompt": "x", "output_name": "x/../../etc/evil"})",
         "path separators"});
}

TEST_F(BadInput, DatasetWithOneBadLineQueuesNothing) {
  TempDir tmp;
  std::string text;
  for (int i = 0; i < 50; ++i) text += "{\"prompt\": \"fine " + std::to_string(i) + "\"}\n";
  text += "{\"prompt\": \"bad\", \"steps\": 5000}\n";
  const std::string file = tmp.Write("mostly_fine.jsonl", text);
  auto r = stack_->Stas("submit --server " + stack_->server() + " --dataset " + file);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("mostly_fine.jsonl:51"), std::string::npos) << r.output;
}

TEST_F(BadInput, BadBatchOverHttpQueuesNothing) {
  Check({"batch_with_one_bad_job", "",
         R"({"jobs": [{"prompt": "fine"}, {"prompt": "fine too"}, {"prompt": "bad", "frames": 2}]})", "jobs[2]"});
}

}  // namespace
}  // namespace stas::testing

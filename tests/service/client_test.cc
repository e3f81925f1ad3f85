// The client commands against a live coordinator (redis-server + `stas coordinator`, no workers unless
// a test starts them): dataset formats of `stas submit`, `stas status`, `stas cancel`, `stas watch`.
#include <gtest/gtest.h>

#include "service_stack.h"

namespace stas::testing {
namespace {

class ClientCommands : public ::testing::Test {
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
  static Json Spec(const std::string& id) {
    Json j = stack_->Job(id);
    return j.is_object() && j.contains("spec") ? j["spec"] : Json();
  }
  static ServiceStack* stack_;
};
ServiceStack* ClientCommands::stack_ = nullptr;

TEST_F(ClientCommands, CsvWithQuotesAndDefaultsFromFlags) {
  TempDir tmp;
  const std::string file = tmp.Write("scenes.csv",
                                     "prompt,seed,steps\n"
                                     "\"a fox, running\",1,3\n"
                                     "\"she said \"\"hello\"\"\",2,\n"
                                     "\"two\nlines\",3,5\n");
  auto ids = stack_->Submit("--dataset " + file + " --steps 7 --frames 9");
  ASSERT_EQ(ids.size(), 3u) << stack_->Logs();
  Json a = Spec(ids[0]), b = Spec(ids[1]), c = Spec(ids[2]);
  EXPECT_EQ(a["prompt"], "a fox, running");
  EXPECT_EQ(a["seed"], 1);
  EXPECT_EQ(a["steps"], 3);
  EXPECT_EQ(b["prompt"], "she said \"hello\"");
  EXPECT_EQ(b["steps"], 7) << "an empty cell takes the flag's value";
  EXPECT_EQ(c["prompt"], "two\nlines");
  for (const auto& s : {a, b, c}) {
    EXPECT_EQ(s["dataset"], "scenes") << "the dataset name defaults to the file's stem";
    EXPECT_EQ(s["frames"], 9);
  }
}

TEST_F(ClientCommands, TextAndJsonlDatasets) {
  TempDir tmp;
  const std::string txt = tmp.Write("lines.txt", "first prompt\n\n  \nsecond prompt\r\n");
  auto ids = stack_->Submit("--dataset " + txt + " --seed 11");
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(Spec(ids[1])["prompt"], "second prompt");
  EXPECT_EQ(Spec(ids[1])["seed"], 11);
  const std::string jsonl =
      tmp.Write("more.jsonl", "{\"prompt\": \"from jsonl\", \"output_name\": \"clip_a\", \"steps\": 2}\n");
  auto more = stack_->Submit("--dataset " + jsonl + " --dataset-name renamed");
  ASSERT_EQ(more.size(), 1u);
  EXPECT_EQ(Spec(more[0])["dataset"], "renamed");
  EXPECT_EQ(Spec(more[0])["output_name"], "clip_a");
}

TEST_F(ClientCommands, SameSubmissionTwiceGivesTheSameId) {
  auto first = stack_->Submit("--prompt 'idempotent' --seed 5 --steps 2");
  auto second = stack_->Submit("--prompt 'idempotent' --seed 5 --steps 2");
  auto other = stack_->Submit("--prompt 'idempotent' --seed 6 --steps 2");
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first, second);
  ASSERT_EQ(other.size(), 1u);
  EXPECT_NE(first, other);
  EXPECT_EQ(first[0].size(), 32u);
}

TEST_F(ClientCommands, StatusShowsATableAndOneJob) {
  auto ids = stack_->Submit("--prompt 'status please' --steps 2");
  ASSERT_EQ(ids.size(), 1u);
  auto table = stack_->Stas("status --server " + stack_->server());
  EXPECT_EQ(table.exit_code, 0) << table.output;
  EXPECT_NE(table.output.find("STATE"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find(ids[0]), std::string::npos) << table.output;
  auto one = stack_->Stas("status --server " + stack_->server() + " " + ids[0]);
  EXPECT_EQ(one.exit_code, 0);
  EXPECT_NE(one.output.find("queued"), std::string::npos) << one.output;
  EXPECT_NE(one.output.find("status please"), std::string::npos) << one.output;
  auto json = stack_->Stas("status --json --server " + stack_->server() + " " + ids[0]);
  EXPECT_EQ(Json::parse(json.output)["id"], ids[0]);
  auto missing = stack_->Stas("status --server " + stack_->server() + " " + std::string(32, 'f'));
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("404"), std::string::npos) << missing.output;
}

TEST_F(ClientCommands, CancelThenWatchReportsNotDone) {
  auto ids = stack_->Submit("--prompt 'to cancel' --steps 2");
  ASSERT_EQ(ids.size(), 1u);
  auto cancel = stack_->Stas("cancel --server " + stack_->server() + " " + ids[0]);
  EXPECT_EQ(cancel.exit_code, 0) << cancel.output;
  EXPECT_NE(cancel.output.find("cancelled"), std::string::npos);
  EXPECT_EQ(stack_->State(ids[0]), "cancelled");
  auto again = stack_->Stas("cancel --server " + stack_->server() + " " + ids[0]);
  EXPECT_EQ(again.exit_code, 0) << again.output;
  auto watch = stack_->Stas("watch --server " + stack_->server() + " " + ids[0]);
  EXPECT_EQ(watch.exit_code, 1) << "a cancelled job is not a success: " << watch.output;
  EXPECT_NE(watch.output.find(ids[0] + " cancelled"), std::string::npos) << watch.output;
}

TEST_F(ClientCommands, UnreachableServerIsAClearError) {
  auto r = RunCommand(std::string(STAS_BINARY) + " status --server http://127.0.0.1:" + std::to_string(FreeTcpPort()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("cannot connect"), std::string::npos) << r.output;
  auto bad = RunCommand(std::string(STAS_BINARY) + " status --server ftp://example.org");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("http://HOST:PORT"), std::string::npos) << bad.output;
}

TEST_F(ClientCommands, WatchFollowsJobsToDone) {
  auto ids = stack_->Submit("--dataset-name watched --prompt 'watch me render' --steps 3 --frames 9 --height 32 --width 32");
  ASSERT_EQ(ids.size(), 1u);
  // Other tests left jobs queued; cancel them so the worker renders only this one.
  Json queued = stack_->GetJson("/jobs?state=queued&limit=1000");
  for (const auto& j : queued.value("jobs", Json::array()))
    if (j["id"] != ids[0]) RunCommand("curl -s -X DELETE " + stack_->server() + "/jobs/" + j["id"].get<std::string>());
  stack_->StartWorkers("watcher", 1);
  auto watch = stack_->Stas("watch --timeout 240 --server " + stack_->server() + " " + ids[0]);
  EXPECT_EQ(watch.exit_code, 0) << watch.output << stack_->Logs();
  EXPECT_NE(watch.output.find(ids[0] + " done watched/" + ids[0] + ".mp4"), std::string::npos) << watch.output;
  EXPECT_EQ(stack_->CountVideos(ids[0]), 1);
}

}  // namespace
}  // namespace stas::testing

// Hostile-client rules of the worker protocol, on the dispatcher with the in-memory store (no
// sockets): done only after a granted commit, the coordinator's own output path, bounded heartbeats,
// UTF-8-safe error texts, a cancelled group reported as stopping, random lease tokens.
#include <gtest/gtest.h>

#include <set>

#include "common/json.h"
#include "common/text.h"
#include "coordinator/auth.h"
#include "coordinator/dispatcher.h"
#include "coordinator/job_queue.h"
#include "coordinator/memory_job_store.h"
#include "protocol/protocol.h"

namespace stas::coordinator {
namespace {

class Channel : public WorkerChannel {
 public:
  void Send(const Json& message) override { sent.push_back(message); }
  void Close() override { closed = true; }
  std::string peer() const override { return "test:1"; }
  std::vector<Json> Take(const std::string& type) {
    std::vector<Json> out, rest;
    for (auto& m : sent) (m["type"] == type ? out : rest).push_back(m);
    sent = rest;
    return out;
  }
  std::vector<Json> sent;
  bool closed = false;
};

class ProtocolRulesTest : public ::testing::Test {
 protected:
  ProtocolRulesTest() : store_(&clock_) {
    QueueOptions q;
    q.lease_ms = 10000;
    queue_ = std::make_unique<JobQueue>(&store_, &clock_, q);
    DispatcherOptions d;
    d.storage = "/srv/videos";
    d.token = "secret";
    d.reaper_grace_ms = 0;
    dispatcher_ = std::make_unique<Dispatcher>(queue_.get(), &clock_, d);
  }
  // Submits one job and hands it to a connected group; returns the lease.
  std::string Dispatched(const std::string& prompt, const std::string& output_name = "") {
    jobspec::RenderSpec s;
    s.prompt = prompt;
    s.output_name = output_name;
    auto sub = queue_->Submit(s);
    EXPECT_TRUE(sub.ok());
    id_ = sub->id;
    ch_ = std::make_shared<Channel>();
    dispatcher_->OnConnect(1, ch_);
    dispatcher_->OnMessage(1, {{"type", "hello"}, {"model", "tiny"}, {"token", "secret"}});
    dispatcher_->OnMessage(1, {{"type", "ready"}});
    auto jobs = ch_->Take("job");
    EXPECT_EQ(jobs.size(), 1u);
    job_ = jobs.empty() ? Json() : jobs[0];
    return jobs.empty() ? "" : jobs[0]["lease"].get<std::string>();
  }
  JobRecord Record() { return **queue_->Get(id_); }

  FakeClock clock_;
  MemoryJobStore store_;
  std::unique_ptr<JobQueue> queue_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::shared_ptr<Channel> ch_;
  std::string id_;
  Json job_;  // the last job message sent
};

TEST_F(ProtocolRulesTest, DoneWithoutAGrantedCommitIsRefused) {
  const std::string lease = Dispatched("a forged done");
  dispatcher_->OnMessage(1, {{"type", "done"}, {"job_id", id_}, {"lease", lease}, {"output", "single/x.mp4"}});
  EXPECT_EQ(Record().state, JobState::kRunning) << "done without commit must not finish the job";
  EXPECT_EQ(ch_->Take("error").size(), 1u);
  dispatcher_->OnMessage(1, {{"type", "commit"}, {"job_id", id_}, {"lease", lease}});
  ASSERT_TRUE(ch_->Take("commit_ack").at(0)["granted"].get<bool>());
  dispatcher_->OnMessage(1, {{"type", "done"}, {"job_id", id_}, {"lease", lease}});
  EXPECT_EQ(Record().state, JobState::kDone);
}

TEST_F(ProtocolRulesTest, TheJobMessageAssignsTheOutputPath) {
  Dispatched("a named job", "fox");
  EXPECT_EQ(job_.value("output", ""), "single/fox.mp4") << job_.dump();
  jobspec::RenderSpec s;
  s.prompt = "an unnamed job in a dataset";
  s.dataset = "birds";
  auto sub = queue_->Submit(s);
  ASSERT_TRUE(sub.ok());
  dispatcher_->OnMessage(1, {{"type", "commit"}, {"job_id", id_}, {"lease", job_["lease"]}});
  dispatcher_->OnMessage(1, {{"type", "done"}, {"job_id", id_}, {"lease", job_["lease"]}});
  dispatcher_->OnMessage(1, {{"type", "ready"}});
  auto jobs = ch_->Take("job");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].value("output", ""), "birds/" + sub->id + ".mp4") << jobs[0].dump();
}

TEST_F(ProtocolRulesTest, TheOutputPathIsTheCoordinatorsNotTheWorkers) {
  const std::string lease = Dispatched("a victim", "fox");
  dispatcher_->OnMessage(1, {{"type", "commit"}, {"job_id", id_}, {"lease", lease}});
  dispatcher_->OnMessage(1, {{"type", "done"}, {"job_id", id_}, {"lease", lease},
                             {"output", "single/0123456789abcdef0123456789abcdef.mp4"},
                             {"manifest", "../../etc/passwd"}});
  const JobRecord r = Record();
  EXPECT_EQ(r.state, JobState::kDone);
  EXPECT_EQ(r.output, "single/fox.mp4");
  EXPECT_EQ(r.manifest, "single/fox.json");
}

TEST_F(ProtocolRulesTest, HeartbeatFieldsAreBounded) {
  const std::string lease = Dispatched("a forged heartbeat");
  dispatcher_->OnMessage(1, {{"type", "heartbeat"}, {"job_id", id_}, {"lease", lease}, {"step", 1000000000},
                             {"steps", 1000000000}, {"stage", std::string(500, 'x') + "\x01"}});
  const JobRecord r = Record();
  EXPECT_LE(r.steps, protocol::kMaxJobSteps);
  EXPECT_LE(r.step, r.steps);
  EXPECT_LE(r.stage.size(), protocol::kMaxStageBytes);
  auto stats = store_.Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_LE(stats->count("steps") ? stats->at("steps") : 0, protocol::kMaxJobSteps) << "one forged heartbeat pushed the step counter";
  // Going backwards and forwards again does not count twice on one session.
  dispatcher_->OnMessage(1, {{"type", "heartbeat"}, {"job_id", id_}, {"lease", lease}, {"step", 0}, {"steps", 1000}});
  dispatcher_->OnMessage(1, {{"type", "heartbeat"}, {"job_id", id_}, {"lease", lease}, {"step", 1000}, {"steps", 1000}});
  EXPECT_LE(store_.Stats()->count("steps") ? store_.Stats()->at("steps") : 0, protocol::kMaxJobSteps);
}

TEST_F(ProtocolRulesTest, ErrorTextsAreCutOnACharacterBoundary) {
  const std::string lease = Dispatched("a long error");
  std::string error = "x";
  for (int i = 0; i < 3000; ++i) error += "\xc3\xa9";  // 'é': 4096 falls inside a character
  dispatcher_->OnMessage(1, {{"type", "failed"}, {"job_id", id_}, {"lease", lease}, {"error", error},
                             {"retryable", false}});
  const JobRecord r = Record();
  EXPECT_EQ(r.state, JobState::kFailed);
  EXPECT_LE(r.error.size(), protocol::kMaxErrorBytes);
  EXPECT_TRUE(IsValidUtf8(r.error));
  EXPECT_NO_THROW(Json(r.error).dump());
}

TEST_F(ProtocolRulesTest, ACancelledGroupIsStoppingNotIdle) {
  const std::string lease = Dispatched("a long render");
  ASSERT_TRUE(queue_->Cancel(id_).ok());
  dispatcher_->OnMessage(1, {{"type", "heartbeat"}, {"job_id", id_}, {"lease", lease}, {"step", 0}, {"steps", 8}});
  EXPECT_TRUE(ch_->Take("heartbeat_ack").at(0)["cancel"].get<bool>());
  EXPECT_EQ(dispatcher_->WorkersJson()[0]["state"], "stopping") << "the group still computes until it answers";
  EXPECT_EQ(dispatcher_->snapshot().busy, 1);
  dispatcher_->OnMessage(1, {{"type", "failed"}, {"job_id", id_}, {"lease", lease}, {"error", "cancelled"},
                             {"retryable", false}});
  EXPECT_EQ(dispatcher_->WorkersJson()[0]["state"], "idle");
}

TEST_F(ProtocolRulesTest, HelloWithoutTheSecretIsRefused) {
  auto ch = std::make_shared<Channel>();
  dispatcher_->OnConnect(7, ch);
  dispatcher_->OnMessage(7, {{"type", "hello"}, {"model", "tiny"}});
  EXPECT_TRUE(ch->closed);
  EXPECT_FALSE(dispatcher_->Authenticated(7));
}

TEST(LeaseTokens, ComeFromTheKernelsRandomSource) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    auto r = RandomHex(16);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->size(), 32u);
    seen.insert(*r);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(Tokens, BlankTokensAreRefused) {
  EXPECT_FALSE(CheckTokenText("", "--token").ok());
  EXPECT_FALSE(CheckTokenText("   ", "--token").ok());
  EXPECT_FALSE(CheckTokenText("a\nb", "--token").ok());
  EXPECT_TRUE(CheckTokenText("s3cret", "--token").ok());
}

}  // namespace
}  // namespace stas::coordinator

// RedisClient and the job queue on a real redis-server (each test starts its own on a free loopback port
// with a temporary folder, or uses REDIS_URL with a unique key prefix). Skipped when redis-server is
// not installed (a failure instead when STAS_REQUIRE_REDIS is set, as in CI).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "coordinator/job_queue.h"
#include "coordinator/redis_client.h"
#include "coordinator/redis_job_store.h"
#include "support/optional_dependency.h"
#include "support/redis_test_server.h"

namespace stas::coordinator {
namespace {

using namespace std::chrono_literals;

jobspec::RenderSpec Spec(const std::string& prompt, uint64_t seed = 0) {
  jobspec::RenderSpec s;
  s.prompt = prompt;
  s.seed = seed;
  s.model = "tiny";
  return s;
}

RedisOptions OptionsFor(const testing::RedisTestServer& server) {
  RedisOptions o = *ParseRedisUrl(server.url());
  o.key_prefix = server.prefix();
  o.backoff_initial_ms = 20;
  o.backoff_max_ms = 200;
  return o;
}

// Skips without Redis, or fails when STAS_REQUIRE_REDIS is set (CI).
#define REQUIRE_REDIS(server)                                  \
  STAS_NEEDS_REDIS(STAS_HAVE_REDIS, "built without Redis");    \
  STAS_NEEDS_REDIS((server).available(), "redis-server is not installed")

class RedisQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_REDIS(server_);
    client_ = std::make_shared<RedisClient>(OptionsFor(server_));
    store_ = std::make_unique<RedisJobStore>(client_);
    ASSERT_TRUE(store_->Initialize().ok());
    ASSERT_TRUE(store_->Initialize().ok()) << "idempotent";
    options_.lease_ms = 300;
    options_.max_attempts = 3;
    options_.backoff_initial_ms = 0;
    options_.backoff_max_ms = 0;
    queue_ = std::make_unique<JobQueue>(store_.get(), DefaultClock(), options_);
  }

  int64_t Integer(const std::vector<std::string>& argv) {
    auto r = client_->Command(argv);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r->AsInteger() : -1;
  }

  int64_t Stat(const std::string& name) {
    auto stats = store_->Stats();
    EXPECT_TRUE(stats.ok()) << stats.status().ToString();
    auto it = stats->find(name);
    return it == stats->end() ? 0 : it->second;
  }

  Assignment StartNext(const std::string& worker = "g") {
    auto a = queue_->StartNext("tiny", worker);
    EXPECT_TRUE(a.ok() && a->has_value()) << (a.ok() ? "empty queue" : a.status().ToString());
    return **a;
  }

  int64_t Ready(const std::string& queue = "tiny") { return Integer({"ZCARD", store_->ReadyKey(queue)}); }

  testing::RedisTestServer server_;
  std::shared_ptr<RedisClient> client_;
  std::unique_ptr<RedisJobStore> store_;
  QueueOptions options_;
  std::unique_ptr<JobQueue> queue_;
};

TEST_F(RedisQueueTest, CommandsAreBinarySafeAndUseThePrefix) {
  const std::string value("a\0b\r\n\xff", 6);
  ASSERT_TRUE(client_->Command({"SET", client_->Key("bin"), value}).ok());
  auto got = client_->Command({"GET", client_->Key("bin")});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->str, value);
  EXPECT_EQ(client_->Key("bin"), server_.prefix() + "bin");
  auto missing = client_->Command({"GET", client_->Key("missing")});
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->is_nil());
  auto wrong = client_->Command({"LPUSH", client_->Key("bin"), "x"});
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kInternal);
  EXPECT_TRUE(IsRedisError(wrong.status(), "WRONGTYPE")) << wrong.status().ToString();
  auto replies = client_->Pipeline({{"INCR", client_->Key("n")}, {"INCR", client_->Key("n")}, {"LPUSH", client_->Key("bin"), "x"}});
  ASSERT_TRUE(replies.ok());
  EXPECT_EQ(*(*replies)[1]->AsInteger(), 2);
  EXPECT_FALSE((*replies)[2].ok());
  // Scripts survive the server forgetting them (SCRIPT FLUSH, as after a restart).
  const std::string script = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
  EXPECT_EQ(*client_->Eval(script, {client_->Key("n")}, {"10"})->AsInteger(), 12);
  ASSERT_TRUE(client_->Command({"SCRIPT", "FLUSH"}).ok());
  EXPECT_EQ(*client_->Eval(script, {client_->Key("n")}, {"10"})->AsInteger(), 22);
}

TEST_F(RedisQueueTest, SubmitStartAndComplete) {
  auto sub = queue_->Submit(Spec("a heron"));
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  EXPECT_EQ(Ready(), 1);
  EXPECT_EQ(Integer({"ZCARD", client_->Key("state:queued")}), 1);
  Assignment a = StartNext();
  EXPECT_EQ(a.spec["prompt"], "a heron");
  EXPECT_EQ(Integer({"ZCARD", client_->Key("state:queued")}), 0);
  EXPECT_EQ(Integer({"ZCARD", client_->Key("state:running")}), 1);
  EXPECT_EQ(Ready(), 0);
  auto lease = client_->Command({"GET", store_->LeaseKey(a.job_id)});
  EXPECT_EQ(lease->str, a.lease);
  const int64_t ttl = Integer({"PTTL", store_->LeaseKey(a.job_id)});
  EXPECT_GT(ttl, 0);
  EXPECT_LE(ttl, options_.lease_ms);
  EXPECT_EQ(*queue_->Heartbeat(a.job_id, a.lease, 2, 4, "denoise"), HeartbeatOutcome::kRenewed);
  EXPECT_EQ(*queue_->Heartbeat(a.job_id, "forged", 2, 4, "denoise"), HeartbeatOutcome::kLeaseLost);
  EXPECT_TRUE(*queue_->GrantCommit(a.job_id, a.lease));
  EXPECT_EQ(*queue_->Complete(a.job_id, a.lease, "single/h.mp4", "", Json()), CompleteOutcome::kCompleted);
  EXPECT_EQ(Integer({"EXISTS", store_->LeaseKey(a.job_id)}), 0);
  EXPECT_EQ(Integer({"ZCARD", client_->Key("state:done")}), 1);
  auto rec = queue_->Get(a.job_id);
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->state, JobState::kDone);
  EXPECT_EQ((*rec)->output, "single/h.mp4");
  EXPECT_EQ((*rec)->step, 4);
  EXPECT_EQ(Stat("completed"), 1);
  EXPECT_EQ(Stat("steps"), 4) << "2 by heartbeat, the last 2 at completion";
}

TEST_F(RedisQueueTest, AThousandDuplicateSubmissionsMakeOneJob) {
  auto first = queue_->Submit(Spec("same"));
  ASSERT_TRUE(first.ok());
  for (int i = 0; i < 1000; ++i) {
    jobspec::RenderSpec s = Spec("same");
    s.priority = i % 3;
    auto r = queue_->Submit(s);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->id, first->id);
    ASSERT_EQ(r->outcome, SubmitOutcome::kExisting);
  }
  EXPECT_EQ(Ready(), 1);
  EXPECT_EQ(*store_->Count(IndexRef::All()), 1);
  EXPECT_EQ(*store_->Count(IndexRef::State(JobState::kQueued)), 1);
  EXPECT_EQ(Stat("submitted"), 1);
}

TEST_F(RedisQueueTest, ConcurrentSubmittersAndStartersNeverDoubleUp) {
  // Two coordinators (separate connections) race on the same jobs and the same queue head.
  auto other_client = std::make_shared<RedisClient>(OptionsFor(server_));
  RedisJobStore other_store(other_client);
  JobQueue other(&other_store, DefaultClock(), options_);
  std::atomic<int> created{0};
  auto submit = [&](JobQueue* q) {
    for (int i = 0; i < 200; ++i) {
      auto r = q->Submit(Spec("race " + std::to_string(i)));
      if (r.ok() && r->outcome == SubmitOutcome::kCreated) ++created;
    }
  };
  std::thread t1(submit, queue_.get()), t2(submit, &other);
  t1.join();
  t2.join();
  EXPECT_EQ(created.load(), 200);
  EXPECT_EQ(Ready(), 200);
  std::set<std::string> started;
  std::mutex mu;
  std::atomic<int> duplicates{0};
  auto start = [&](JobQueue* q, const std::string& worker) {
    while (true) {
      auto a = q->StartNext("tiny", worker);
      ASSERT_TRUE(a.ok()) << a.status().ToString();
      if (!a->has_value()) return;
      std::lock_guard<std::mutex> lock(mu);
      if (!started.insert((*a)->job_id).second) ++duplicates;
    }
  };
  std::thread s1(start, queue_.get(), "g1"), s2(start, &other, "g2");
  s1.join();
  s2.join();
  EXPECT_EQ(started.size(), 200u);
  EXPECT_EQ(duplicates.load(), 0) << "a queue head starts one attempt";
}

TEST_F(RedisQueueTest, ReadyQueuesHoldPriorityOverABacklogAndCancelRemovesAtOnce) {
  std::vector<std::string> backlog;
  for (int i = 0; i < 200; ++i) backlog.push_back(queue_->Submit(Spec("low " + std::to_string(i)))->id);
  jobspec::RenderSpec high = Spec("high");
  high.priority = 100;
  const std::string high_id = queue_->Submit(high)->id;
  jobspec::RenderSpec unserved = Spec("unserved");
  unserved.model = "/ckpt/Wan2.1-T2V-1.3B-Diffusers";
  ASSERT_TRUE(queue_->Submit(unserved).ok());
  auto depths = *store_->ReadyDepths();
  EXPECT_EQ(depths["tiny"], 201);
  EXPECT_EQ(depths["Wan2.1-T2V-1.3B-Diffusers"], 1);
  // The dispatcher's look-ahead reads the queue in pop order without taking anything.
  EXPECT_EQ(*store_->ReadyHead("tiny", 3), (std::vector<std::string>{high_id, backlog[0], backlog[1]}));
  EXPECT_EQ(*queue_->UpcomingPrompts("tiny", 2), (std::vector<std::string>{"high", "low 0"}));
  EXPECT_TRUE(store_->ReadyHead("no-such-model", 3)->empty());
  EXPECT_EQ(store_->ReadyDepths()->at("tiny"), 201);
  EXPECT_EQ(StartNext().job_id, high_id) << "priority 100 goes first, behind 200 priority-0 jobs";
  EXPECT_EQ(StartNext().job_id, backlog[0]) << "then the oldest";
  for (size_t i = 1; i < backlog.size(); ++i) ASSERT_EQ(queue_->Cancel(backlog[i])->first, CancelOutcome::kCancelled);
  EXPECT_EQ(Ready(), 0) << "cancelled jobs leave the queue at once";
  const std::string fresh = queue_->Submit(Spec("fresh"))->id;
  EXPECT_EQ(StartNext().job_id, fresh);
  // Delete removes the queue entry too; a record without one is repaired at start-up.
  const std::string gone = queue_->Submit(Spec("gone"))->id;
  ASSERT_TRUE(*queue_->Delete(gone));
  EXPECT_EQ(Ready(), 0);
  const std::string orphan = queue_->Submit(Spec("orphan"))->id;
  ASSERT_EQ(Integer({"ZREM", store_->ReadyKey("tiny"), orphan}), 1);
  EXPECT_EQ(*store_->RepairReadyQueues(), 1);
  EXPECT_EQ(*store_->RepairReadyQueues(), 0);
  EXPECT_EQ(StartNext().job_id, orphan);
}

TEST_F(RedisQueueTest, BatchesIndexesCursorsAndCounts) {
  std::vector<SubmitItem> items;
  for (int i = 0; i < 1200; ++i) {  // more than one script chunk
    jobspec::RenderSpec s = Spec("batch " + std::to_string(i));
    s.dataset = i % 2 ? "odd" : "even";
    items.push_back({s, Json()});
  }
  auto first = queue_->SubmitMany(items);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  for (const auto& r : *first) ASSERT_EQ(r.outcome, SubmitOutcome::kCreated);
  EXPECT_EQ(Ready(), 1200);
  EXPECT_EQ(Stat("submitted"), 1200);
  auto again = queue_->SubmitMany(items);
  ASSERT_TRUE(again.ok());
  for (const auto& r : *again) ASSERT_EQ(r.outcome, SubmitOutcome::kExisting);
  EXPECT_EQ(*store_->Count(IndexRef::All()), 1200);
  EXPECT_EQ(Stat("submitted"), 1200);
  // Move a few through states and check the dataset x state index and the counts.
  for (int i = 0; i < 3; ++i) StartNext();
  const std::string cancelled = first->at(10).id;
  ASSERT_EQ(queue_->Cancel(cancelled)->first, CancelOutcome::kCancelled);
  auto even = *queue_->Counts("even");
  EXPECT_EQ(even[JobState::kRunning], 2);
  EXPECT_EQ(even[JobState::kCancelled], 1);
  EXPECT_EQ(even[JobState::kQueued], 597);
  EXPECT_EQ(Integer({"ZCARD", client_->Key("dstate:queued:even")}), 597);
  EXPECT_EQ(queue_->Counts("")->at(JobState::kQueued), 1196);
  // Cursor pages cover every queued even job exactly once.
  std::set<std::string> seen;
  ListQuery q{JobState::kQueued, "even", 0, "", 100};
  for (int page = 0; page < 20; ++page) {
    auto records = queue_->List(q);
    ASSERT_TRUE(records.ok()) << records.status().ToString();
    for (const auto& r : *records) {
      EXPECT_EQ(r.state, JobState::kQueued);
      EXPECT_EQ(r.dataset, "even");
      EXPECT_TRUE(seen.insert(r.id).second) << "no id twice";
    }
    if (records->size() < 100) break;
    q.after = records->back().id;
  }
  EXPECT_EQ(seen.size(), 597u);
  // A cursor that left the index (cancelled) still finds its place.
  auto from_cancelled = store_->ListIdsAfter(IndexRef::DatasetState("even", JobState::kQueued), cancelled, 5000);
  ASSERT_TRUE(from_cancelled.ok()) << from_cancelled.status().ToString();
  auto from_cancelled_asc =
      store_->ListIdsAfter(IndexRef::DatasetState("even", JobState::kQueued), cancelled, 5000, true);
  ASSERT_TRUE(from_cancelled_asc.ok());
  EXPECT_EQ(from_cancelled->size() + from_cancelled_asc->size(), 597u);
  EXPECT_EQ(store_->ListIdsAfter(IndexRef::All(), "0123456789abcdef0123456789abcdef", 5).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(RedisQueueTest, BatchCreationStoresWhatOneByOneSubmissionStores) {
  // One job through Submit (a transition script), its twin (other prompt) through SubmitMany (the batch
  // create script): the same fields, indexes, ready-queue order and counters.
  jobspec::RenderSpec single = Spec("single heron");
  single.dataset = "twins";
  single.priority = 5;
  single.negative_prompt = "blurry";
  auto one = queue_->Submit(single);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  std::vector<SubmitItem> items;
  for (int i = 0; i < 6; ++i) {
    jobspec::RenderSpec s = single;
    s.prompt = "batch heron " + std::to_string(i);
    s.priority = i % 2 ? 5 : 0;
    items.push_back({s, Json()});
  }
  items.push_back({single, Json()});  // exists already: answered, not re-created
  auto many = queue_->SubmitMany(items);
  ASSERT_TRUE(many.ok()) << many.status().ToString();
  EXPECT_EQ(many->back().outcome, SubmitOutcome::kExisting);
  auto fields = [&](const std::string& id) {
    std::map<std::string, std::string> out;
    auto r = client_->Command({"HGETALL", store_->JobKey(id)});
    for (size_t i = 0; r.ok() && i + 1 < r->elements.size(); i += 2) out[r->elements[i].AsString()] = r->elements[i + 1].AsString();
    return out;
  };
  auto a = fields(one->id), b = fields(many->at(1).id);
  std::set<std::string> names_a, names_b;
  for (const auto& [k, v] : a) names_a.insert(k);
  for (const auto& [k, v] : b) names_b.insert(k);
  EXPECT_EQ(names_a, names_b);
  for (const char* k : {"s", "m", "d", "p"}) EXPECT_EQ(a[k], b[k]) << k;
  EXPECT_EQ(b["c"], b["u"]);
  Json spec_a = Json::parse(a["j"]), spec_b = Json::parse(b["j"]);
  spec_b["prompt"] = spec_a["prompt"];
  EXPECT_EQ(spec_a, spec_b) << "the same compact spec";
  // Read back, the batch-made record is the full spec again.
  auto rec = queue_->Get(many->at(1).id);
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ(Json::parse((*rec)->spec), items[1].spec.ToJson());
  EXPECT_EQ(Stat("submitted"), 7);
  EXPECT_EQ(Ready(), 7);
  EXPECT_EQ(*store_->Count(IndexRef::DatasetState("twins", JobState::kQueued)), 7);
  EXPECT_EQ(*store_->Count(IndexRef::State(JobState::kQueued)), 7);
  EXPECT_EQ(*store_->Count(IndexRef::All()), 7);
  EXPECT_EQ(Integer({"SISMEMBER", client_->Key("queues"), "tiny"}), 1);
  EXPECT_EQ(Integer({"ZCARD", client_->Key("datasets")}), 1);
  // Priority 5 first (the single one, then the batch's odd ones in order), then priority 0 in order.
  std::vector<std::string> expected = {one->id, many->at(1).id, many->at(3).id, many->at(5).id,
                                       many->at(0).id, many->at(2).id, many->at(4).id};
  for (const auto& id : expected) EXPECT_EQ(StartNext().job_id, id);
  // A listing may leave the spec compact; it still holds the prompt.
  ListQuery q{JobState::kRunning, "twins", 0, "", 100};
  q.prompt_only = true;
  auto listed = queue_->List(q);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 7u);
  for (const auto& r : *listed) EXPECT_TRUE(Json::parse(r.spec).value("prompt", "").find("heron") != std::string::npos);
}

TEST_F(RedisQueueTest, AQueuedJobTakesLittleRedisMemory) {
  // Field names are short and empty fields absent, so a queued job stays well under 1.5 KB.
  jobspec::RenderSpec s = Spec("a heron standing in a misty river at dawn, cinematic lighting");
  s.dataset = "herons";
  auto sub = queue_->Submit(s);
  ASSERT_TRUE(sub.ok());
  auto fields = client_->Command({"HGETALL", store_->JobKey(sub->id)});
  ASSERT_TRUE(fields.ok());
  std::set<std::string> names;
  for (size_t i = 0; i < fields->elements.size(); i += 2) names.insert(fields->elements[i].AsString());
  EXPECT_EQ(names, (std::set<std::string>{"s", "j", "m", "d", "c", "u"}));
  EXPECT_LT(Integer({"MEMORY", "USAGE", store_->JobKey(sub->id)}), 900);
  auto rec = queue_->Get(sub->id);
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->dataset, "herons");
  EXPECT_EQ((*rec)->attempts, 0);
}

TEST_F(RedisQueueTest, ExpiredLeasesAreReapedAndDeadLetteredAfterMaxAttempts) {
  auto sub = queue_->Submit(Spec("doomed"));
  LeaseReaper reaper(queue_.get(), DefaultClock(), 0);
  for (int attempt = 1; attempt <= 3; ++attempt) {
    ASSERT_EQ(*queue_->PromoteDue(), attempt == 1 ? 0 : 1);
    Assignment a = StartNext();
    EXPECT_EQ(a.attempt, attempt);
    EXPECT_EQ(*reaper.Tick(), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(options_.lease_ms + 100));
    EXPECT_FALSE((*store_->LeasesAlive({a.job_id}))[0]);
    EXPECT_EQ(*reaper.Tick(), 1);
  }
  auto rec = queue_->Get(sub->id);
  EXPECT_EQ((*rec)->state, JobState::kDead);
  EXPECT_EQ(Integer({"XLEN", store_->DeadKey()}), 1);
  auto dead = store_->DeadLetters(5);
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ(dead->at(0).job_id, sub->id);
  EXPECT_EQ(dead->at(0).attempts, 3);
  EXPECT_NE(dead->at(0).reason.find("lease expired"), std::string::npos);
  EXPECT_EQ(Stat("lease_expired"), 3);
  EXPECT_EQ(Ready(), 0);
  EXPECT_EQ(Integer({"ZCARD", client_->Key("delayed")}), 0);
}

TEST_F(RedisQueueTest, RetriesWaitInTheDelayedSet) {
  options_.backoff_initial_ms = 200;
  options_.backoff_max_ms = 200;
  queue_ = std::make_unique<JobQueue>(store_.get(), DefaultClock(), options_);
  auto sub = queue_->Submit(Spec("flaky"));
  Assignment a = StartNext();
  ASSERT_EQ(*queue_->Fail(a.job_id, a.lease, "transient", true), FailOutcome::kRetryScheduled);
  EXPECT_EQ(Integer({"ZCARD", client_->Key("delayed")}), 1);
  EXPECT_EQ(*queue_->PromoteDue(), 0);
  EXPECT_EQ(Ready(), 0);
  EXPECT_FALSE(queue_->StartNext("tiny", "g")->has_value());
  std::this_thread::sleep_for(250ms);
  EXPECT_EQ(*queue_->PromoteDue(), 1);
  Assignment b = StartNext();
  EXPECT_EQ(b.attempt, 2);
  EXPECT_EQ(b.resume["previous_attempts"], 1);
}

TEST_F(RedisQueueTest, AHeartbeatRecreatesAnExpiredLeaseKey) {
  ASSERT_TRUE(queue_->Submit(Spec("survivor")).ok());
  Assignment a = StartNext();
  std::this_thread::sleep_for(std::chrono::milliseconds(options_.lease_ms + 100));
  EXPECT_EQ(Integer({"EXISTS", store_->LeaseKey(a.job_id)}), 0);
  EXPECT_EQ(*queue_->Heartbeat(a.job_id, a.lease, 1, 4, "denoise"), HeartbeatOutcome::kRenewed);
  EXPECT_EQ(Integer({"EXISTS", store_->LeaseKey(a.job_id)}), 1);
  LeaseReaper reaper(queue_.get(), DefaultClock(), 0);
  EXPECT_EQ(*reaper.Tick(), 0);
}

TEST_F(RedisQueueTest, CancelListAndDelete) {
  jobspec::RenderSpec s = Spec("one");
  s.dataset = "d1";
  auto one = queue_->Submit(s);
  s.prompt = "two";
  auto two = queue_->Submit(s);
  ASSERT_EQ(queue_->List({std::nullopt, "d1", 0, "", 10})->size(), 2u);
  ASSERT_EQ(queue_->Cancel(one->id)->first, CancelOutcome::kCancelled);
  EXPECT_EQ(queue_->List({JobState::kCancelled, "d1", 0, "", 10})->size(), 1u);
  EXPECT_EQ(queue_->List({JobState::kQueued, "", 0, "", 10})->size(), 1u);
  EXPECT_EQ(Ready(), 1) << "the cancelled job left its queue";
  ASSERT_TRUE(*queue_->Delete(two->id));
  EXPECT_FALSE(*queue_->Delete(two->id));
  EXPECT_EQ(queue_->List({std::nullopt, "d1", 0, "", 10})->size(), 1u);
  EXPECT_EQ(Ready(), 0);
  EXPECT_EQ(Integer({"ZCARD", client_->Key("dstate:queued:d1")}), 0);
  EXPECT_EQ(*store_->Datasets(), std::vector<std::string>{"d1"});
}

// ------------------------------------------------------------------------ connection failure paths

TEST(RedisClientTest, AnUnreachableServerIsUnavailableNotACrash) {
  STAS_NEEDS_REDIS(STAS_HAVE_REDIS, "built without Redis");
  RedisOptions o;
  o.port = testing::FreeLoopbackPort();
  o.backoff_initial_ms = 500;
  RedisClient client(o);
  auto r = client.Command({"PING"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("unreachable"), std::string::npos) << r.status().message();
  const auto start = std::chrono::steady_clock::now();
  auto again = client.Command({"PING"});
  EXPECT_EQ(again.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(again.status().message().find("next attempt"), std::string::npos) << "fails fast during the backoff";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 100ms);
  RedisJobStore store(std::make_shared<RedisClient>(o));
  EXPECT_EQ(store.Initialize().code(), StatusCode::kUnavailable);
}

TEST(RedisClientTest, AuthIsSentAndWrongPasswordsAreReported) {
  testing::RedisTestServer::Options so;
  so.password = "pa ss\"word";
  testing::RedisTestServer server(so);
  REQUIRE_REDIS(server);
  if (server.external()) GTEST_SKIP() << "needs its own server";
  RedisOptions o = OptionsFor(server);
  RedisClient anonymous(o);
  auto denied = anonymous.Command({"SET", "k", "v"});
  ASSERT_FALSE(denied.ok());
  EXPECT_NE(denied.status().message().find("NOAUTH"), std::string::npos) << denied.status().message();
  o.password = "wrong";
  RedisClient wrong(o);
  auto bad = wrong.Ping();
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.code(), StatusCode::kUnavailable);
  EXPECT_NE(bad.message().find("AUTH failed"), std::string::npos) << bad.message();
  o.password = so.password;
  RedisClient right(o);
  EXPECT_TRUE(right.Ping().ok());
  auto url = ParseRedisUrl("redis://:pa%20ss%22word@127.0.0.1:" + std::to_string(server.port()));
  ASSERT_TRUE(url.ok());
  EXPECT_TRUE(RedisClient(*url).Ping().ok());
}

TEST(RedisClientTest, ReconnectsAfterTheServerRestartsAndAofKeepsTheQueue) {
  testing::RedisTestServer::Options so;
  so.appendonly = true;
  testing::RedisTestServer server(so);
  REQUIRE_REDIS(server);
  if (server.external()) GTEST_SKIP() << "needs its own server";
  auto client = std::make_shared<RedisClient>(OptionsFor(server));
  RedisJobStore store(client);
  ASSERT_TRUE(store.Initialize().ok());
  JobQueue queue(&store, DefaultClock(), QueueOptions{});
  auto sub = queue.Submit(Spec("persistent"));
  ASSERT_TRUE(sub.ok());
  server.Stop();
  auto down = queue.Get(sub->id);
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.status().code(), StatusCode::kUnavailable);
  ASSERT_TRUE(server.Start());
  Status ping = Unavailable("not yet");
  for (int i = 0; i < 50 && !ping.ok(); ++i) {
    ping = client->Ping();
    if (!ping.ok()) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(ping.ok()) << ping.ToString();
  auto back = queue.Get(sub->id);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_TRUE(back->has_value()) << "the append-only file kept the job";
  EXPECT_EQ((*back)->state, JobState::kQueued);
  auto next = queue.StartNext("tiny", "g");
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  ASSERT_TRUE(next->has_value()) << "and its ready queue";
  EXPECT_EQ((*next)->job_id, sub->id);
}

}  // namespace
}  // namespace stas::coordinator

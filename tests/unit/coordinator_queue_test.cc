// Job queue policy (leases, reaper, backoff, dead-lettering, idempotency, cancellation) and the
// dispatcher's protocol handling, on the in-memory store with a fake clock: no Redis, no sockets, no
// sleeping.
#include <gtest/gtest.h>

#include <set>

#include "coordinator/dispatcher.h"
#include "coordinator/job_queue.h"
#include "coordinator/memory_job_store.h"

namespace stas::coordinator {
namespace {

jobspec::RenderSpec Spec(const std::string& prompt, uint64_t seed = 0) {
  jobspec::RenderSpec s;
  s.prompt = prompt;
  s.seed = seed;
  s.model = "tiny";
  return s;
}

class QueueTest : public ::testing::Test {
 protected:
  QueueTest() : store_(&clock_) {
    options_.lease_ms = 10000;
    options_.max_attempts = 3;
    options_.backoff_initial_ms = 1000;
    options_.backoff_max_ms = 3000;
    queue_ = std::make_unique<JobQueue>(&store_, &clock_, options_);
  }

  // Starts the next job of the "tiny" ready queue for `worker`.
  Assignment StartNext(const std::string& worker = "g1") {
    auto a = queue_->StartNext("tiny", worker);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    EXPECT_TRUE(a->has_value());
    return **a;
  }

  int64_t Stat(const std::string& name) {
    auto stats = store_.Stats();
    EXPECT_TRUE(stats.ok());
    auto it = stats->find(name);
    return it == stats->end() ? 0 : it->second;
  }

  JobRecord Record(const std::string& id) {
    auto r = queue_->Get(id);
    EXPECT_TRUE(r.ok() && r->has_value());
    return **r;
  }

  FakeClock clock_;
  MemoryJobStore store_;
  QueueOptions options_;
  std::unique_ptr<JobQueue> queue_;
};

TEST_F(QueueTest, SubmitCreatesAQueuedJobInItsModelsReadyQueue) {
  auto r = queue_->Submit(Spec("a cat"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->outcome, SubmitOutcome::kCreated);
  EXPECT_EQ(r->id, Spec("a cat").JobId());
  const JobRecord rec = Record(r->id);
  EXPECT_EQ(rec.state, JobState::kQueued);
  EXPECT_EQ(rec.attempts, 0);
  EXPECT_EQ(rec.created_ms, clock_.NowMs());
  EXPECT_EQ(store_.ReadyLength(), 1u);
  EXPECT_EQ(store_.ReadyDepths()->at("tiny"), 1);
  EXPECT_EQ(Stat("submitted"), 1);
}

TEST_F(QueueTest, ResubmittingTheSameJobIsANoOpReturningTheSameId) {
  const auto first = queue_->Submit(Spec("a cat"));
  ASSERT_TRUE(first.ok());
  for (int i = 0; i < 1000; ++i) {
    jobspec::RenderSpec s = Spec("a cat");
    s.priority = i % 7;  // priority, dataset and output name are not part of the identity
    s.dataset = i % 2 ? "other" : "";
    auto r = queue_->Submit(s);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->id, first->id);
    EXPECT_EQ(r->outcome, SubmitOutcome::kExisting);
  }
  EXPECT_EQ(store_.ReadyLength(), 1u);
  EXPECT_EQ(*store_.Count(IndexRef::All()), 1);
  EXPECT_EQ(Stat("submitted"), 1);
  auto other = queue_->Submit(Spec("a cat", 7));
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->id, first->id);
}

TEST_F(QueueTest, ResubmittingAFailedJobRequeuesIt) {
  auto sub = queue_->Submit(Spec("x"));
  ASSERT_TRUE(sub.ok());
  Assignment a = StartNext();
  ASSERT_EQ(*queue_->Fail(a.job_id, a.lease, "bad weights", false), FailOutcome::kFailed);
  EXPECT_EQ(Record(sub->id).state, JobState::kFailed);
  EXPECT_EQ(store_.ReadyLength(), 0u);
  auto again = queue_->Submit(Spec("x"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->outcome, SubmitOutcome::kResubmitted);
  const JobRecord rec = Record(sub->id);
  EXPECT_EQ(rec.state, JobState::kQueued);
  EXPECT_EQ(rec.attempts, 0);
  EXPECT_TRUE(rec.error.empty());
  EXPECT_EQ(store_.ReadyLength(), 1u);
  // And a done job stays done.
  Assignment b = StartNext();
  ASSERT_TRUE(*queue_->GrantCommit(b.job_id, b.lease));
  ASSERT_EQ(*queue_->Complete(b.job_id, b.lease, "single/x.mp4", "", Json()), CompleteOutcome::kCompleted);
  auto third = queue_->Submit(Spec("x"));
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->outcome, SubmitOutcome::kExisting);
  EXPECT_EQ(Record(sub->id).state, JobState::kDone);
}

TEST_F(QueueTest, LeaseFencingLetsOnlyTheCurrentTokenCommitAndComplete) {
  auto sub = queue_->Submit(Spec("x"));
  ASSERT_TRUE(sub.ok());
  Assignment a = StartNext("g1");
  EXPECT_EQ(a.attempt, 1);
  EXPECT_TRUE(a.resume.is_null());
  EXPECT_EQ(a.spec["prompt"], "x");
  JobRecord rec = Record(a.job_id);
  EXPECT_EQ(rec.state, JobState::kRunning);
  EXPECT_EQ(rec.lease, a.lease);
  EXPECT_EQ(rec.worker, "g1");

  EXPECT_EQ(*queue_->Heartbeat(a.job_id, a.lease, 3, 8, "denoise"), HeartbeatOutcome::kRenewed);
  EXPECT_EQ(*queue_->Heartbeat(a.job_id, "forged", 4, 8, "denoise"), HeartbeatOutcome::kLeaseLost);
  EXPECT_EQ(*queue_->Heartbeat("ffffffffffffffffffffffffffffffff", a.lease, 1, 8, ""), HeartbeatOutcome::kUnknownJob);
  rec = Record(a.job_id);
  EXPECT_EQ(rec.step, 3);
  EXPECT_EQ(rec.steps, 8);
  EXPECT_EQ(rec.stage, "denoise");
  EXPECT_EQ(Stat("steps"), 3);

  EXPECT_FALSE(*queue_->GrantCommit(a.job_id, "forged"));
  EXPECT_TRUE(*queue_->GrantCommit(a.job_id, a.lease));
  EXPECT_EQ(*queue_->Complete(a.job_id, "forged", "single/x.mp4", "", Json()), CompleteOutcome::kRejected);
  EXPECT_EQ(*queue_->Complete(a.job_id, a.lease, "single/x.mp4", "single/x.json", Json{{"total_s", 1.5}}),
            CompleteOutcome::kCompleted);
  EXPECT_EQ(*queue_->Complete(a.job_id, a.lease, "single/x.mp4", "", Json()), CompleteOutcome::kRepeat);
  rec = Record(a.job_id);
  EXPECT_EQ(rec.state, JobState::kDone);
  EXPECT_EQ(rec.output, "single/x.mp4");
  EXPECT_EQ(rec.step, 8);
  EXPECT_GT(rec.finished_ms, 0);
  EXPECT_EQ(store_.ReadyLength(), 0u);
  EXPECT_EQ(Stat("completed"), 1);
}

TEST_F(QueueTest, ExpiredLeasesAreRetriedWithExponentialBackoffThenDeadLettered) {
  auto sub = queue_->Submit(Spec("x"));
  ASSERT_TRUE(sub.ok());
  LeaseReaper reaper(queue_.get(), &clock_, 0);
  const int64_t expected_backoff[] = {1000, 2000};
  for (int attempt = 1; attempt <= 3; ++attempt) {
    Assignment a = StartNext("g" + std::to_string(attempt));
    EXPECT_EQ(a.attempt, attempt);
    if (attempt > 1) {
      EXPECT_EQ(a.resume["previous_attempts"], attempt - 1);
      EXPECT_EQ(a.resume["last_worker"], "g" + std::to_string(attempt - 1));
    }
    clock_.AdvanceMs(options_.lease_ms - 1);
    EXPECT_EQ(*reaper.Tick(), 0) << "lease still valid";
    clock_.AdvanceMs(2);
    EXPECT_EQ(*reaper.Tick(), 1);
    const JobRecord rec = Record(sub->id);
    if (attempt < 3) {
      EXPECT_EQ(rec.state, JobState::kQueued);
      EXPECT_NE(rec.error.find("lease expired"), std::string::npos) << rec.error;
      EXPECT_EQ(rec.retry_at_ms, clock_.NowMs() + expected_backoff[attempt - 1]);
      EXPECT_EQ(store_.ReadyLength(), 0u) << "not dispatchable until the backoff has passed";
      EXPECT_FALSE(queue_->StartNext("tiny", "eager")->has_value());
      EXPECT_EQ(*queue_->PromoteDue(), 0);
      clock_.AdvanceMs(expected_backoff[attempt - 1]);
      EXPECT_EQ(*queue_->PromoteDue(), 1);
      EXPECT_EQ(store_.ReadyLength(), 1u);
    } else {
      EXPECT_EQ(rec.state, JobState::kDead);
    }
  }
  auto dead = store_.DeadLetters(10);
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ(dead->at(0).job_id, sub->id);
  EXPECT_EQ(dead->at(0).attempts, 3);
  auto stats = *store_.Stats();
  EXPECT_EQ(stats["lease_expired"], 3);
  EXPECT_EQ(stats["retried"], 2);
  EXPECT_EQ(stats["dead"], 1);
  EXPECT_EQ(store_.ReadyLength(), 0u);
}

TEST_F(QueueTest, BackoffDoublesAndIsCapped) {
  EXPECT_EQ(queue_->BackoffMs(1), 1000);
  EXPECT_EQ(queue_->BackoffMs(2), 2000);
  EXPECT_EQ(queue_->BackoffMs(3), 3000);
  EXPECT_EQ(queue_->BackoffMs(30), 3000);
}

TEST_F(QueueTest, ReaperWaitsOutItsGracePeriodAfterStartUp) {
  ASSERT_TRUE(queue_->Submit(Spec("x")).ok());
  Assignment a = StartNext();
  LeaseReaper reaper(queue_.get(), &clock_, 2 * options_.lease_ms);
  clock_.AdvanceMs(options_.lease_ms + 1);
  EXPECT_TRUE(reaper.in_grace());
  EXPECT_EQ(*reaper.Tick(), 0);
  clock_.AdvanceMs(options_.lease_ms);
  EXPECT_EQ(*reaper.Tick(), 1);
}

TEST_F(QueueTest, AHeartbeatAfterExpiryRenewsTheLeaseIfTheReaperHasNotActed) {
  ASSERT_TRUE(queue_->Submit(Spec("x")).ok());
  Assignment a = StartNext();
  clock_.AdvanceMs(options_.lease_ms * 3);  // e.g. the coordinator was down for a while
  EXPECT_FALSE((*store_.LeasesAlive({a.job_id}))[0]);
  EXPECT_EQ(*queue_->Heartbeat(a.job_id, a.lease, 5, 8, "denoise"), HeartbeatOutcome::kRenewed);
  EXPECT_TRUE((*store_.LeasesAlive({a.job_id}))[0]);
  LeaseReaper reaper(queue_.get(), &clock_, 0);
  EXPECT_EQ(*reaper.Tick(), 0);
  EXPECT_EQ(Record(a.job_id).state, JobState::kRunning);
}

TEST_F(QueueTest, AStalledGroupLosesItsJobAndItsCommit) {
  ASSERT_TRUE(queue_->Submit(Spec("x")).ok());
  Assignment stalled = StartNext("slow");
  LeaseReaper reaper(queue_.get(), &clock_, 0);
  clock_.AdvanceMs(options_.lease_ms + 1);
  ASSERT_EQ(*reaper.Tick(), 1);
  clock_.AdvanceMs(queue_->BackoffMs(1));
  ASSERT_EQ(*queue_->PromoteDue(), 1);
  Assignment fresh = StartNext("fast");
  EXPECT_NE(fresh.lease, stalled.lease);
  EXPECT_EQ(fresh.attempt, 2);
  // The stalled group wakes up: everything it says is refused.
  EXPECT_EQ(*queue_->Heartbeat(stalled.job_id, stalled.lease, 7, 8, "denoise"), HeartbeatOutcome::kLeaseLost);
  EXPECT_FALSE(*queue_->GrantCommit(stalled.job_id, stalled.lease));
  EXPECT_EQ(*queue_->Complete(stalled.job_id, stalled.lease, "single/x.mp4", "", Json()), CompleteOutcome::kRejected);
  EXPECT_EQ(*queue_->Fail(stalled.job_id, stalled.lease, "late", true), FailOutcome::kRejected);
  EXPECT_EQ(Record(fresh.job_id).state, JobState::kRunning);
  EXPECT_TRUE(*queue_->GrantCommit(fresh.job_id, fresh.lease));
  EXPECT_EQ(*queue_->Complete(fresh.job_id, fresh.lease, "single/x.mp4", "", Json()), CompleteOutcome::kCompleted);
  EXPECT_EQ(Record(fresh.job_id).worker, "fast");
}

TEST_F(QueueTest, RetryableFailuresRetryAndNonRetryableOnesFail) {
  auto sub = queue_->Submit(Spec("x"));
  ASSERT_TRUE(sub.ok());
  Assignment a = StartNext();
  EXPECT_EQ(*queue_->Fail(a.job_id, a.lease, "out of memory", true), FailOutcome::kRetryScheduled);
  EXPECT_EQ(Record(sub->id).state, JobState::kQueued);
  EXPECT_EQ(Record(sub->id).error, "out of memory");
  clock_.AdvanceMs(queue_->BackoffMs(1));
  ASSERT_EQ(*queue_->PromoteDue(), 1);
  Assignment b = StartNext();
  EXPECT_EQ(*queue_->Fail(b.job_id, b.lease, "corrupt checkpoint", false), FailOutcome::kFailed);
  EXPECT_EQ(Record(sub->id).state, JobState::kFailed);
  EXPECT_EQ(Stat("failed"), 1);
}

TEST_F(QueueTest, CancellationStopsQueuedAndRunningJobs) {
  auto queued = queue_->Submit(Spec("queued"));
  ASSERT_TRUE(queued.ok());
  auto c1 = queue_->Cancel(queued->id);
  ASSERT_TRUE(c1.ok());
  EXPECT_EQ(c1->first, CancelOutcome::kCancelled);
  EXPECT_EQ(c1->second.state, JobState::kCancelled);
  EXPECT_EQ(store_.ReadyLength(), 0u) << "cancelling takes the job out of its ready queue at once";
  EXPECT_FALSE(queue_->StartNext("tiny", "g")->has_value());
  EXPECT_EQ(queue_->Cancel(queued->id)->first, CancelOutcome::kAlreadyCancelled);

  auto running = queue_->Submit(Spec("running"));
  ASSERT_TRUE(running.ok());
  Assignment a = StartNext();
  EXPECT_EQ(queue_->Cancel(running->id)->first, CancelOutcome::kCancelled);
  EXPECT_EQ(*queue_->Heartbeat(a.job_id, a.lease, 2, 8, "denoise"), HeartbeatOutcome::kCancelled);
  EXPECT_FALSE(*queue_->GrantCommit(a.job_id, a.lease));

  auto done = queue_->Submit(Spec("done"));
  Assignment d = StartNext();
  ASSERT_EQ(*queue_->Complete(d.job_id, d.lease, "single/d.mp4", "", Json()), CompleteOutcome::kCompleted);
  EXPECT_EQ(queue_->Cancel(done->id)->first, CancelOutcome::kAlreadyFinished);
  EXPECT_EQ(queue_->Cancel("0123456789abcdef0123456789abcdef").status().code(), StatusCode::kNotFound);
}

TEST_F(QueueTest, ListsByStateAndDatasetNewestFirst) {
  std::vector<std::string> a_ids;
  for (int i = 0; i < 3; ++i) {
    jobspec::RenderSpec s = Spec("a" + std::to_string(i));
    s.dataset = "set-a";
    a_ids.push_back(queue_->Submit(s)->id);
    clock_.AdvanceMs(10);
  }
  for (int i = 0; i < 2; ++i) {
    jobspec::RenderSpec s = Spec("b" + std::to_string(i));
    s.dataset = "set-b";
    ASSERT_TRUE(queue_->Submit(s).ok());
    clock_.AdvanceMs(10);
  }
  StartNext();  // the oldest job of set-a
  auto queued_a = queue_->List({JobState::kQueued, "set-a", 0, "", 100});
  ASSERT_TRUE(queued_a.ok());
  ASSERT_EQ(queued_a->size(), 2u);
  EXPECT_EQ(queued_a->at(0).id, a_ids[2]);
  EXPECT_EQ(queued_a->at(1).id, a_ids[1]);
  EXPECT_EQ(queue_->List({std::nullopt, "set-b", 0, "", 100})->size(), 2u);
  auto running = queue_->List({JobState::kRunning, "", 0, "", 100});
  ASSERT_EQ(running->size(), 1u);
  EXPECT_EQ(running->at(0).id, a_ids[0]);
  EXPECT_EQ(queue_->List({std::nullopt, "", 0, "", 2})->size(), 2u);
  EXPECT_EQ(queue_->List({std::nullopt, "", 4, "", 100})->size(), 1u);
  auto datasets = *store_.Datasets();
  EXPECT_EQ(std::set<std::string>(datasets.begin(), datasets.end()), (std::set<std::string>{"set-a", "set-b"}));
}

TEST_F(QueueTest, AStoreOutageIsAnErrorAndChangesNothing) {
  store_.SetUnavailable(true);
  auto r = queue_->Submit(Spec("x"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  store_.SetUnavailable(false);
  EXPECT_EQ(*store_.Count(IndexRef::All()), 0);
  EXPECT_EQ(store_.ReadyLength(), 0u);
}

TEST_F(QueueTest, ReadyQueuesAreKeptPerModelInPriorityThenSubmissionOrder) {
  std::vector<std::string> low;
  for (int i = 0; i < 5; ++i) low.push_back(queue_->Submit(Spec("low" + std::to_string(i)))->id);
  jobspec::RenderSpec high = Spec("high");
  high.priority = 100;
  const std::string high_id = queue_->Submit(high)->id;
  jobspec::RenderSpec other = Spec("other model");
  other.model = "/ckpt/Wan2.1-T2V-1.3B-Diffusers/";
  const std::string other_id = queue_->Submit(other)->id;
  auto depths = *store_.ReadyDepths();
  EXPECT_EQ(depths["tiny"], 6);
  EXPECT_EQ(depths["Wan2.1-T2V-1.3B-Diffusers"], 1) << "queues are named by the model's last path component";
  EXPECT_EQ(StartNext().job_id, high_id) << "the priority-100 job is next, behind any number of others";
  for (const auto& id : low) EXPECT_EQ(StartNext().job_id, id) << "equal priorities leave oldest first";
  EXPECT_FALSE(queue_->StartNext("tiny", "g")->has_value());
  auto wan = queue_->StartNext("Wan2.1-T2V-1.3B-Diffusers", "g");
  ASSERT_TRUE(wan.ok() && wan->has_value());
  EXPECT_EQ((*wan)->job_id, other_id);
  EXPECT_EQ(ReadyQueueName("/a/b/"), "b");
  EXPECT_EQ(ReadyQueueName("/"), "/");
  EXPECT_LT(ReadyScore(1, 99), ReadyScore(0, 1));
  EXPECT_LT(ReadyScore(0, 1), ReadyScore(0, 2));
}

TEST_F(QueueTest, CancellingABacklogLeavesNothingInFrontOfNewJobs) {
  std::vector<std::string> backlog;
  for (int i = 0; i < 200; ++i) backlog.push_back(queue_->Submit(Spec("b" + std::to_string(i)))->id);
  for (const auto& id : backlog) ASSERT_EQ(queue_->Cancel(id)->first, CancelOutcome::kCancelled);
  for (int i = 0; i < 100; i += 2) ASSERT_TRUE(*queue_->Delete(backlog[i]));
  EXPECT_EQ(store_.ReadyLength(), 0u);
  const std::string fresh = queue_->Submit(Spec("fresh"))->id;
  EXPECT_EQ(StartNext().job_id, fresh);
}

TEST_F(QueueTest, SubmitManyCreatesNewAnswersExistingAndRequeuesFinished) {
  std::vector<SubmitItem> items;
  for (int i = 0; i < 50; ++i) {
    jobspec::RenderSpec s = Spec("batch" + std::to_string(i));
    s.dataset = "ds";
    items.push_back({s, Json()});
  }
  items.push_back(items[3]);  // a duplicate within the batch
  auto first = queue_->SubmitMany(items);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_EQ(first->size(), 51u);
  int created = 0;
  for (const auto& r : *first) created += r.outcome == SubmitOutcome::kCreated;
  EXPECT_EQ(created, 50);
  EXPECT_EQ(first->at(50).outcome, SubmitOutcome::kExisting);
  EXPECT_EQ(first->at(50).id, first->at(3).id);
  EXPECT_EQ(store_.ReadyLength(), 50u);
  EXPECT_EQ(Stat("submitted"), 50);
  // Fail one, then resubmit the whole batch: 49 are answered from their state, one is re-queued.
  Assignment a = StartNext();
  ASSERT_EQ(*queue_->Fail(a.job_id, a.lease, "broken", false), FailOutcome::kFailed);
  auto again = queue_->SubmitMany(items);
  ASSERT_TRUE(again.ok());
  int existing = 0, resubmitted = 0;
  for (const auto& r : *again) {
    existing += r.outcome == SubmitOutcome::kExisting;
    resubmitted += r.outcome == SubmitOutcome::kResubmitted;
  }
  EXPECT_EQ(resubmitted, 1);
  EXPECT_EQ(existing, 50);
  EXPECT_EQ(*store_.Count(IndexRef::All()), 50);
  EXPECT_EQ(store_.ReadyLength(), 50u);
  // A bad spec anywhere stores nothing.
  std::vector<SubmitItem> bad = {{Spec("fine"), Json()}, {Spec(""), Json()}};
  auto rejected = queue_->SubmitMany(bad);
  ASSERT_FALSE(rejected.ok());
  EXPECT_EQ(rejected.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(rejected.status().message().find("jobs[1]"), std::string::npos) << rejected.status().message();
  EXPECT_EQ(*store_.Count(IndexRef::All()), 50);
}

TEST_F(QueueTest, DatasetStateIndexCursorPagesAndCounts) {
  std::vector<std::string> ids;  // oldest first
  for (int i = 0; i < 7; ++i) {
    jobspec::RenderSpec s = Spec("p" + std::to_string(i));
    s.dataset = "set";
    ids.push_back(queue_->Submit(s)->id);
    if (i % 2) clock_.AdvanceMs(5);  // some equal creation times, as in a batch
  }
  ASSERT_TRUE(queue_->Submit(Spec("no dataset")).ok());
  Assignment a = StartNext();  // ids[0] runs
  ASSERT_EQ(a.job_id, ids[0]);
  ASSERT_EQ(queue_->Cancel(ids[1])->first, CancelOutcome::kCancelled);
  auto counts = *queue_->Counts("set");
  EXPECT_EQ(counts[JobState::kQueued], 5);
  EXPECT_EQ(counts[JobState::kRunning], 1);
  EXPECT_EQ(counts[JobState::kCancelled], 1);
  EXPECT_EQ(queue_->Counts("")->at(JobState::kQueued), 6);
  EXPECT_EQ(*store_.Count(IndexRef::DatasetState("set", JobState::kQueued)), 5);
  // Cursor pages of two over the dataset's queued jobs cover each exactly once, newest first.
  std::vector<std::string> seen;
  ListQuery q{JobState::kQueued, "set", 0, "", 2};
  for (int page = 0; page < 10; ++page) {
    auto records = queue_->List(q);
    ASSERT_TRUE(records.ok());
    for (const auto& r : *records) seen.push_back(r.id);
    if (records->size() < 2) break;
    q.after = records->back().id;
  }
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()),
            (std::set<std::string>{ids[2], ids[3], ids[4], ids[5], ids[6]}));
  EXPECT_EQ(seen.front(), ids[6]);
  // A cursor that left the index still finds its place; an unknown one is an error.
  auto after_running = store_.ListIdsAfter(IndexRef::DatasetState("set", JobState::kQueued), ids[0], 100, true);
  ASSERT_TRUE(after_running.ok());
  EXPECT_EQ(after_running->size(), 5u) << "ids[0] is running, yet its creation time places the cursor";
  auto oldest_first = store_.ListIdsAfter(IndexRef::Dataset("set"), "", 2, true);
  ASSERT_EQ(oldest_first->size(), 2u);
  EXPECT_EQ(oldest_first->at(0), std::min(ids[0], ids[1])) << "equal creation times order by id";
  EXPECT_EQ(queue_->List({JobState::kQueued, "set", 0, "0123456789abcdef0123456789abcdef", 2}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(QueueTest, RepairPutsOrphanedQueuedJobsBackIntoTheirQueue) {
  const std::string id = queue_->Submit(Spec("x"))->id;
  // A record written without its queue entry (e.g. by an older layout).
  Transition t;
  t.job_id = "0123456789abcdef0123456789abcdef";
  t.require_absent = true;
  t.set = {{"model", "tiny"}, {"spec", Spec("y").ToJson().dump()}, {"created_ms", "1"}};
  t.to = JobState::kQueued;
  ASSERT_TRUE(store_.Apply(t)->applied);
  EXPECT_EQ(store_.ReadyLength(), 1u);
  EXPECT_EQ(*store_.RepairReadyQueues(), 1);
  EXPECT_EQ(*store_.RepairReadyQueues(), 0) << "idempotent";
  EXPECT_EQ(StartNext().job_id, id);
  EXPECT_EQ(StartNext().job_id, t.job_id);
}

// ------------------------------------------------------------------------------------------ dispatcher

class FakeChannel : public WorkerChannel {
 public:
  void Send(const Json& message) override {
    if (!closed) sent.push_back(message);
  }
  void Close() override { closed = true; }
  std::string peer() const override { return "test:1"; }
  // Messages of one type sent since the last call.
  std::vector<Json> Take(const std::string& type) {
    std::vector<Json> out, rest;
    for (auto& m : sent) (m["type"] == type ? out : rest).push_back(m);
    sent = rest;
    return out;
  }
  std::vector<Json> sent;
  bool closed = false;
};

class DispatcherTest : public QueueTest {
 protected:
  DispatcherTest() { MakeDispatcher(); }

  void MakeDispatcher(const std::string& token = "") {
    DispatcherOptions o;
    o.storage = "/srv/videos";
    o.token = token;
    o.reaper_grace_ms = 0;
    dispatcher_ = std::make_unique<Dispatcher>(queue_.get(), &clock_, o);
  }

  std::shared_ptr<FakeChannel> Connect(uint64_t id, const std::string& model = "tiny", const std::string& name = "",
                                       const std::string& token = "") {
    auto ch = std::make_shared<FakeChannel>();
    dispatcher_->OnConnect(id, ch);
    Json hello = {{"type", "hello"}, {"worker", name.empty() ? "g" + std::to_string(id) : name},
                  {"group_size", 2}, {"model", model}, {"host", "h"}, {"pid", 42}};
    if (!token.empty()) hello["token"] = token;
    dispatcher_->OnMessage(id, hello);
    return ch;
  }

  std::unique_ptr<Dispatcher> dispatcher_;
};

TEST_F(DispatcherTest, HelloIsWelcomedWithTheLeaseTerms) {
  auto ch = Connect(1);
  auto welcome = ch->Take("welcome");
  ASSERT_EQ(welcome.size(), 1u);
  EXPECT_EQ(welcome[0]["worker"], "g1");
  EXPECT_EQ(welcome[0]["lease_ms"], options_.lease_ms);
  EXPECT_EQ(welcome[0]["heartbeat_ms"], options_.lease_ms / 5);
  EXPECT_EQ(welcome[0]["storage"], "/srv/videos");
  auto workers = dispatcher_->WorkersJson();
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0]["group_size"], 2);
  EXPECT_EQ(workers[0]["state"], "idle");
}

TEST_F(DispatcherTest, MessagesBeforeHelloAndBadTokensCloseTheConnection) {
  auto ch = std::make_shared<FakeChannel>();
  dispatcher_->OnConnect(1, ch);
  dispatcher_->OnMessage(1, {{"type", "ready"}});
  EXPECT_TRUE(ch->closed);
  EXPECT_EQ(ch->Take("error").size(), 1u);

  MakeDispatcher("s3cret");
  auto anonymous = Connect(2);
  EXPECT_TRUE(anonymous->closed);
  EXPECT_TRUE(anonymous->Take("welcome").empty());
  auto wrong = Connect(3, "tiny", "", "guess");
  EXPECT_TRUE(wrong->closed);
  auto right = Connect(4, "tiny", "", "s3cret");
  EXPECT_FALSE(right->closed);
  EXPECT_EQ(right->Take("welcome").size(), 1u);
}

TEST_F(DispatcherTest, ReadyIsHeldUntilAJobArrives) {
  auto ch = Connect(1);
  dispatcher_->OnMessage(1, {{"type", "ready"}});
  dispatcher_->Tick();
  EXPECT_TRUE(ch->Take("job").empty());
  EXPECT_EQ(dispatcher_->WorkersJson()[0]["state"], "waiting");
  auto sub = queue_->Submit(Spec("a boat"));
  ASSERT_TRUE(sub.ok());
  dispatcher_->Tick();
  auto jobs = ch->Take("job");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["job_id"], sub->id);
  EXPECT_EQ(jobs[0]["attempt"], 1);
  EXPECT_EQ(jobs[0]["spec"]["prompt"], "a boat");
  EXPECT_TRUE(jobs[0]["resume"].is_null());
  EXPECT_EQ(dispatcher_->WorkersJson()[0]["state"], "busy");
}

TEST_F(DispatcherTest, AJobRunsToCompletionThroughTheProtocol) {
  auto ch = Connect(1);
  auto sub = queue_->Submit(Spec("a boat"));
  dispatcher_->OnMessage(1, {{"type", "ready"}});
  auto jobs = ch->Take("job");
  ASSERT_EQ(jobs.size(), 1u) << "a ready group gets a queued job at once";
  const std::string lease = jobs[0]["lease"];
  dispatcher_->OnMessage(1, {{"type", "heartbeat"}, {"job_id", sub->id}, {"lease", lease}, {"step", 4}, {"steps", 8},
                             {"stage", "denoise"}});
  auto acks = ch->Take("heartbeat_ack");
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_FALSE(acks[0]["cancel"].get<bool>());
  EXPECT_EQ(Record(sub->id).step, 4);
  EXPECT_GT(dispatcher_->snapshot().steps_per_second, 0);
  dispatcher_->OnMessage(1, {{"type", "commit"}, {"job_id", sub->id}, {"lease", lease}});
  auto commit = ch->Take("commit_ack");
  ASSERT_EQ(commit.size(), 1u);
  EXPECT_TRUE(commit[0]["granted"].get<bool>());
  dispatcher_->OnMessage(1, {{"type", "done"}, {"job_id", sub->id}, {"lease", lease}, {"output", "/srv/videos/single/a.mp4"},
                             {"manifest", "/srv/videos/single/a.json"}, {"timings", {{"total_s", 2.0}}}});
  const JobRecord rec = Record(sub->id);
  EXPECT_EQ(rec.state, JobState::kDone);
  EXPECT_EQ(rec.output, "single/" + sub->id + ".mp4") << "the coordinator records its own path, not the worker's";
  EXPECT_EQ(dispatcher_->WorkersJson()[0]["jobs_done"], 1);
  EXPECT_EQ(dispatcher_->WorkersJson()[0]["state"], "idle");
}

TEST_F(DispatcherTest, JobsGoOnlyToGroupsServingTheirModelByPriority) {
  jobspec::RenderSpec wan = Spec("wan job");
  wan.model = "Wan2.1-T2V-1.3B-Diffusers";
  auto wan_job = queue_->Submit(wan);
  jobspec::RenderSpec low = Spec("low");
  auto low_job = queue_->Submit(low);
  jobspec::RenderSpec high = Spec("high");
  high.priority = 5;
  auto high_job = queue_->Submit(high);
  dispatcher_->Tick();
  auto wan_group = Connect(1, "/models/Wan2.1-T2V-1.3B-Diffusers/");
  auto tiny_group = Connect(2, "tiny");
  dispatcher_->OnMessage(2, {{"type", "ready"}});
  auto tiny_jobs = tiny_group->Take("job");
  ASSERT_EQ(tiny_jobs.size(), 1u);
  EXPECT_EQ(tiny_jobs[0]["job_id"], high_job->id) << "higher priority first";
  dispatcher_->OnMessage(1, {{"type", "ready"}});
  auto wan_jobs = wan_group->Take("job");
  ASSERT_EQ(wan_jobs.size(), 1u);
  EXPECT_EQ(wan_jobs[0]["job_id"], wan_job->id) << "model matched by the folder's name";
  EXPECT_EQ(Record(low_job->id).state, JobState::kQueued);
  EXPECT_TRUE(ModelMatches("tiny", "tiny"));
  EXPECT_FALSE(ModelMatches("tiny", "/models/wan"));
}

// The job message names the prompts queued behind the job in its model's queue, in dispatch order,
// so the group can encode them while it renders; other models' jobs never appear.
TEST_F(DispatcherTest, AJobCarriesThePromptsQueuedBehindItInItsModelsQueue) {
  jobspec::RenderSpec other = Spec("another model's job");
  other.model = "Wan2.1-T2V-1.3B-Diffusers";
  ASSERT_TRUE(queue_->Submit(other).ok());
  ASSERT_TRUE(queue_->Submit(Spec("first")).ok());
  ASSERT_TRUE(queue_->Submit(Spec("second")).ok());
  jobspec::RenderSpec urgent = Spec("urgent");
  urgent.priority = 9;
  ASSERT_TRUE(queue_->Submit(urgent).ok());
  auto ch = Connect(1);
  dispatcher_->OnMessage(1, {{"type", "ready"}});
  auto jobs = ch->Take("job");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["spec"]["prompt"], "urgent");
  EXPECT_EQ(jobs[0]["upcoming_prompts"], Json::array({"first"})) << "one look-ahead by default, in pop order";
  EXPECT_EQ(Record(jobs[0]["job_id"].get<std::string>()).state, JobState::kRunning);
  auto peek = queue_->UpcomingPrompts("tiny", 5);
  ASSERT_TRUE(peek.ok());
  EXPECT_EQ(*peek, (std::vector<std::string>{"first", "second"})) << "a peek takes nothing";

  // The last job of a queue has nothing behind it.
  auto solo = Connect(2, "Wan2.1-T2V-1.3B-Diffusers");
  dispatcher_->OnMessage(2, {{"type", "ready"}});
  auto wan_jobs = solo->Take("job");
  ASSERT_EQ(wan_jobs.size(), 1u);
  EXPECT_FALSE(wan_jobs[0].contains("upcoming_prompts"));
}

TEST_F(DispatcherTest, AStalledGroupIsToldToStopAndItsCommitIsDenied) {
  auto slow = Connect(1, "tiny", "slow");
  auto sub = queue_->Submit(Spec("x"));
  dispatcher_->OnMessage(1, {{"type", "ready"}});
  auto first = slow->Take("job");
  ASSERT_EQ(first.size(), 1u);
  const std::string stale_lease = first[0]["lease"];
  clock_.AdvanceMs(options_.lease_ms + 1);
  dispatcher_->Tick();  // reaper: lease expired -> retry after backoff
  EXPECT_EQ(Record(sub->id).state, JobState::kQueued);
  auto fast = Connect(2, "tiny", "fast");
  dispatcher_->OnMessage(2, {{"type", "ready"}});
  clock_.AdvanceMs(queue_->BackoffMs(1));
  dispatcher_->Tick();
  auto second = fast->Take("job");
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0]["attempt"], 2);
  // The slow group resumes.
  dispatcher_->OnMessage(1, {{"type", "heartbeat"}, {"job_id", sub->id}, {"lease", stale_lease}, {"step", 8}, {"steps", 8}});
  auto acks = slow->Take("heartbeat_ack");
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_TRUE(acks[0]["cancel"].get<bool>());
  dispatcher_->OnMessage(1, {{"type", "commit"}, {"job_id", sub->id}, {"lease", stale_lease}});
  auto denied = slow->Take("commit_ack");
  ASSERT_EQ(denied.size(), 1u);
  EXPECT_FALSE(denied[0]["granted"].get<bool>());
  dispatcher_->OnMessage(2, {{"type", "commit"}, {"job_id", sub->id}, {"lease", second[0]["lease"]}});
  auto granted = fast->Take("commit_ack");
  ASSERT_EQ(granted.size(), 1u);
  EXPECT_TRUE(granted[0]["granted"].get<bool>());
}

TEST_F(DispatcherTest, CancellationReachesTheRunningGroup) {
  auto ch = Connect(1);
  auto sub = queue_->Submit(Spec("x"));
  dispatcher_->OnMessage(1, {{"type", "ready"}});
  const std::string lease = ch->Take("job").at(0)["lease"];
  ASSERT_EQ(queue_->Cancel(sub->id)->first, CancelOutcome::kCancelled);
  dispatcher_->OnMessage(1, {{"type", "heartbeat"}, {"job_id", sub->id}, {"lease", lease}, {"step", 1}, {"steps", 8}});
  EXPECT_TRUE(ch->Take("heartbeat_ack").at(0)["cancel"].get<bool>());
  dispatcher_->OnMessage(1, {{"type", "failed"}, {"job_id", sub->id}, {"lease", lease}, {"error", "cancelled"},
                             {"retryable", false}});
  EXPECT_EQ(Record(sub->id).state, JobState::kCancelled);
}

TEST_F(DispatcherTest, ResultsArriveSafelyDuringARedisOutage) {
  auto ch = Connect(1);
  auto sub = queue_->Submit(Spec("x"));
  dispatcher_->OnMessage(1, {{"type", "ready"}});
  const std::string lease = ch->Take("job").at(0)["lease"];
  store_.SetUnavailable(true);
  dispatcher_->OnMessage(1, {{"type", "heartbeat"}, {"job_id", sub->id}, {"lease", lease}, {"step", 1}, {"steps", 8}});
  EXPECT_FALSE(ch->Take("heartbeat_ack").at(0)["cancel"].get<bool>()) << "an outage is not a reason to stop";
  dispatcher_->OnMessage(1, {{"type", "commit"}, {"job_id", sub->id}, {"lease", lease}});
  EXPECT_TRUE(ch->Take("commit_ack").empty()) << "no answer until Redis can decide";
  dispatcher_->Tick();
  EXPECT_FALSE(dispatcher_->snapshot().store_ok);
  EXPECT_EQ(dispatcher_->snapshot().pending_results, 1);
  store_.SetUnavailable(false);
  dispatcher_->Tick();
  auto acks = ch->Take("commit_ack");
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_TRUE(acks[0]["granted"].get<bool>());
  store_.SetUnavailable(true);
  dispatcher_->OnMessage(1, {{"type", "done"}, {"job_id", sub->id}, {"lease", lease}, {"output", "single/x.mp4"}});
  dispatcher_->OnDisconnect(1);  // the group may even go away: its result is a fact and is kept
  store_.SetUnavailable(false);
  dispatcher_->Tick();
  EXPECT_EQ(Record(sub->id).state, JobState::kDone);
  EXPECT_EQ(dispatcher_->snapshot().pending_results, 0);
}

TEST_F(DispatcherTest, ARestartedCoordinatorKeepsQueuedJobsAndRunningGroups) {
  auto waiting = queue_->Submit(Spec("waiting"));
  auto running = queue_->Submit(Spec("running"));
  auto ch = Connect(1);
  dispatcher_->Tick();
  dispatcher_->OnMessage(1, {{"type", "ready"}});
  auto job = ch->Take("job");
  ASSERT_EQ(job.size(), 1u);
  const std::string job_id = job[0]["job_id"], lease = job[0]["lease"];
  // kill -9: the dispatcher's memory is gone, Redis is not.
  dispatcher_.reset();
  clock_.AdvanceMs(options_.lease_ms * 2);
  MakeDispatcher();
  auto again = Connect(7);  // the group reconnects and re-sends its heartbeat with the old lease
  dispatcher_->OnMessage(7, {{"type", "heartbeat"}, {"job_id", job_id}, {"lease", lease}, {"step", 3}, {"steps", 8}});
  EXPECT_FALSE(again->Take("heartbeat_ack").at(0)["cancel"].get<bool>());
  dispatcher_->Tick();
  EXPECT_EQ(Record(job_id).state, JobState::kRunning) << "the renewed job is not reaped";
  EXPECT_EQ(dispatcher_->WorkersJson()[0]["state"], "busy");
  auto other = Connect(8);
  dispatcher_->OnMessage(8, {{"type", "ready"}});
  auto recovered = other->Take("job");
  ASSERT_EQ(recovered.size(), 1u) << "the other job is still in its ready queue";
  EXPECT_NE(recovered[0]["job_id"], job_id);
  EXPECT_TRUE(recovered[0]["job_id"] == waiting->id || recovered[0]["job_id"] == running->id);
}

TEST_F(DispatcherTest, AnUnservedBacklogDoesNotDelayAServedModel) {
  for (int i = 0; i < 300; ++i) {
    jobspec::RenderSpec s = Spec("unserved" + std::to_string(i));
    s.model = "Wan2.1-T2V-1.3B-Diffusers";
    ASSERT_TRUE(queue_->Submit(s).ok());
  }
  auto ch = Connect(1);
  dispatcher_->OnMessage(1, {{"type", "ready"}});
  dispatcher_->Tick();
  EXPECT_TRUE(ch->Take("job").empty());
  auto tiny = queue_->Submit(Spec("served"));
  dispatcher_->Poke();  // what a submission does
  auto jobs = ch->Take("job");
  ASSERT_EQ(jobs.size(), 1u) << "the served job starts at once, behind 300 unserved ones";
  EXPECT_EQ(jobs[0]["job_id"], tiny->id);
  EXPECT_EQ(store_.ReadyDepths()->at("Wan2.1-T2V-1.3B-Diffusers"), 300);
}

TEST_F(DispatcherTest, UnknownMessagesGetAnErrorAndMalformedFramesClose) {
  auto ch = Connect(1);
  dispatcher_->OnMessage(1, {{"type", "teleport"}});
  EXPECT_EQ(ch->Take("error").size(), 1u);
  EXPECT_FALSE(ch->closed);
  dispatcher_->OnMessage(1, {{"type", "heartbeat"}, {"job_id", 5}});
  EXPECT_EQ(ch->Take("error").size(), 1u);
  dispatcher_->OnProtocolError(1, "frame too large");
  EXPECT_TRUE(ch->closed);
  EXPECT_EQ(dispatcher_->snapshot().protocol_errors, 3);
}

}  // namespace
}  // namespace stas::coordinator

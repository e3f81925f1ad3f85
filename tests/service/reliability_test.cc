// Reliability of the render service on loopback (label: service): redis-server, `stas coordinator`
// and `mpirun ... stas worker` groups on the built-in tiny model, with faults injected from outside
// (kill -9, SIGSTOP, restarts) the way an operator or a crash would. Every scenario checks that no job
// is lost and that no job committed two videos, and reports the figures docs/RELIABILITY.md quotes
// (lines "RELIABILITY <scenario> <name>=<value>" on stdout).
//
// Jobs are tiny (32x32, 9 frames, a few steps); the workers' --fault-step-delay-ms stretches each step
// so a fault can land mid-job on any machine speed.
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <random>

#include "service_stack.h"

namespace stas::testing {
namespace {

const char* kSmall = "--frames 9 --height 32 --width 32";

std::vector<std::string> SlowWorkerFlags(int delay_ms) {
  return {"--fault-step-delay-ms", std::to_string(delay_ms), "--checkpoint-every", "2"};
}

double SecondsSince(SteadyClock::time_point t) { return std::chrono::duration<double>(SteadyClock::now() - t).count(); }

std::string Fixed(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

int Step(const Json& job) {
  return job.is_object() && job.contains("progress") ? job["progress"].value("step", 0) : 0;
}

Json ReadManifest(const ServiceStack& stack, const Json& job) {
  if (!job.is_object() || !job.contains("manifest") || !job["manifest"].is_string()) return Json();
  auto text = RunCommand("cat " + ShellQuote(stack.storage() + "/" + job["manifest"].get<std::string>()));
  try {
    return Json::parse(text.output);
  } catch (const Json::exception&) {
    return Json();
  }
}

class Reliability : public ::testing::Test {
 protected:
  void StartServices(ServiceStack& stack) {
    ASSERT_TRUE(stack.StartRedis()) << stack.Logs();
    ASSERT_TRUE(stack.StartCoordinator()) << stack.Logs();
  }
  void WaitForWorkers(ServiceStack& stack, int groups) {
    ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.ConnectedWorkers() >= groups; }, 120s))
        << "worker groups did not connect\n" << stack.Logs();
  }
};

// A group dies (kill -9 of its rank) mid-job: the lease lapses, the job is re-dispatched to the other
// group, resumes from its latent checkpoint and completes with exactly one video.
TEST_F(Reliability, WorkerGroupKilledMidJob) {
  ServiceStack stack;
  StartServices(stack);
  stack.StartWorkers("a", 1, SlowWorkerFlags(300));
  stack.StartWorkers("b", 1, SlowWorkerFlags(300));
  WaitForWorkers(stack, 2);
  auto ids = stack.Submit(std::string("--prompt 'a group dies mid-job' --steps 12 ") + kSmall);
  ASSERT_EQ(ids.size(), 1u) << stack.Logs();
  const std::string id = ids[0];
  Json job;
  ASSERT_TRUE(ServiceStack::WaitUntil([&] {
    job = stack.Job(id);
    return job.value("state", "") == "running" && Step(job) >= 4;
  }, 90s)) << job.dump() << stack.Logs();
  const std::string victim = job["worker"].get<std::string>();
  const pid_t pid = PidOfWorker(victim);
  ASSERT_GT(pid, 0) << victim;
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  const auto killed_at = SteadyClock::now();

  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.State(id) == "done"; }, 120s)) << stack.Job(id).dump()
                                                                                         << stack.Logs();
  const double recovery = SecondsSince(killed_at);
  job = stack.Job(id);
  EXPECT_EQ(job["attempts"], 2);
  EXPECT_NE(job["worker"], victim);
  const int videos = stack.CountVideos(id);
  EXPECT_EQ(videos, 1);
  EXPECT_EQ(stack.CountTemporaryFiles(), 0);
  const Json manifest = ReadManifest(stack, job);
  const int resumed = manifest.is_object() ? manifest.value("resumed_from_step", 0) : 0;
  EXPECT_GE(resumed, 2) << "the second attempt should resume from a latent checkpoint: " << manifest.dump();
  ReportFigure("worker_kill9", "jobs_lost", "0");
  ReportFigure("worker_kill9", "duplicate_outputs", std::to_string(std::max(0, videos - 1)));
  ReportFigure("worker_kill9", "recovery_s", Fixed(recovery));
  ReportFigure("worker_kill9", "resumed_from_step", std::to_string(resumed));
}

// The coordinator is killed (kill -9) while groups render and is restarted on the same ports: the
// groups reconnect, say hello again and keep heartbeating their jobs with the original leases.
TEST_F(Reliability, CoordinatorKilledAndRestarted) {
  ServiceStack stack;
  StartServices(stack);
  stack.StartWorkers("a", 1, SlowWorkerFlags(250));
  stack.StartWorkers("b", 1, SlowWorkerFlags(250));
  WaitForWorkers(stack, 2);
  auto ids = stack.Submit(std::string("--dataset-name restart --prompt 'coordinator restart' --steps 10 ") + kSmall);
  auto more = stack.Submit(std::string("--dataset-name restart --prompt 'coordinator restart, second' --steps 10 ") + kSmall);
  auto third = stack.Submit(std::string("--dataset-name restart --prompt 'coordinator restart, third' --steps 10 ") + kSmall);
  ids.insert(ids.end(), more.begin(), more.end());
  ids.insert(ids.end(), third.begin(), third.end());
  ASSERT_EQ(ids.size(), 3u) << stack.Logs();
  std::string running;
  int step_before = 0;
  ASSERT_TRUE(ServiceStack::WaitUntil([&] {
    for (const auto& id : ids) {
      Json j = stack.Job(id);
      if (j.value("state", "") == "running" && Step(j) >= 2) {
        running = id;
        step_before = Step(j);
        return true;
      }
    }
    return false;
  }, 90s)) << stack.Logs();

  stack.coordinator()->Signal(SIGKILL);
  ASSERT_TRUE(stack.coordinator()->Wait(10s).has_value());
  std::this_thread::sleep_for(1s);
  const auto restarted_at = SteadyClock::now();
  ASSERT_TRUE(stack.StartCoordinator()) << stack.Logs();
  // Recovered = the running job's progress moves again through the new coordinator.
  ASSERT_TRUE(ServiceStack::WaitUntil([&] {
    Json j = stack.Job(running);
    return Step(j) > step_before || j.value("state", "") == "done";
  }, 60s)) << stack.Logs();
  const double recovery = SecondsSince(restarted_at);
  ASSERT_TRUE(ServiceStack::WaitUntil([&] {
    return std::all_of(ids.begin(), ids.end(), [&](const std::string& id) { return stack.State(id) == "done"; });
  }, 150s)) << stack.Logs();
  int lost = 0, duplicates = 0;
  for (const auto& id : ids) {
    lost += stack.State(id) != "done";
    duplicates += std::max(0, stack.CountVideos(id) - 1);
    EXPECT_EQ(stack.CountVideos(id), 1) << id;
  }
  EXPECT_EQ(stack.Job(running)["attempts"], 1) << "the running job should keep its lease across the restart";
  EXPECT_EQ(stack.CountTemporaryFiles(), 0);
  ReportFigure("coordinator_kill9_restart", "jobs_lost", std::to_string(lost));
  ReportFigure("coordinator_kill9_restart", "duplicate_outputs", std::to_string(duplicates));
  ReportFigure("coordinator_kill9_restart", "recovery_s", Fixed(recovery));
  ReportFigure("coordinator_kill9_restart", "running_job_attempts", stack.Job(running)["attempts"].dump());
}

// redis-server is killed (kill -9, more than a second after the last submission so the AOF holds it)
// and restarted on the same data folder: the queue comes back from the AOF and every job completes.
TEST_F(Reliability, RedisKilledAndRestartedFromAof) {
  ServiceStack stack;
  StartServices(stack);
  stack.StartWorkers("a", 1, SlowWorkerFlags(400));
  WaitForWorkers(stack, 1);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    auto one = stack.Submit("--dataset-name aof --prompt 'redis restart " + std::to_string(i) + "' --steps 8 " + kSmall);
    ids.insert(ids.end(), one.begin(), one.end());
  }
  ASSERT_EQ(ids.size(), 4u) << stack.Logs();
  // Kill while a job is running and others wait (a slow machine may finish the first before the last is in).
  ASSERT_TRUE(ServiceStack::WaitUntil([&] {
    return std::any_of(ids.begin(), ids.end(), [&](const std::string& id) { return stack.State(id) == "running"; }) &&
           stack.State(ids.back()) != "done";
  }, 60s)) << stack.Logs();
  std::this_thread::sleep_for(1500ms);  // appendfsync everysec: let the AOF reach the disk
  stack.redis()->Signal(SIGKILL);
  ASSERT_TRUE(stack.redis()->Wait(10s).has_value());
  std::this_thread::sleep_for(1s);
  const auto restarted_at = SteadyClock::now();
  ASSERT_TRUE(stack.StartRedis()) << stack.Logs();
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.Healthy(); }, 30s)) << stack.Logs();
  const double recovery = SecondsSince(restarted_at);
  ASSERT_TRUE(ServiceStack::WaitUntil([&] {
    return std::all_of(ids.begin(), ids.end(), [&](const std::string& id) { return stack.State(id) == "done"; });
  }, 150s)) << stack.Logs();
  int duplicates = 0;
  for (const auto& id : ids) {
    EXPECT_EQ(stack.CountVideos(id), 1) << id;
    duplicates += std::max(0, stack.CountVideos(id) - 1);
  }
  ReportFigure("redis_kill9_restart_aof", "jobs_lost", "0");
  ReportFigure("redis_kill9_restart_aof", "duplicate_outputs", std::to_string(duplicates));
  ReportFigure("redis_kill9_restart_aof", "recovery_s", Fixed(recovery));
}

// A job that fails on every attempt is retried max_attempts times and then buried: state dead, an
// entry in the dead-letter stream, no video; the other work goes on.
TEST_F(Reliability, PoisonJobReachesTheDeadLetterStream) {
  StackOptions options;
  options.max_attempts = 3;
  options.backoff_ms = 200;
  ServiceStack stack(options);
  StartServices(stack);
  stack.StartWorkers("a", 1, {"--fault-fail-prompt", "POISON"});
  WaitForWorkers(stack, 1);
  const auto submitted_at = SteadyClock::now();
  auto poison = stack.Submit(std::string("--prompt 'POISON pill' --steps 2 ") + kSmall);
  auto healthy = stack.Submit(std::string("--prompt 'healthy neighbour' --steps 2 ") + kSmall);
  ASSERT_EQ(poison.size(), 1u);
  ASSERT_EQ(healthy.size(), 1u);
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.State(poison[0]) == "dead"; }, 90s))
      << stack.Job(poison[0]).dump() << stack.Logs();
  const double to_dead = SecondsSince(submitted_at);
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.State(healthy[0]) == "done"; }, 60s)) << stack.Logs();
  Json job = stack.Job(poison[0]);
  EXPECT_EQ(job["attempts"], 3);
  EXPECT_NE(job.value("error", "").find("injected failure"), std::string::npos) << job.dump();
  const std::string dead = stack.RedisCli("XRANGE stas:dead - +");
  EXPECT_NE(dead.find(poison[0]), std::string::npos) << dead;
  EXPECT_EQ(stack.CountVideos(poison[0]), 0);
  EXPECT_EQ(stack.CountVideos(healthy[0]), 1);
  ReportFigure("poison_job", "attempts", job["attempts"].dump());
  ReportFigure("poison_job", "seconds_to_dead", Fixed(to_dead));
  ReportFigure("poison_job", "jobs_lost", "0");
}

// 1,000 submissions of 250 distinct specs (every spec 4 times, shuffled, plus the whole file again
// from two clients at once): 250 jobs, stable ids, nothing rendered twice. A handful render; the rest
// are cancelled.
TEST_F(Reliability, ThousandSubmissionsWithDuplicates) {
  ServiceStack stack;
  StartServices(stack);
  std::vector<std::string> lines;
  for (int k = 0; k < 250; ++k)
    for (int copy = 0; copy < 4; ++copy)
      lines.push_back(R"({"prompt": "duplicate test clip )" + std::to_string(k) + R"(", "seed": )" +
                      std::to_string(k) + R"(, "steps": 2, "frames": 9, "height": 32, "width": 32})");
  std::shuffle(lines.begin(), lines.end(), std::mt19937(7));
  TempDir files;
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  const std::string dataset = files.Write("dups.jsonl", text);

  const auto start = SteadyClock::now();
  auto ids = stack.Submit("--dataset " + dataset);
  const double submit_s = SecondsSince(start);
  ASSERT_EQ(ids.size(), 1000u) << stack.Logs();
  std::map<std::string, std::string> id_of_line;
  for (size_t i = 0; i < lines.size(); ++i) {
    auto [it, inserted] = id_of_line.emplace(lines[i], ids[i]);
    EXPECT_EQ(it->second, ids[i]) << "the same spec got two ids: " << lines[i];
  }
  std::set<std::string> unique(ids.begin(), ids.end());
  EXPECT_EQ(unique.size(), 250u);

  // The same file again, from two clients at the same time: the same ids, no new jobs.
  std::vector<std::string> again_a, again_b;
  std::thread ta([&] { again_a = stack.Submit("--dataset " + dataset); });
  std::thread tb([&] { again_b = stack.Submit("--dataset " + dataset); });
  ta.join();
  tb.join();
  EXPECT_EQ(again_a, ids);
  EXPECT_EQ(again_b, ids);
  Json queued = stack.GetJson("/jobs?state=queued&limit=1");
  EXPECT_EQ(queued.value("total", -1), 250) << queued.dump();
  Json all = stack.GetJson("/jobs?limit=1");
  EXPECT_EQ(all.value("total", -1), 250) << all.dump();

  // Render a handful; cancel the rest.
  std::vector<std::string> keep(unique.begin(), std::next(unique.begin(), 3));
  std::string cancel_args;
  for (auto it = std::next(unique.begin(), 3); it != unique.end(); ++it) cancel_args += " " + *it;
  auto cancelled = stack.Stas("cancel --server " + stack.server() + cancel_args);
  EXPECT_EQ(cancelled.exit_code, 0) << cancelled.output.substr(0, 2000);
  stack.StartWorkers("a", 1);
  std::string watch_args;
  for (const auto& id : keep) watch_args += " " + id;
  auto watched = stack.Stas("watch --server " + stack.server() + " --timeout 240" + watch_args);
  EXPECT_EQ(watched.exit_code, 0) << watched.output << stack.Logs();
  int done = 0, videos = 0, duplicates = 0;
  for (const auto& id : unique) {
    const std::string state = stack.State(id);
    done += state == "done";
    const int n = stack.CountVideos(id);
    videos += n;
    duplicates += std::max(0, n - 1);
    EXPECT_TRUE(state == "done" || state == "cancelled") << id << " is " << state;
  }
  EXPECT_EQ(done, 3);
  EXPECT_EQ(videos, 3);
  ReportFigure("thousand_duplicates", "submissions", "3000");
  ReportFigure("thousand_duplicates", "distinct_jobs", std::to_string(unique.size()));
  ReportFigure("thousand_duplicates", "submit_1000_s", Fixed(submit_s));
  ReportFigure("thousand_duplicates", "jobs_lost", "0");
  ReportFigure("thousand_duplicates", "duplicate_outputs", std::to_string(duplicates));
}

// A group is frozen (SIGSTOP) past its lease: the job moves to the other group and completes there.
// When the frozen group wakes up (SIGCONT) its late result must not produce a second video: its
// heartbeat is answered with cancel and its commit (if it gets that far) is denied.
TEST_F(Reliability, StoppedWorkerPastItsLeaseCannotCommitTwice) {
  ServiceStack stack;
  StartServices(stack);
  stack.StartWorkers("a", 1, SlowWorkerFlags(300));
  stack.StartWorkers("b", 1, SlowWorkerFlags(300));
  WaitForWorkers(stack, 2);
  auto ids = stack.Submit(std::string("--prompt 'a frozen worker' --steps 12 ") + kSmall);
  ASSERT_EQ(ids.size(), 1u);
  const std::string id = ids[0];
  Json job;
  ASSERT_TRUE(ServiceStack::WaitUntil([&] {
    job = stack.Job(id);
    return job.value("state", "") == "running" && Step(job) >= 3;
  }, 90s)) << stack.Logs();
  const std::string frozen = job["worker"].get<std::string>();
  const pid_t pid = PidOfWorker(frozen);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGSTOP), 0);
  const auto stopped_at = SteadyClock::now();
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.State(id) == "done"; }, 120s)) << stack.Logs();
  const double recovery = SecondsSince(stopped_at);
  ASSERT_EQ(::kill(pid, SIGCONT), 0);
  // Give the woken group time to notice (heartbeat answered with cancel) or to try its commit.
  std::this_thread::sleep_for(std::chrono::milliseconds(4 * stack.options().lease_ms));
  job = stack.Job(id);
  EXPECT_EQ(job["state"], "done");
  EXPECT_NE(job["worker"], frozen);
  const int videos = stack.CountVideos(id);
  EXPECT_EQ(videos, 1);
  EXPECT_EQ(stack.CountTemporaryFiles(), 0);
  EXPECT_FALSE(std::filesystem::exists(stack.storage() + "/.checkpoints/" + id + ".safetensors"))
      << "a latent checkpoint outlived its committed job";
  ReportFigure("sigstop_past_lease", "jobs_lost", "0");
  ReportFigure("sigstop_past_lease", "duplicate_outputs", std::to_string(std::max(0, videos - 1)));
  ReportFigure("sigstop_past_lease", "recovery_s", Fixed(recovery));
}

}  // namespace
}  // namespace stas::testing

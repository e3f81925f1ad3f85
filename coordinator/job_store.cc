#include "coordinator/job_store.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <utility>

namespace stas::coordinator {

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued: return "queued";
    case JobState::kRunning: return "running";
    case JobState::kDone: return "done";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
    case JobState::kDead: return "dead";
  }
  return "unknown";
}

std::optional<JobState> ParseJobState(const std::string& name) {
  for (JobState s : kAllJobStates)
    if (name == JobStateName(s)) return s;
  return std::nullopt;
}

bool IsTerminal(JobState state) {
  return state == JobState::kDone || state == JobState::kFailed || state == JobState::kCancelled ||
         state == JobState::kDead;
}

std::map<std::string, std::string> JobRecord::ToFields() const {
  return {{"id", id},
          {"state", JobStateName(state)},
          {"spec", spec},
          {"model", model},
          {"dataset", dataset},
          {"priority", std::to_string(priority)},
          {"attempts", std::to_string(attempts)},
          {"step", std::to_string(step)},
          {"steps", std::to_string(steps)},
          {"stage", stage},
          {"worker", worker},
          {"lease", lease},
          {"error", error},
          {"output", output},
          {"manifest", manifest},
          {"timings", timings},
          {"api", api},
          {"created_ms", std::to_string(created_ms)},
          {"started_ms", std::to_string(started_ms)},
          {"finished_ms", std::to_string(finished_ms)},
          {"updated_ms", std::to_string(updated_ms)},
          {"heartbeat_ms", std::to_string(heartbeat_ms)},
          {"retry_at_ms", std::to_string(retry_at_ms)}};
}

Result<JobRecord> JobRecord::FromFields(const std::string& id, const std::map<std::string, std::string>& fields) {
  JobRecord r;
  r.id = id;
  auto str = [&](const char* key, std::string& out) {
    auto it = fields.find(key);
    if (it != fields.end()) out = it->second;
  };
  Status bad;
  auto num = [&](const char* key, auto& out) {
    auto it = fields.find(key);
    if (it == fields.end() || it->second.empty()) return;
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(it->second.c_str(), &end, 10);
    if (errno != 0 || !end || *end != '\0') {
      bad = Internal("job " + id + ": field '" + key + "' is not an integer: '" + it->second + "'");
      return;
    }
    out = static_cast<std::decay_t<decltype(out)>>(v);
  };
  std::string state;
  str("state", state);
  auto parsed = ParseJobState(state);
  if (!parsed) return Internal("job " + id + " has an unknown state '" + state + "'");
  r.state = *parsed;
  str("spec", r.spec);
  str("model", r.model);
  str("dataset", r.dataset);
  str("stage", r.stage);
  str("worker", r.worker);
  str("lease", r.lease);
  str("error", r.error);
  str("output", r.output);
  str("manifest", r.manifest);
  str("timings", r.timings);
  str("api", r.api);
  num("priority", r.priority);
  num("attempts", r.attempts);
  num("step", r.step);
  num("steps", r.steps);
  num("created_ms", r.created_ms);
  num("started_ms", r.started_ms);
  num("finished_ms", r.finished_ms);
  num("updated_ms", r.updated_ms);
  num("heartbeat_ms", r.heartbeat_ms);
  num("retry_at_ms", r.retry_at_ms);
  if (!bad.ok()) return bad;
  return r;
}

Transition CreateQueuedTransition(JobRecord record, int64_t now_ms) {
  record.state = JobState::kQueued;
  record.created_ms = now_ms;
  Transition t;
  t.job_id = record.id;
  t.now_ms = now_ms;
  t.require_absent = true;
  t.set = record.ToFields();
  t.to = JobState::kQueued;
  t.enqueue = true;
  t.stats = {{"submitted", 1}};
  t.dataset = record.dataset;
  return t;
}

Result<std::vector<BriefResult>> JobStore::CreateQueued(std::vector<NewJob> jobs, int64_t now_ms) {
  std::vector<Transition> creates;
  creates.reserve(jobs.size());
  for (NewJob& job : jobs) {
    if (job.record.spec.empty() && !job.spec.is_null()) job.record.spec = job.spec.dump();
    creates.push_back(CreateQueuedTransition(std::move(job.record), now_ms));
  }
  return ApplyBrief(creates);
}

std::string ReadyQueueName(const std::string& model) {
  std::string path = model;
  while (!path.empty() && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  return base.empty() ? model : base;
}

double ReadyScore(int priority, uint64_t sequence) {
  const int p = std::clamp(priority, -kMaxQueuePriority, kMaxQueuePriority);
  // Both parts are integers below 2^53, so the sum is exact.
  return -static_cast<double>(p) * 4294967296.0 + static_cast<double>(sequence % 4294967296ull);
}

}  // namespace stas::coordinator

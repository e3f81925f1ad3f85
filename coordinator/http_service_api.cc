// The service endpoints: GET /workers, /healthz, /stats and /metrics (Prometheus text).
#include "coordinator/http_api.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>

#include "common/fs.h"
#include "common/log.h"
#include "common/text.h"
#include "coordinator/auth.h"
#include "models/registry.h"
#include "steering/ma_channels.h"

#include "coordinator/http_support.h"

namespace stas::coordinator {

using namespace http_support;  // NOLINT: the helpers every surface shares
namespace fs = std::filesystem;

// --------------------------------------------------------------------------------- native: service

HttpResponse HttpApi::Workers() {
  Json workers = dispatcher_ ? dispatcher_->WorkersJson() : Json::array();
  return JsonResponse(200, {{"workers", workers}, {"count", workers.size()}});
}

HttpResponse HttpApi::Healthz() {
  Status st = queue_->store().Ping();
  if (!st.ok()) return JsonResponse(503, {{"status", "unavailable"}, {"redis", st.message()}});
  Json body = {{"status", "ok"}, {"redis", "ok"}};
  if (dispatcher_) body["workers"] = dispatcher_->snapshot().workers;
  return JsonResponse(200, body);
}

HttpResponse HttpApi::Stats() {
  JobStore& store = queue_->store();
  Json body = {{"lease_ms", queue_->options().lease_ms}, {"max_attempts", queue_->options().max_attempts},
               {"time", IsoTime(clock_->NowMs())}};
  Status st = store.Ping();
  body["redis"] = st.ok() ? "ok" : st.message();
  if (st.ok()) {
    Json jobs = Json::object();
    for (JobState s : kAllJobStates) {
      auto n = store.Count(IndexRef::State(s));
      jobs[JobStateName(s)] = n.ok() ? *n : 0;
    }
    body["jobs"] = jobs;
    auto totals = store.Stats();
    if (totals.ok()) body["totals"] = *totals;
    auto delayed = store.DelayedCount();
    if (delayed.ok()) body["delayed"] = *delayed;
    auto queues = QueuesJson();
    if (queues.ok()) {
      body["queues"] = queues->first;
      body["models_without_group"] = queues->second;
    }
    auto datasets = store.Datasets();
    if (datasets.ok()) body["datasets"] = *datasets;
  }
  if (const auto snapshot = Snapshot()) {
    const auto& snap = *snapshot;
    body["workers"] = {{"connected", snap.workers}, {"busy", snap.busy}, {"waiting", snap.waiting}};
    body["pending_results"] = snap.pending_results;
    body["steps_per_second"] = snap.steps_per_second;
    body["dispatched"] = snap.dispatched;
  }
  return JsonResponse(200, body);
}

Result<std::pair<Json, Json>> HttpApi::QueuesJson() {
  STAS_ASSIGN_OR_RETURN(auto depths, queue_->store().ReadyDepths());
  std::set<std::string> served;
  for (const auto& m : ServedModels()) served.insert(ReadyQueueName(m));
  Json queues = Json::object();
  Json orphans = Json::array();
  for (const auto& [name, depth] : depths) {
    const bool is_served = served.count(name) > 0;
    if (depth == 0 && !is_served) continue;  // a queue of the past
    queues[name] = {{"depth", depth}, {"served", is_served}};
    if (depth > 0 && !is_served) orphans.push_back(name);
  }
  for (const auto& name : served)
    if (!queues.contains(name)) queues[name] = {{"depth", 0}, {"served", true}};
  return std::make_pair(queues, orphans);
}

HttpResponse HttpApi::Metrics() {
  std::ostringstream out;
  auto metric = [&](const char* name, const char* type, const char* help) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  JobStore& store = queue_->store();
  const bool up = store.Ping().ok();
  metric("stas_redis_up", "gauge", "1 when the coordinator can reach Redis.");
  out << "stas_redis_up " << (up ? 1 : 0) << "\n";
  if (up) {
    metric("stas_jobs", "gauge", "Jobs by state.");
    for (JobState s : kAllJobStates) {
      auto n = store.Count(IndexRef::State(s));
      out << "stas_jobs{state=\"" << JobStateName(s) << "\"} " << (n.ok() ? *n : 0) << "\n";
    }
    auto totals = store.Stats();
    std::map<std::string, int64_t> t = totals.ok() ? *totals : std::map<std::string, int64_t>();
    struct Counter { const char* name; const char* key; const char* help; };
    static const Counter kCounters[] = {
        {"stas_jobs_submitted_total", "submitted", "Jobs submitted (new or re-queued after failure)."},
        {"stas_jobs_completed_total", "completed", "Jobs completed (output committed)."},
        {"stas_jobs_failed_total", "failed", "Jobs failed without retry (not retryable)."},
        {"stas_jobs_dead_total", "dead", "Jobs dead-lettered after max attempts."},
        {"stas_jobs_cancelled_total", "cancelled", "Jobs cancelled."},
        {"stas_job_retries_total", "retried", "Attempts retried after a failure or an expired lease."},
        {"stas_lease_expiries_total", "lease_expired", "Leases that expired (a worker group stopped heartbeating)."},
        {"stas_steps_total", "steps", "Denoising steps reported by worker groups."}};
    for (const auto& c : kCounters) {
      metric(c.name, "counter", c.help);
      out << c.name << " " << t[c.key] << "\n";
    }
    auto delayed = store.DelayedCount();
    metric("stas_jobs_delayed", "gauge", "Queued jobs waiting for their retry backoff.");
    out << "stas_jobs_delayed " << (delayed.ok() ? *delayed : 0) << "\n";
    auto queues = QueuesJson();
    if (queues.ok()) {
      metric("stas_queue_depth", "gauge", "Jobs waiting in a model's ready queue.");
      for (const auto& [name, q] : queues->first.items())
        out << "stas_queue_depth{model=\"" << PromLabel(name) << "\",served=\"" << (q["served"].get<bool>() ? 1 : 0)
            << "\"} " << q["depth"].get<int64_t>() << "\n";
      metric("stas_models_without_group", "gauge", "Models with queued jobs that no connected worker group serves.");
      out << "stas_models_without_group " << queues->second.size() << "\n";
    }
  }
  if (const auto snapshot = Snapshot()) {
    const auto& snap = *snapshot;
    metric("stas_workers_connected", "gauge", "Worker groups connected.");
    out << "stas_workers_connected " << snap.workers << "\n";
    metric("stas_workers_busy", "gauge", "Worker groups running a job.");
    out << "stas_workers_busy " << snap.busy << "\n";
    metric("stas_workers_waiting", "gauge", "Worker groups waiting for a job.");
    out << "stas_workers_waiting " << snap.waiting << "\n";
    metric("stas_step_throughput", "gauge", "Denoising steps per second over the last minute.");
    out << "stas_step_throughput " << snap.steps_per_second << "\n";
    metric("stas_results_pending", "gauge", "Worker results waiting for Redis to come back.");
    out << "stas_results_pending " << snap.pending_results << "\n";
    metric("stas_dispatched_total", "counter", "Jobs dispatched by this coordinator process.");
    out << "stas_dispatched_total " << snap.dispatched << "\n";
    metric("stas_protocol_errors_total", "counter", "Malformed or unexpected worker messages.");
    out << "stas_protocol_errors_total " << snap.protocol_errors << "\n";
  }
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = out.str();
  return r;
}


}  // namespace stas::coordinator

#include "parallel/watchdog.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <utility>

#include "common/log.h"

namespace stas::parallel {

std::string TimeoutReport::ToString() const {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(1);
  out << "collective " << collective << " (" << backend << ") on rank " << rank;
  if (!context.empty()) out << " [" << context << "]";
  out << " has not completed after " << elapsed.count() / 1000.0 << " s (timeout " << timeout.count() / 1000.0
      << " s): a peer rank is dead, stuck or calling collectives in another order";
  return out.str();
}

void Watchdog::AbortProcess(const TimeoutReport& report) {
  const std::string message = "stas watchdog: " + report.ToString() +
                              "; a hung collective cannot be cancelled, aborting the process";
  STAS_LOG_ERROR("{}", message);
  Log().flush();
  // Also straight to stderr: the logger may be redirected, and this line is the post-mortem.
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

Watchdog::Watchdog(Options options, TimeoutAction on_timeout, Clock clock)
    : options_(options), on_timeout_(std::move(on_timeout)), clock_(std::move(clock)) {
  if (options_.start_thread) thread_ = std::thread([this] { Run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Watchdog::Ticket Watchdog::Begin(Operation operation) {
  const TimePoint now = clock_();
  std::lock_guard<std::mutex> lock(mutex_);
  const Ticket ticket = next_ticket_++;
  pending_.emplace(ticket, Entry{std::move(operation), now});
  return ticket;
}

void Watchdog::End(Ticket ticket) {
  std::lock_guard<std::mutex> lock(mutex_);
  pending_.erase(ticket);
}

size_t Watchdog::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pending_.size();
}

std::vector<TimeoutReport> Watchdog::CheckNow() {
  // Probes and actions run outside the lock: a probe may call into CUDA, an action may never return.
  std::vector<std::pair<Ticket, std::function<bool()>>> probes;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [ticket, entry] : pending_) {
      if (entry.operation.is_complete) probes.emplace_back(ticket, entry.operation.is_complete);
    }
  }
  std::vector<Ticket> completed;
  for (const auto& [ticket, probe] : probes) {
    if (probe()) completed.push_back(ticket);
  }

  std::vector<std::pair<TimeoutReport, std::function<void()>>> expired;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (Ticket ticket : completed) pending_.erase(ticket);
    const TimePoint now = clock_();
    for (auto it = pending_.begin(); it != pending_.end();) {
      const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(now - it->second.started);
      if (elapsed < options_.timeout) {
        ++it;
        continue;
      }
      const Operation& op = it->second.operation;
      TimeoutReport report{op.collective, op.backend, op.rank, op.context, elapsed, options_.timeout};
      expired.emplace_back(std::move(report), op.abort);
      it = pending_.erase(it);
    }
  }

  std::vector<TimeoutReport> reports;
  for (auto& [report, abort_hook] : expired) {
    if (abort_hook) abort_hook();
    if (on_timeout_) on_timeout_(report);
    reports.push_back(std::move(report));
  }
  return reports;
}

void Watchdog::Run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, options_.poll_interval, [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    CheckNow();
    lock.lock();
  }
}

}  // namespace stas::parallel

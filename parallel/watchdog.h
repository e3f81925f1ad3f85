// Watchdog: turns a collective that never completes into a clear error.
//
// A hung MPI or NCCL collective cannot be cancelled, and its peers hang with it, so the only useful
// reaction is to say precisely what hung (which collective, which rank, how long) and end the process;
// the launcher (mpirun) then tears down the other ranks and the job is retried elsewhere.
//
// Communicators register every collective: blocking ones (MPI) with a WatchdogScope that ends when the
// call returns; asynchronous ones (NCCL) with a completion probe (a CUDA event query) that the watchdog
// polls, plus an abort hook (ncclCommAbort) run before the timeout action.
//
// Thread-safety: every method may be called from any thread. The timeout action runs on the watchdog's
// thread (or the thread calling CheckNow), never under the watchdog's lock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace stas::parallel {

struct TimeoutReport {
  std::string collective;  // "all_to_all"
  std::string backend;     // "mpi", "nccl"
  int rank = -1;           // rank in the collective's communicator
  std::string context;     // where: e.g. "world rank 5, sequence group of 4"
  std::chrono::milliseconds elapsed{0};
  std::chrono::milliseconds timeout{0};
  // One line that says what hung and what happens next.
  std::string ToString() const;
};

class Watchdog {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Clock = std::function<TimePoint()>;
  using TimeoutAction = std::function<void(const TimeoutReport&)>;

  struct Options {
    std::chrono::milliseconds timeout{std::chrono::minutes(10)};
    std::chrono::milliseconds poll_interval{std::chrono::seconds(1)};
    // Without the background thread only CheckNow() detects timeouts (tests drive it by hand).
    bool start_thread = true;
  };

  // One collective in flight.
  struct Operation {
    std::string collective;
    std::string backend;
    int rank = -1;
    std::string context;
    // Asynchronous operations: returns true once the work finished; polled until then. Null for
    // blocking operations, which End() retires.
    std::function<bool()> is_complete;
    // Run (once) before the timeout action, e.g. ncclCommAbort so the GPU work is torn down.
    std::function<void()> abort;
  };
  using Ticket = uint64_t;

  // The default action: logs the report and aborts the process.
  static void AbortProcess(const TimeoutReport& report);
  static TimePoint SteadyNow() { return std::chrono::steady_clock::now(); }

  explicit Watchdog(Options options, TimeoutAction on_timeout = &Watchdog::AbortProcess,
                    Clock clock = &Watchdog::SteadyNow);
  ~Watchdog();  // stops the thread; pending operations are forgotten
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  Ticket Begin(Operation operation);
  // Retires a blocking operation (no effect for an unknown or already reported ticket).
  void End(Ticket ticket);
  // Retires completed asynchronous operations, then reports every operation older than the timeout:
  // runs its abort hook and the timeout action, once per operation. Returns what it reported.
  std::vector<TimeoutReport> CheckNow();
  size_t pending() const;
  std::chrono::milliseconds timeout() const { return options_.timeout; }

 private:
  struct Entry {
    Operation operation;
    TimePoint started;
  };
  void Run();

  const Options options_;
  const TimeoutAction on_timeout_;
  const Clock clock_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  Ticket next_ticket_ = 1;
  std::map<Ticket, Entry> pending_;
  std::thread thread_;
};

// Registers a blocking operation for the lifetime of the scope. A null watchdog makes it a no-op.
class WatchdogScope {
 public:
  WatchdogScope(Watchdog* watchdog, Watchdog::Operation operation)
      : watchdog_(watchdog), ticket_(watchdog ? watchdog->Begin(std::move(operation)) : 0) {}
  ~WatchdogScope() {
    if (watchdog_) watchdog_->End(ticket_);
  }
  WatchdogScope(const WatchdogScope&) = delete;
  WatchdogScope& operator=(const WatchdogScope&) = delete;

 private:
  Watchdog* watchdog_;
  Watchdog::Ticket ticket_;
};

}  // namespace stas::parallel

// Clock: the coordinator's notion of "now", injectable so lease, reaper and backoff logic can be
// tested without sleeping.
//
// Times are milliseconds since the Unix epoch (wall clock), because they are stored in Redis and
// must mean the same thing to the next coordinator process after a restart.
// Thread-safety: NowMs() may be called from any thread on both implementations.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace stas::coordinator {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;
};

class SystemClock : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// The process-wide system clock (never destroyed).
inline const Clock* DefaultClock() {
  static const SystemClock* clock = new SystemClock();
  return clock;
}

// A clock that moves only when told to (tests).
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  int64_t NowMs() const override { return now_.load(); }
  void AdvanceMs(int64_t ms) { now_ += ms; }
  void SetMs(int64_t ms) { now_ = ms; }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace stas::coordinator

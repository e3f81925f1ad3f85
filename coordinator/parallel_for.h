// ParallelFor: runs f(i) for i in [0, n) on the calling thread and, for large n, one more thread.
//
// For the per-job CPU work of a big batch (spec checks, job ids, serializing specs), which is
// independent per job: a 10,000-job batch then takes about half the time on a machine with a spare core.
// f must be safe to call concurrently for different i. Small n runs inline (a thread costs more).
#pragma once

#include <cstddef>
#include <thread>

namespace stas::coordinator {

template <class F>
void ParallelFor(size_t n, F&& f) {
  constexpr size_t kMinForThread = 1024;
  if (n < kMinForThread || std::thread::hardware_concurrency() < 2) {
    for (size_t i = 0; i < n; ++i) f(i);
    return;
  }
  const size_t half = n / 2;
  std::thread other([&] {
    for (size_t i = half; i < n; ++i) f(i);
  });
  for (size_t i = 0; i < half; ++i) f(i);
  other.join();
}

}  // namespace stas::coordinator

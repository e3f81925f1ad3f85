#include "parallel/communicator.h"

#include <chrono>

#include "parallel/instrumented_communicator.h"

namespace stas::parallel {

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kMax: return "max";
  }
  return "unknown";
}

template <typename Fn>
auto InstrumentedCommunicator::Timed(const std::string& name, int64_t bytes, Fn&& fn) {
  if (synchronize_) inner_.Synchronize();
  const auto start = std::chrono::steady_clock::now();
  auto result = fn();
  if (synchronize_) inner_.Synchronize();
  CollectiveStats& s = stats_[name];
  s.calls += 1;
  s.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  s.bytes += bytes;
  return result;
}

namespace {
int64_t Bytes(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }
}  // namespace

at::Tensor InstrumentedCommunicator::AllToAll(const at::Tensor& input) {
  return Timed("all_to_all", Bytes(input), [&] { return inner_.AllToAll(input); });
}

at::Tensor InstrumentedCommunicator::AllReduce(const at::Tensor& input, ReduceOp op) {
  return Timed(std::string("all_reduce(") + ReduceOpName(op) + ")", Bytes(input),
               [&] { return inner_.AllReduce(input, op); });
}

at::Tensor InstrumentedCommunicator::AllGather(const at::Tensor& input) {
  return Timed("all_gather", Bytes(input), [&] { return inner_.AllGather(input); });
}

at::Tensor InstrumentedCommunicator::Broadcast(const at::Tensor& input, int root) {
  return Timed("broadcast", Bytes(input), [&] { return inner_.Broadcast(input, root); });
}

void InstrumentedCommunicator::Barrier() {
  Timed("barrier", 0, [&] {
    inner_.Barrier();
    return 0;
  });
}

double InstrumentedCommunicator::total_seconds() const {
  double total = 0.0;
  for (const auto& [name, s] : stats_) total += s.seconds;
  return total;
}

}  // namespace stas::parallel

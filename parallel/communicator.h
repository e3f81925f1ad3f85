// Communicator: collective operations over a group of ranks, independent of the transport.
//
// Backends: LocalCommunicator (one rank, no-ops), MpiCommunicator (CPU tensors, parallel/mpi_*.cc),
// NcclCommunicator (CUDA tensors, parallel/nccl_*.cc). Every rank of the group must call the same
// collectives in the same order. Failures of the transport are reported as exceptions of type
// stas::CheckFailure carrying the library's message (they are bugs or dead peers, not user errors);
// a Watchdog turns a collective that never completes into a clear error.
//
// Results are new tensors (or, for a group of one, possibly the input itself); inputs are never
// modified. Any dtype is accepted; non-contiguous inputs are made contiguous first. A collective
// may return before the transport finished (NCCL enqueues on the current CUDA stream); work issued
// later on that stream, or Synchronize(), observes the result.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

namespace stas::parallel {

enum class ReduceOp { kSum, kMax };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;

  // Splits dim 0 of `input` into size() equal chunks, sends chunk i to rank i, and returns the received
  // chunks concatenated on dim 0 in rank order. input.size(0) must divide by size().
  virtual at::Tensor AllToAll(const at::Tensor& input) = 0;
  virtual at::Tensor AllReduce(const at::Tensor& input, ReduceOp op) = 0;
  // Concatenates every rank's tensor on dim 0 (all the same shape) in rank order.
  virtual at::Tensor AllGather(const at::Tensor& input) = 0;
  // Returns root's tensor on every rank; `input` must have the same shape and dtype everywhere.
  virtual at::Tensor Broadcast(const at::Tensor& input, int root) = 0;
  virtual void Barrier() = 0;
  // Blocks the calling thread until every collective this rank issued has completed (a no-op for
  // synchronous backends). For timing and tests.
  virtual void Synchronize() {}
};

const char* ReduceOpName(ReduceOp op);

// A group of one: every collective returns its input (or a copy of it).
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "local"; }
  at::Tensor AllToAll(const at::Tensor& input) override { return input; }
  at::Tensor AllReduce(const at::Tensor& input, ReduceOp) override { return input; }
  at::Tensor AllGather(const at::Tensor& input) override { return input; }
  at::Tensor Broadcast(const at::Tensor& input, int) override { return input; }
  void Barrier() override {}
};

}  // namespace stas::parallel

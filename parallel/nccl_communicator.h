// NcclCommunicator: the Communicator for CUDA tensors (built only with STAS_HAVE_NCCL).
//
// One ncclComm per process group, created collectively: rank 0 of the group draws the NCCL unique id
// and broadcasts it over the group's MPI communicator. Collectives are enqueued on the current CUDA
// stream of the communicator's device and return without waiting (stream order makes the result
// visible to later work on that stream; Synchronize() waits). Every collective is registered with the
// watchdog through a CUDA event; one that does not complete in time gets ncclCommAbort and a clear
// report before the process ends.
//
// Inputs must be CUDA tensors on the communicator's device, of the same shape on every rank (not
// verified: that would cost a round trip per call; a mismatch shows up as a hang the watchdog names).
// Thread-safety: one thread at a time.
#pragma once

#if STAS_HAVE_NCCL

#include <mpi.h>

#include <memory>
#include <string>

#include "parallel/communicator.h"
#include "parallel/watchdog.h"

struct ncclComm;  // nccl.h: typedef struct ncclComm* ncclComm_t

namespace stas::parallel {

// "NCCL 2.28.9" (the library loaded at run time).
std::string NcclLibraryVersion();

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `group`. `device_index` is this rank's CUDA device. `watchdog` (optional, not
  // owned) must outlive this object; `context` names the group in reports.
  static std::unique_ptr<NcclCommunicator> Create(MPI_Comm group, int device_index, Watchdog* watchdog = nullptr,
                                                  std::string context = "");
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  at::Tensor AllToAll(const at::Tensor& input) override;
  // Sum of bool tensors is a logical or.
  at::Tensor AllReduce(const at::Tensor& input, ReduceOp op) override;
  at::Tensor AllGather(const at::Tensor& input) override;
  at::Tensor Broadcast(const at::Tensor& input, int root) override;
  // NCCL has no barrier: a one-element all-reduce, then the stream is synchronized.
  void Barrier() override;
  void Synchronize() override;
  int device_index() const { return device_index_; }

 private:
  NcclCommunicator(ncclComm* comm, int rank, int size, int device_index, Watchdog* watchdog, std::string context);
  void CheckInput(const char* collective, const at::Tensor& input) const;
  // Registers the work just enqueued on the current stream with the watchdog.
  void Watch(const char* collective);

  ncclComm* comm_;
  int rank_;
  int size_;
  int device_index_;
  Watchdog* watchdog_;
  std::string context_;
};

}  // namespace stas::parallel

#endif  // STAS_HAVE_NCCL

// MpiCommunicator: the Communicator for CPU tensors, over one MPI communicator.
//
// Used for CPU inference under mpirun (tests, CI, the tiny model) and by NcclCommunicator's setup.
// Every collective is blocking and synchronous. Before moving data, the ranks agree on the tensor's
// dtype, shape and device with one tiny all-reduce, so a mismatch (or a CUDA tensor) is the same clear
// CheckFailure on every rank instead of a hang or silently wrong data; set_verify_shapes(false) skips
// that round trip where a caller has already proved the shapes agree.
//
// Thread-safety: one thread at a time per communicator (MPI ordering rules); different communicators
// may be used from different threads when MPI granted MPI_THREAD_MULTIPLE.
#pragma once

#include <string>

#include "parallel/communicator.h"
#include "parallel/mpi_environment.h"
#include "parallel/watchdog.h"

namespace stas::parallel {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (typically MpiComm::Duplicate of a ProcessGroups communicator, so its
  // messages never mix with anyone else's). `watchdog` (optional, not owned) must outlive this object
  // and watches every collective; `context` names the group in its reports ("sequence group").
  explicit MpiCommunicator(MpiComm comm, Watchdog* watchdog = nullptr, std::string context = "");

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  at::Tensor AllToAll(const at::Tensor& input) override;
  // Sum of bool tensors is a logical or; half and bfloat16 are reduced in float32 and rounded once.
  at::Tensor AllReduce(const at::Tensor& input, ReduceOp op) override;
  at::Tensor AllGather(const at::Tensor& input) override;
  at::Tensor Broadcast(const at::Tensor& input, int root) override;
  void Barrier() override;

  void set_verify_shapes(bool verify) { verify_shapes_ = verify; }
  MPI_Comm comm() const { return comm_.get(); }

 private:
  // Collective: throws on every rank unless all ranks pass a CPU tensor of one dtype and shape.
  void VerifyAgreement(const char* collective, const at::Tensor& input);
  Watchdog::Operation Op(const char* collective) const;

  MpiComm comm_;
  Watchdog* watchdog_;
  std::string context_;
  int rank_ = 0;
  int size_ = 1;
  bool verify_shapes_ = true;
};

}  // namespace stas::parallel

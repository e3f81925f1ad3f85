#include "parallel/mpi_communicator.h"

#include <algorithm>
#include <array>
#include <climits>
#include <sstream>
#include <utility>

#include "common/check.h"

namespace stas::parallel {

namespace {

// A byte count as an MPI (datatype, int count) pair. Counts past INT_MAX use a contiguous type of a
// power-of-two number of bytes, which every tensor this large divides into.
class ByteMessage {
 public:
  explicit ByteMessage(size_t bytes) {
    if (bytes <= static_cast<size_t>(INT_MAX)) {
      count_ = static_cast<int>(bytes);
      return;
    }
    size_t unit = 1;
    while (bytes / unit > static_cast<size_t>(INT_MAX) && bytes % (unit * 2) == 0 && unit < (size_t{1} << 24)) unit *= 2;
    STAS_CHECK(bytes / unit <= static_cast<size_t>(INT_MAX))
        << "a message of " << bytes << " bytes is too large for MPI's int counts";
    STAS_MPI_CHECK(MPI_Type_contiguous(static_cast<int>(unit), MPI_BYTE, &type_));
    owned_ = true;
    STAS_MPI_CHECK(MPI_Type_commit(&type_));
    count_ = static_cast<int>(bytes / unit);
  }
  ~ByteMessage() {
    if (owned_) MPI_Type_free(&type_);
  }
  ByteMessage(const ByteMessage&) = delete;
  ByteMessage& operator=(const ByteMessage&) = delete;
  MPI_Datatype type() const { return type_; }
  int count() const { return count_; }

 private:
  MPI_Datatype type_ = MPI_BYTE;
  int count_ = 0;
  bool owned_ = false;
};

size_t Bytes(const at::Tensor& t) { return static_cast<size_t>(t.numel()) * t.element_size(); }

std::string Describe(const at::Tensor& t) {
  std::ostringstream out;
  out << t.scalar_type() << " " << t.sizes() << " on " << t.device();
  return out.str();
}

// The MPI type of the tensor that AllReduce actually reduces (after its bool/half promotions).
MPI_Datatype ReductionType(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    case at::kShort: return MPI_INT16_T;
    case at::kChar: return MPI_INT8_T;
    case at::kByte: return MPI_UINT8_T;
    default: return MPI_DATATYPE_NULL;
  }
}

}  // namespace

MpiCommunicator::MpiCommunicator(MpiComm comm, Watchdog* watchdog, std::string context)
    : comm_(std::move(comm)), watchdog_(watchdog), context_(std::move(context)) {
  STAS_CHECK(comm_.valid()) << "MpiCommunicator needs a valid MPI communicator";
  rank_ = comm_.rank();
  size_ = comm_.size();
}

Watchdog::Operation MpiCommunicator::Op(const char* collective) const {
  Watchdog::Operation op;
  op.collective = collective;
  op.backend = "mpi";
  op.rank = rank_;
  op.context = context_.empty() ? "group of " + std::to_string(size_) : context_ + " of " + std::to_string(size_);
  return op;
}

void MpiCommunicator::VerifyAgreement(const char* collective, const at::Tensor& input) {
  constexpr int kDims = 8;
  constexpr int kFields = 4 + kDims;
  std::array<int64_t, kFields> fingerprint{};
  fingerprint[0] = static_cast<int64_t>(input.device().type());
  fingerprint[1] = static_cast<int64_t>(input.scalar_type());
  fingerprint[2] = input.dim();
  fingerprint[3] = input.numel();
  for (int d = 0; d < kDims; ++d) fingerprint[4 + d] = d < input.dim() ? input.size(d) : -1;
  if (verify_shapes_) {
    // max(v) and max(-v) in one reduction: the ranks agree iff max == min for every field.
    std::array<int64_t, 2 * kFields> extremes{};
    for (int i = 0; i < kFields; ++i) {
      extremes[i] = fingerprint[i];
      extremes[kFields + i] = -fingerprint[i];
    }
    STAS_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, extremes.data(), 2 * kFields, MPI_INT64_T, MPI_MAX, comm_.get()));
    for (int i = 0; i < kFields; ++i) {
      STAS_CHECK(extremes[i] == -extremes[kFields + i])
          << "MpiCommunicator " << collective << ": the ranks of the group pass different tensors (rank "
          << rank_ << " passes " << Describe(input) << "); every rank must pass the same dtype and shape";
    }
  }
  STAS_CHECK(input.device().is_cpu()) << "MpiCommunicator " << collective << " handles CPU tensors, got "
                                      << Describe(input) << " (CUDA tensors go through NcclCommunicator)";
}

at::Tensor MpiCommunicator::AllToAll(const at::Tensor& input) {
  WatchdogScope watch(watchdog_, Op("all_to_all"));
  VerifyAgreement("all_to_all", input);
  STAS_CHECK(input.dim() >= 1 && input.size(0) % size_ == 0)
      << "all_to_all splits dim 0 into " << size_ << " equal chunks, got " << Describe(input);
  const at::Tensor send = input.contiguous();
  at::Tensor receive = at::empty_like(send, at::MemoryFormat::Contiguous);
  const size_t chunk = Bytes(send) / static_cast<size_t>(size_);
  if (chunk == 0) return receive;
  ByteMessage message(chunk);
  STAS_MPI_CHECK(MPI_Alltoall(send.data_ptr(), message.count(), message.type(), receive.data_ptr(), message.count(),
                              message.type(), comm_.get()));
  return receive;
}

at::Tensor MpiCommunicator::AllReduce(const at::Tensor& input, ReduceOp op) {
  WatchdogScope watch(watchdog_, Op(op == ReduceOp::kSum ? "all_reduce(sum)" : "all_reduce(max)"));
  VerifyAgreement(op == ReduceOp::kSum ? "all_reduce(sum)" : "all_reduce(max)", input);
  const at::ScalarType original = input.scalar_type();
  at::Tensor work;
  MPI_Op mpi_op = op == ReduceOp::kSum ? MPI_SUM : MPI_MAX;
  if (original == at::kBool) {
    work = input.to(at::kByte, /*non_blocking=*/false, /*copy=*/true).contiguous();
    mpi_op = MPI_MAX;  // or
  } else if (original == at::kHalf || original == at::kBFloat16) {
    work = input.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
  } else {
    work = input.contiguous().clone();
  }
  const MPI_Datatype type = ReductionType(work.scalar_type());
  STAS_CHECK(type != MPI_DATATYPE_NULL) << "MpiCommunicator all_reduce does not support " << Describe(input);
  // MPI counts are ints: reduce very large tensors in slices.
  constexpr int64_t kSlice = int64_t{1} << 30;
  char* base = static_cast<char*>(work.data_ptr());
  for (int64_t offset = 0; offset < work.numel(); offset += kSlice) {
    const int count = static_cast<int>(std::min(kSlice, work.numel() - offset));
    STAS_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, base + offset * work.element_size(), count, type, mpi_op, comm_.get()));
  }
  if (original == at::kBool) return work.ne(0);
  return work.scalar_type() == original ? work : work.to(original);
}

at::Tensor MpiCommunicator::AllGather(const at::Tensor& input) {
  WatchdogScope watch(watchdog_, Op("all_gather"));
  VerifyAgreement("all_gather", input);
  STAS_CHECK(input.dim() >= 1) << "all_gather concatenates on dim 0 and needs a tensor of rank >= 1, got "
                               << Describe(input);
  const at::Tensor send = input.contiguous();
  std::vector<int64_t> shape = send.sizes().vec();
  shape[0] *= size_;
  at::Tensor receive = at::empty(shape, send.options());
  const size_t bytes = Bytes(send);
  if (bytes == 0) return receive;
  ByteMessage message(bytes);
  STAS_MPI_CHECK(MPI_Allgather(send.data_ptr(), message.count(), message.type(), receive.data_ptr(), message.count(),
                               message.type(), comm_.get()));
  return receive;
}

at::Tensor MpiCommunicator::Broadcast(const at::Tensor& input, int root) {
  WatchdogScope watch(watchdog_, Op("broadcast"));
  STAS_CHECK(root >= 0 && root < size_) << "broadcast root " << root << " outside a group of " << size_;
  VerifyAgreement("broadcast", input);
  at::Tensor buffer = rank_ == root ? input.contiguous().clone() : at::empty(input.sizes(), input.options());
  const size_t bytes = Bytes(buffer);
  if (bytes == 0) return buffer;
  ByteMessage message(bytes);
  STAS_MPI_CHECK(MPI_Bcast(buffer.data_ptr(), message.count(), message.type(), root, comm_.get()));
  return buffer;
}

void MpiCommunicator::Barrier() {
  WatchdogScope watch(watchdog_, Op("barrier"));
  STAS_MPI_CHECK(MPI_Barrier(comm_.get()));
}

}  // namespace stas::parallel

// Built only with STAS_HAVE_NCCL (and therefore CUDA).
#include "parallel/nccl_communicator.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <memory>
#include <type_traits>
#include <utility>

#include "common/check.h"
#include "parallel/mpi_environment.h"

namespace stas::parallel {

namespace {

[[noreturn]] void ThrowNcclError(ncclResult_t result, const char* call, const char* file, int line) {
  StreamingCheckFailure failure(file, line, "NCCL call failed:");
  failure << call << ": " << ncclGetErrorString(result);
  const char* detail = ncclGetLastError(nullptr);
  if (detail != nullptr && detail[0] != '\0') failure << " (" << detail << ")";
  failure << " [" << NcclLibraryVersion() << "]";
  failure.Throw();
}

[[noreturn]] void ThrowCudaError(cudaError_t result, const char* call, const char* file, int line) {
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  StreamingCheckFailure failure(file, line, "CUDA call failed:");
  failure << call << ": " << cudaGetErrorName(result) << ": " << cudaGetErrorString(result) << " [CUDA runtime "
          << runtime / 1000 << "." << (runtime % 1000) / 10 << "]";
  failure.Throw();
}

}  // namespace

}  // namespace stas::parallel

// ncclInProgress is only returned by non-blocking communicators, which this file does not create.
#define STAS_NCCL_CHECK(call)                                                       \
  do {                                                                              \
    const ncclResult_t _stas_nccl_rc = (call);                                      \
    if (_stas_nccl_rc != ncclSuccess)                                               \
      ::stas::parallel::ThrowNcclError(_stas_nccl_rc, #call, __FILE__, __LINE__);   \
  } while (0)

#define STAS_CUDA_CHECK(call)                                                       \
  do {                                                                              \
    const cudaError_t _stas_cuda_rc = (call);                                       \
    if (_stas_cuda_rc != cudaSuccess)                                               \
      ::stas::parallel::ThrowCudaError(_stas_cuda_rc, #call, __FILE__, __LINE__);   \
  } while (0)

namespace stas::parallel {

namespace {

using EventHandle = std::shared_ptr<std::remove_pointer_t<cudaEvent_t>>;

size_t Bytes(const at::Tensor& t) { return static_cast<size_t>(t.numel()) * t.element_size(); }

ncclDataType_t NcclReductionType(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return ncclFloat32;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kDouble: return ncclFloat64;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    case at::kChar: return ncclInt8;
    default: return ncclNumTypes;  // unsupported
  }
}

cudaStream_t CurrentStream(int device_index) {
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_index)).stream();
}

}  // namespace

std::string NcclLibraryVersion() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return "NCCL (unknown version)";
  // Since 2.9 the code is major * 10000 + minor * 100 + patch.
  return "NCCL " + std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "." +
         std::to_string(version % 100);
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::Create(MPI_Comm group, int device_index, Watchdog* watchdog,
                                                           std::string context) {
  int rank = 0;
  int size = 0;
  STAS_MPI_CHECK(MPI_Comm_rank(group, &rank));
  STAS_MPI_CHECK(MPI_Comm_size(group, &size));
  ncclUniqueId id{};
  if (rank == 0) STAS_NCCL_CHECK(ncclGetUniqueId(&id));
  STAS_MPI_CHECK(MPI_Bcast(&id, static_cast<int>(sizeof(id)), MPI_BYTE, 0, group));

  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index));
  ncclComm_t comm = nullptr;
  {
    // Initialization is itself collective: it hangs if a peer never arrives.
    Watchdog::Operation op;
    op.collective = "nccl_init";
    op.backend = "nccl";
    op.rank = rank;
    op.context = context;
    WatchdogScope watch(watchdog, std::move(op));
    STAS_NCCL_CHECK(ncclCommInitRank(&comm, size, id, rank));
  }
  return std::unique_ptr<NcclCommunicator>(
      new NcclCommunicator(comm, rank, size, device_index, watchdog, std::move(context)));
}

NcclCommunicator::NcclCommunicator(ncclComm* comm, int rank, int size, int device_index, Watchdog* watchdog,
                                   std::string context)
    : comm_(comm), rank_(rank), size_(size), device_index_(device_index), watchdog_(watchdog),
      context_(std::move(context)) {}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ == nullptr) return;
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index_));
  // Let enqueued collectives finish so the watchdog retires them before the comm goes away.
  cudaStreamSynchronize(CurrentStream(device_index_));
  ncclCommDestroy(comm_);
}

void NcclCommunicator::CheckInput(const char* collective, const at::Tensor& input) const {
  STAS_CHECK(input.is_cuda() && input.device().index() == device_index_)
      << "NcclCommunicator " << collective << " on cuda:" << device_index_ << " got a tensor on " << input.device()
      << " (CPU tensors go through MpiCommunicator)";
}

void NcclCommunicator::Watch(const char* collective) {
  if (watchdog_ == nullptr) return;
  cudaEvent_t raw = nullptr;
  STAS_CUDA_CHECK(cudaEventCreateWithFlags(&raw, cudaEventDisableTiming));
  EventHandle event(raw, [](cudaEvent_t e) { cudaEventDestroy(e); });
  STAS_CUDA_CHECK(cudaEventRecord(raw, CurrentStream(device_index_)));
  Watchdog::Operation op;
  op.collective = collective;
  op.backend = "nccl";
  op.rank = rank_;
  op.context = context_.empty() ? "group of " + std::to_string(size_) : context_ + " of " + std::to_string(size_);
  const int device = device_index_;
  op.is_complete = [event, device] {
    // The watchdog thread must not create a context on device 0 for every rank.
    cudaSetDevice(device);
    // Any answer but "not ready" ends the watch: errors surface on the stream's next synchronization.
    return cudaEventQuery(event.get()) != cudaErrorNotReady;
  };
  ncclComm_t comm = comm_;
  op.abort = [comm] { ncclCommAbort(comm); };
  watchdog_->Begin(std::move(op));
}

at::Tensor NcclCommunicator::AllToAll(const at::Tensor& input) {
  CheckInput("all_to_all", input);
  STAS_CHECK(input.dim() >= 1 && input.size(0) % size_ == 0)
      << "all_to_all splits dim 0 into " << size_ << " equal chunks, got " << input.sizes();
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index_));
  const at::Tensor send = input.contiguous();
  at::Tensor receive = at::empty_like(send, at::MemoryFormat::Contiguous);
  const size_t chunk = Bytes(send) / static_cast<size_t>(size_);
  if (chunk == 0) return receive;
  const auto* send_bytes = static_cast<const char*>(send.data_ptr());
  auto* receive_bytes = static_cast<char*>(receive.data_ptr());
  const cudaStream_t stream = CurrentStream(device_index_);
  // Pairwise sends and receives fused into one NCCL launch. The group is always closed, even when a
  // call inside it fails, so the communicator stays usable for the error report.
  STAS_NCCL_CHECK(ncclGroupStart());
  ncclResult_t first_error = ncclSuccess;
  for (int peer = 0; peer < size_ && first_error == ncclSuccess; ++peer) {
    first_error = ncclSend(send_bytes + peer * chunk, chunk, ncclUint8, peer, comm_, stream);
    if (first_error == ncclSuccess) {
      first_error = ncclRecv(receive_bytes + peer * chunk, chunk, ncclUint8, peer, comm_, stream);
    }
  }
  const ncclResult_t end = ncclGroupEnd();
  STAS_NCCL_CHECK(first_error);
  STAS_NCCL_CHECK(end);
  Watch("all_to_all");
  return receive;
}

at::Tensor NcclCommunicator::AllReduce(const at::Tensor& input, ReduceOp op) {
  const char* name = op == ReduceOp::kSum ? "all_reduce(sum)" : "all_reduce(max)";
  CheckInput(name, input);
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index_));
  const bool is_bool = input.scalar_type() == at::kBool;
  const at::Tensor send = is_bool ? input.to(at::kByte).contiguous() : input.contiguous();
  const ncclDataType_t type = NcclReductionType(send.scalar_type());
  STAS_CHECK(type != ncclNumTypes) << "NcclCommunicator all_reduce does not support " << input.scalar_type();
  at::Tensor receive = at::empty_like(send, at::MemoryFormat::Contiguous);
  if (send.numel() > 0) {
    const ncclRedOp_t nccl_op = (is_bool || op == ReduceOp::kMax) ? ncclMax : ncclSum;
    STAS_NCCL_CHECK(ncclAllReduce(send.data_ptr(), receive.data_ptr(), static_cast<size_t>(send.numel()), type,
                                  nccl_op, comm_, CurrentStream(device_index_)));
    Watch(name);
  }
  return is_bool ? receive.ne(0) : receive;
}

at::Tensor NcclCommunicator::AllGather(const at::Tensor& input) {
  CheckInput("all_gather", input);
  STAS_CHECK(input.dim() >= 1) << "all_gather concatenates on dim 0 and needs a tensor of rank >= 1, got "
                               << input.sizes();
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index_));
  const at::Tensor send = input.contiguous();
  std::vector<int64_t> shape = send.sizes().vec();
  shape[0] *= size_;
  at::Tensor receive = at::empty(shape, send.options());
  const size_t bytes = Bytes(send);
  if (bytes == 0) return receive;
  STAS_NCCL_CHECK(
      ncclAllGather(send.data_ptr(), receive.data_ptr(), bytes, ncclUint8, comm_, CurrentStream(device_index_)));
  Watch("all_gather");
  return receive;
}

at::Tensor NcclCommunicator::Broadcast(const at::Tensor& input, int root) {
  CheckInput("broadcast", input);
  STAS_CHECK(root >= 0 && root < size_) << "broadcast root " << root << " outside a group of " << size_;
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index_));
  const at::Tensor send = input.contiguous();
  at::Tensor receive = at::empty_like(send, at::MemoryFormat::Contiguous);
  const size_t bytes = Bytes(send);
  if (bytes == 0) return receive;
  // The send buffer is read on the root only.
  STAS_NCCL_CHECK(ncclBroadcast(send.data_ptr(), receive.data_ptr(), bytes, ncclUint8, root, comm_,
                                CurrentStream(device_index_)));
  Watch("broadcast");
  return receive;
}

void NcclCommunicator::Barrier() {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index_));
  const at::Tensor token = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, device_index_));
  at::Tensor reduced = at::empty_like(token);
  STAS_NCCL_CHECK(ncclAllReduce(token.data_ptr(), reduced.data_ptr(), 1, ncclFloat32, ncclSum, comm_,
                                CurrentStream(device_index_)));
  Watch("barrier");
  Synchronize();
}

void NcclCommunicator::Synchronize() {
  STAS_CUDA_CHECK(cudaStreamSynchronize(CurrentStream(device_index_)));
}

}  // namespace stas::parallel

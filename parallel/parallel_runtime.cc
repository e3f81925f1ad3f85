#include "parallel/parallel_runtime.h"

#include "parallel/mpi_communicator.h"
#if STAS_HAVE_NCCL
#include "parallel/nccl_communicator.h"
#endif

namespace stas::parallel {

Result<std::unique_ptr<Communicator>> MakeGroupCommunicator(MPI_Comm comm, const at::Device& device,
                                                            Watchdog* watchdog, const std::string& context) {
  if (device.is_cpu()) {
    return std::unique_ptr<Communicator>(new MpiCommunicator(MpiComm::Duplicate(comm), watchdog, context));
  }
#if STAS_HAVE_NCCL
  if (device.is_cuda()) {
    return std::unique_ptr<Communicator>(
        NcclCommunicator::Create(comm, device.has_index() ? device.index() : 0, watchdog, context));
  }
#endif
  return NotImplemented("no communicator for " + device.str() + " tensors in this build" +
                        (device.is_cuda() ? " (built without NCCL)" : ""));
}

Result<std::unique_ptr<ParallelRuntime>> ParallelRuntime::Create(const ProcessGroups& groups, at::Device device,
                                                                 int64_t heads, ParallelRuntimeOptions options) {
  const GroupLayout& layout = groups.layout();
  // Every check below depends only on values all ranks share, so all ranks return together.
  STAS_RETURN_IF_ERROR(UlyssesAttention::CheckHeads(heads, layout.sp));
  if (!device.is_cpu() && !device.is_cuda()) {
    return InvalidArgument("parallel rendering supports CPU and CUDA devices, got " + device.str());
  }
#if !STAS_HAVE_NCCL
  if (device.is_cuda() && layout.group_size() > 1) {
    return NotImplemented("sequence/CFG parallelism on CUDA needs a build with NCCL (STAS_WITH_NCCL)");
  }
#endif
  std::unique_ptr<ParallelRuntime> runtime(new ParallelRuntime(groups));
  Watchdog::Options watch;
  watch.timeout = options.collective_timeout;
  runtime->watchdog_ = std::make_unique<Watchdog>(watch);
  try {
    const std::string where = "world rank " + std::to_string(layout.world_rank) + ", ";
    if (layout.sp > 1) {
      STAS_ASSIGN_OR_RETURN(runtime->sequence_, MakeGroupCommunicator(groups.sequence(), device, runtime->watchdog_.get(),
                                                                 where + "sequence group"));
      runtime->ulysses_ = std::make_unique<UlyssesAttention>(*runtime->sequence_);
    }
    if (layout.cfg == 2) {
      STAS_ASSIGN_OR_RETURN(runtime->pair_, MakeGroupCommunicator(groups.cfg_pair(), device, runtime->watchdog_.get(),
                                                             where + "CFG pair"));
      runtime->cfg_ = std::make_unique<CfgParallel>(*runtime->pair_);
    }
  } catch (const std::exception& e) {
    // A failing library call here (MPI, NCCL, CUDA) is not the user's input: report it as unavailable.
    return Unavailable(std::string("setting up the parallel groups failed: ") + e.what());
  }
  return runtime;
}

at::Device ParallelRuntime::DeviceForRank(const ProcessGroups& groups, bool cuda) {
  if (!cuda) return at::kCPU;
  const size_t count = at::getNumGPUs();
  if (count == 0) return at::Device(at::kCUDA, 0);  // the caller's CUDA use will fail with a clear error
  return at::Device(at::kCUDA, static_cast<at::DeviceIndex>(groups.local_rank() % static_cast<int>(count)));
}

}  // namespace stas::parallel

// ParallelRuntime: everything a rendering rank needs from parallel/, built from its ProcessGroups.
//
// For a model on `device` it creates the communicators of the rank's sequence group and CFG pair
// (MPI for CPU models, NCCL for CUDA models), a watchdog over all of them, UlyssesAttention (handed
// to models through ForwardContext::parallel) and CfgParallel. A renderer uses it like this:
//
//   ForwardContext ctx;  ctx.parallel = runtime->sequence_parallel();         // null when sp == 1
//   if (CfgParallel* cfg = runtime->cfg_parallel()) {                         // null when cfg == 1
//     text = cfg->branch() == kCond ? cond_text : uncond_text;  ctx.branches = {cfg->branch()};
//     noise = cfg->Combine(model.Forward(latents, t, text, ctx), guidance);    // same on both halves
//   } else { ...two forwards (cond, uncond) and the usual combine... }
//
// Every rank of the group must create it, with the same arguments, at the same point (collective).
// Not thread-safe; owns its communicators and watchdog; `groups` must outlive it.
#pragma once

#include <chrono>
#include <memory>

#include "common/status.h"
#include "models/dit.h"
#include "parallel/cfg_parallel.h"
#include "parallel/communicator.h"
#include "parallel/process_groups.h"
#include "parallel/ulysses.h"
#include "parallel/watchdog.h"

namespace stas::parallel {

// The communicator for one process group of this rank: MpiCommunicator (over a duplicate of `comm`)
// for CPU models, NcclCommunicator for CUDA models (NotImplemented in a build without NCCL).
// Collective over `comm`; a failing transport throws CheckFailure. `watchdog` (optional, not owned)
// must outlive the communicator.
Result<std::unique_ptr<Communicator>> MakeGroupCommunicator(MPI_Comm comm, const at::Device& device,
                                                            Watchdog* watchdog, const std::string& context);

struct ParallelRuntimeOptions {
  // A collective that takes longer ends the process with a report (see watchdog.h). Generous: the
  // first collective of a job waits for the slowest rank to load its model.
  std::chrono::milliseconds collective_timeout{std::chrono::minutes(10)};
};

class ParallelRuntime {
 public:
  // Collective over the group. `heads` is the model's attention head count: InvalidArgument (on every
  // rank alike) when it does not split over sp. A CUDA `device` needs a build with NCCL
  // (NotImplemented otherwise).
  static Result<std::unique_ptr<ParallelRuntime>> Create(const ProcessGroups& groups, at::Device device, int64_t heads,
                                                         ParallelRuntimeOptions options = {});

  const GroupLayout& layout() const { return groups_.layout(); }
  // Null when sp == 1 (plain single-device attention).
  models::SequenceParallel* sequence_parallel() { return ulysses_.get(); }
  // Null when the group does not run the CFG branches in parallel.
  CfgParallel* cfg_parallel() { return cfg_.get(); }
  // The sequence-group and CFG-pair communicators (null when that group has one rank).
  Communicator* sequence_communicator() { return sequence_.get(); }
  Communicator* cfg_communicator() { return pair_.get(); }
  Watchdog& watchdog() { return *watchdog_; }

  // The CUDA device of this rank: local rank (on its node) modulo the visible device count. CPU when
  // `cuda` is false.
  static at::Device DeviceForRank(const ProcessGroups& groups, bool cuda);

 private:
  explicit ParallelRuntime(const ProcessGroups& groups) : groups_(groups) {}

  const ProcessGroups& groups_;
  // Members are destroyed in reverse order: users of the communicators, the communicators, and last
  // the watchdog they report to.
  std::unique_ptr<Watchdog> watchdog_;
  std::unique_ptr<Communicator> sequence_;
  std::unique_ptr<Communicator> pair_;
  std::unique_ptr<UlyssesAttention> ulysses_;
  std::unique_ptr<CfgParallel> cfg_;
};

}  // namespace stas::parallel

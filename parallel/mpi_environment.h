// MPI plumbing shared by every MPI user in parallel/: the process-wide environment owner, an RAII
// owner for MPI_Comm handles, and STAS_MPI_CHECK.
//
// Error model: communicators made here use MPI_ERRORS_RETURN, so a failed MPI call comes back as a
// return code and STAS_MPI_CHECK throws stas::CheckFailure naming the call, file:line, the MPI library
// version and MPI's own error string. A failed collective is a bug or a dead peer, not a user error.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "common/status.h"

namespace stas::parallel {

// "Open MPI v4.1.4, package: ..." (first line of MPI_Get_library_version); works before MPI_Init.
std::string MpiLibraryVersion();
// MPI's message for an error code.
std::string MpiErrorString(int code);

// Throws CheckFailure for a failed MPI call (used by STAS_MPI_CHECK).
[[noreturn]] void ThrowMpiError(int code, const char* call, const char* file, int line);

// True when this process was started by an MPI launcher (mpirun/mpiexec/srun with PMI), judged from
// the launcher's environment variables; used to decide whether `stas render` needs MPI at all.
bool LaunchedByMpiLauncher();

// Owns MPI initialization for the process: MPI_Init_thread on creation, MPI_Finalize on destruction.
// At most one may exist at a time. If MPI was already initialized by someone else, the object adopts
// it and does not finalize. Not thread-safe to create; the object itself is immutable afterwards.
class MpiEnvironment {
 public:
  // Requests MPI_THREAD_MULTIPLE (the watchdog and heartbeat threads run beside collectives) and
  // accepts whatever level the library grants; thread_level() tells which.
  static Result<std::unique_ptr<MpiEnvironment>> Initialize(int* argc = nullptr, char*** argv = nullptr);
  ~MpiEnvironment();
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  int thread_level() const { return thread_level_; }
  MPI_Comm world() const { return MPI_COMM_WORLD; }

 private:
  MpiEnvironment() = default;
  bool owns_finalize_ = false;
  int world_rank_ = 0;
  int world_size_ = 1;
  int thread_level_ = MPI_THREAD_SINGLE;
};

// Owner of one MPI communicator handle (MPI_Comm_free on destruction unless it is a predefined
// handle or MPI is already finalized). Move-only.
class MpiComm {
 public:
  MpiComm() = default;
  // Collective over `parent`: a new communicator with the same ranks and its own message space,
  // with MPI_ERRORS_RETURN installed.
  static MpiComm Duplicate(MPI_Comm parent);
  // Collective over `parent` (MPI_Comm_split): ranks with the same color form one communicator,
  // ordered by key. Returns an empty MpiComm for color MPI_UNDEFINED.
  static MpiComm Split(MPI_Comm parent, int color, int key);
  // Collective: ranks sharing memory (one node) form one communicator.
  static MpiComm SplitShared(MPI_Comm parent);
  ~MpiComm();
  MpiComm(MpiComm&& other) noexcept;
  MpiComm& operator=(MpiComm&& other) noexcept;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  MPI_Comm get() const { return comm_; }
  bool valid() const { return comm_ != MPI_COMM_NULL; }
  int rank() const;
  int size() const;

 private:
  explicit MpiComm(MPI_Comm comm) : comm_(comm) {}
  void Reset();
  MPI_Comm comm_ = MPI_COMM_NULL;
};

}  // namespace stas::parallel

#define STAS_MPI_CHECK(call)                                                          \
  do {                                                                                \
    const int _stas_mpi_rc = (call);                                                  \
    if (_stas_mpi_rc != MPI_SUCCESS)                                                  \
      ::stas::parallel::ThrowMpiError(_stas_mpi_rc, #call, __FILE__, __LINE__);       \
  } while (0)

#include "parallel/mpi_environment.h"

#include <atomic>
#include <cstdlib>
#include <utility>

#include "common/check.h"

namespace stas::parallel {

namespace {
std::atomic<bool> g_environment_alive{false};

bool MpiFinalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}
}  // namespace

std::string MpiLibraryVersion() {
  char buffer[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  if (MPI_Get_library_version(buffer, &length) != MPI_SUCCESS) return "unknown MPI library";
  std::string version(buffer, static_cast<size_t>(length));
  // Open MPI's string runs over several lines and comma-separated fields; the first two say enough.
  const size_t cut = version.find_first_of("\n");
  if (cut != std::string::npos) version.resize(cut);
  const size_t second_comma = version.find(',', version.find(',') + 1);
  if (second_comma != std::string::npos) version.resize(second_comma);
  return version;
}

std::string MpiErrorString(int code) {
  char buffer[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, buffer, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(buffer, static_cast<size_t>(length)) + " (code " + std::to_string(code) + ")";
}

void ThrowMpiError(int code, const char* call, const char* file, int line) {
  StreamingCheckFailure failure(file, line, "MPI call failed:");
  failure << call << ": " << MpiErrorString(code) << " [" << MpiLibraryVersion() << "]";
  failure.Throw();
}

bool LaunchedByMpiLauncher() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

Result<std::unique_ptr<MpiEnvironment>> MpiEnvironment::Initialize(int* argc, char*** argv) {
  if (g_environment_alive.exchange(true)) {
    return Internal("MpiEnvironment::Initialize called while another MpiEnvironment exists");
  }
  std::unique_ptr<MpiEnvironment> env(new MpiEnvironment());
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) {
    MPI_Query_thread(&env->thread_level_);
  } else {
    if (MpiFinalized()) {
      g_environment_alive = false;
      return Internal("MPI was already finalized in this process; it cannot be initialized again");
    }
    const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &env->thread_level_);
    if (rc != MPI_SUCCESS) {
      g_environment_alive = false;
      return Unavailable("MPI_Init_thread failed: " + MpiErrorString(rc) + " [" + MpiLibraryVersion() + "]");
    }
    env->owns_finalize_ = true;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &env->world_rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &env->world_size_);
  return env;
}

MpiEnvironment::~MpiEnvironment() {
  if (owns_finalize_ && !MpiFinalized()) MPI_Finalize();
  g_environment_alive = false;
}

MpiComm MpiComm::Duplicate(MPI_Comm parent) {
  MPI_Comm comm = MPI_COMM_NULL;
  STAS_MPI_CHECK(MPI_Comm_dup(parent, &comm));
  MpiComm owned(comm);
  STAS_MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  return owned;
}

MpiComm MpiComm::Split(MPI_Comm parent, int color, int key) {
  MPI_Comm comm = MPI_COMM_NULL;
  STAS_MPI_CHECK(MPI_Comm_split(parent, color, key, &comm));
  MpiComm owned(comm);
  if (owned.valid()) STAS_MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  return owned;
}

MpiComm MpiComm::SplitShared(MPI_Comm parent) {
  MPI_Comm comm = MPI_COMM_NULL;
  int parent_rank = 0;
  STAS_MPI_CHECK(MPI_Comm_rank(parent, &parent_rank));
  STAS_MPI_CHECK(MPI_Comm_split_type(parent, MPI_COMM_TYPE_SHARED, parent_rank, MPI_INFO_NULL, &comm));
  MpiComm owned(comm);
  STAS_MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  return owned;
}

void MpiComm::Reset() {
  const bool predefined = comm_ == MPI_COMM_WORLD || comm_ == MPI_COMM_SELF;
  // Freeing after MPI_Finalize is illegal; the handle died with MPI anyway.
  if (comm_ != MPI_COMM_NULL && !predefined && !MpiFinalized()) MPI_Comm_free(&comm_);
  comm_ = MPI_COMM_NULL;
}

MpiComm::~MpiComm() { Reset(); }

MpiComm::MpiComm(MpiComm&& other) noexcept : comm_(std::exchange(other.comm_, MPI_COMM_NULL)) {}

MpiComm& MpiComm::operator=(MpiComm&& other) noexcept {
  if (this != &other) {
    Reset();
    comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
  }
  return *this;
}

int MpiComm::rank() const {
  STAS_CHECK(valid()) << "rank() of an empty MpiComm";
  int rank = 0;
  STAS_MPI_CHECK(MPI_Comm_rank(comm_, &rank));
  return rank;
}

int MpiComm::size() const {
  STAS_CHECK(valid()) << "size() of an empty MpiComm";
  int size = 0;
  STAS_MPI_CHECK(MPI_Comm_size(comm_, &size));
  return size;
}

}  // namespace stas::parallel

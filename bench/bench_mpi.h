// MPI helpers shared by the benchmarks that run under mpirun.
#pragma once

#include <mpi.h>

namespace stas::bench {

// The largest `value` over MPI_COMM_WORLD (collective): the slowest rank's timing, the largest error.
inline double MaxOverWorld(double value) {
  double out = value;
  MPI_Allreduce(&value, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return out;
}

}  // namespace stas::bench

// Shared helpers for the tests that run under mpirun (label mpi): the MPI world, a watchdog that turns
// a hang into an abort with a message, and tensors every rank can compute on its own.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <mpi.h>

#include <memory>
#include <string>

#include "parallel/mpi_communicator.h"
#include "parallel/watchdog.h"

namespace stas::testing {

int WorldRank();
int WorldSize();
// Times out collectives after 120 s and aborts the process naming the collective (a test that fails
// on one rank and skips a collective would otherwise hang until ctest's timeout).
parallel::Watchdog& TestWatchdog();
// A fresh communicator over a duplicate of `comm`, watched by TestWatchdog().
std::unique_ptr<parallel::MpiCommunicator> MakeCommunicator(MPI_Comm comm, const std::string& context);

// Deterministic pseudo-random tensor from a seed: identical on every rank.
inline at::Tensor SeededRandn(at::IntArrayRef shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat));
}

// Reference attention, written out independently of the code under test: softmax(q k^T scale) v
// over [B, H, L, D].
inline at::Tensor ReferenceAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  const at::Tensor scores = at::matmul(q.to(at::kDouble), k.to(at::kDouble).transpose(-2, -1)) * scale;
  return at::matmul(at::softmax(scores, -1), v.to(at::kDouble)).to(at::kFloat);
}

}  // namespace stas::testing

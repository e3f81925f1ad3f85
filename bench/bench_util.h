// Shared helpers for the benchmarks: device timing, peak memory, summaries.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#if STAS_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace stas::bench {

// The value after `name` on the command line, or `fallback`.
inline std::string Arg(int argc, char** argv, const char* name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == name) return argv[i + 1];
  return fallback;
}
// "1,0,4" -> {1, 0, 4} (an empty text -> none).
inline std::vector<int> IntList(const std::string& text) {
  std::vector<int> values;
  for (size_t begin = 0; begin < text.size();) {
    const size_t end = std::min(text.find(',', begin), text.size());
    values.push_back(std::stoi(text.substr(begin, end - begin)));
    begin = end + 1;
  }
  return values;
}
// Whether `name` is on the command line.
inline bool Flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == name) return true;
  return false;
}

inline void Synchronize(const at::Device& device) {
#if STAS_HAVE_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
}

inline void ResetPeakMemory(const at::Device& device) {
#if STAS_HAVE_CUDA
  if (device.is_cuda()) {
    at::empty({1}, at::TensorOptions().device(device));  // the allocator knows a device only once it is used
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
  }
#endif
}

// Peak bytes allocated by the caching allocator since the last reset (0 on CPU).
inline double PeakMemoryGiB(const at::Device& device) {
#if STAS_HAVE_CUDA
  if (device.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1ull << 30);
  }
#endif
  return 0.0;
}

// PSNR in dB of two uint8 (or [0, 255] float) videos of one shape, peak 255; 100 dB when identical.
inline double Psnr(const at::Tensor& a, const at::Tensor& b) {
  const double mse = (a.to(at::kDouble) - b.to(at::kDouble)).pow(2).mean().item<double>();
  return mse == 0 ? 100.0 : 10.0 * std::log10(255.0 * 255.0 / mse);
}

// Bytes allocated by the caching allocator now (0 on CPU): e.g. the resident weights before a forward.
inline double AllocatedMemoryGiB(const at::Device& device) {
#if STAS_HAVE_CUDA
  if (device.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return static_cast<double>(stats.allocated_bytes[0].current) / (1ull << 30);
  }
#endif
  return 0.0;
}

struct Summary {
  double median_ms = 0, min_ms = 0, max_ms = 0;
};

// Runs fn `warmup` times, then `repeats` timed runs (device synchronized around each).
inline Summary TimeIt(const at::Device& device, int warmup, int repeats, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  Synchronize(device);
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    Synchronize(device);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

inline std::string DeviceName(const at::Device& device) {
#if STAS_HAVE_CUDA
  if (device.is_cuda()) {
    // at::cuda::getDeviceProperties lives in ATen/cuda; the name is enough via the allocator-free path.
    return "cuda:" + std::to_string(device.index() < 0 ? 0 : device.index());
  }
#endif
  return "cpu";
}

}  // namespace stas::bench

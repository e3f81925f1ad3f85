// mp4_bench: the MP4 encode alone (storage::Mp4Writer, libx264 CRF 18 preset medium as the renderer
// uses it), by encoder thread count, on two kinds of 480p frames: a smooth moving gradient (what a
// model's video looks like to the encoder) and uniform noise (what a random-weight model renders, the
// encoder's worst case). Prints seconds, frames per second and bytes per run.
//
//   mp4_bench [--height 480 --width 832 --frames 81] [--threads 1,0]   (0 = one per core)
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "bench/bench_util.h"
#include "storage/mp4_writer.h"

using namespace stas;

int main(int argc, char** argv) {
  const int64_t height = std::stoi(bench::Arg(argc, argv, "--height", "480"));
  const int64_t width = std::stoi(bench::Arg(argc, argv, "--width", "832"));
  const int64_t frames = std::stoi(bench::Arg(argc, argv, "--frames", "81"));
  const std::vector<int> thread_counts = bench::IntList(bench::Arg(argc, argv, "--threads", "1,0"));

  // Smooth: diagonal colour ramps that drift a few pixels per frame.
  const at::Tensor t = at::arange(frames, at::kFloat).view({frames, 1, 1, 1});
  const at::Tensor y = at::arange(height, at::kFloat).view({1, height, 1, 1});
  const at::Tensor x = at::arange(width, at::kFloat).view({1, 1, width, 1});
  const at::Tensor phase = at::tensor({0.0f, 2.0f, 4.0f}).view({1, 1, 1, 3});
  const at::Tensor smooth = ((at::sin((x + y + 3 * t) / 60.0 + phase) + 1) * 127.5).to(at::kByte);
  const at::Tensor noise = at::randint(0, 256, {frames, height, width, 3}, at::kByte);

  const std::string out = (std::filesystem::temp_directory_path() / "stas-mp4-bench.mp4").string();
  for (int threads : thread_counts) {
    for (const auto& [name, video] : {std::pair{"smooth", smooth}, std::pair{"noise", noise}}) {
      storage::Mp4Options options;
      options.width = static_cast<int>(width);
      options.height = static_cast<int>(height);
      options.threads = threads;
      const auto start = std::chrono::steady_clock::now();
      const Status st = storage::WriteMp4(out, video, options);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!st.ok()) {
        std::fprintf(stderr, "mp4_bench: %s\n", st.ToString().c_str());
        return 1;
      }
      std::printf("%-6s %lldx%lldx%lld threads=%s: %.3f s (%.1f frames/s), %lld bytes\n", name,
                  static_cast<long long>(width), static_cast<long long>(height), static_cast<long long>(frames),
                  threads == 0 ? "auto" : std::to_string(threads).c_str(), s, frames / s,
                  static_cast<long long>(std::filesystem::file_size(out)));
    }
  }
  std::filesystem::remove(out);
  return 0;
}

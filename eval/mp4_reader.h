// Mp4Reader: decodes the video stream of an MP4 (or any container FFmpeg reads) into RGB float frames,
// the input of the metrics in eval/video_metrics.h.
//
// This header does not need FFmpeg. In a build without FFmpeg (STAS_WITH_FFMPEG=OFF) ReadVideo returns
// NotImplemented("built without FFmpeg ...").
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "common/status.h"

namespace stas::eval {

struct DecodedVideo {
  at::Tensor frames;  // [T, H, W, 3] float32 RGB in [0, 1], contiguous, on the CPU
  double fps = 0;     // the stream's average frame rate (0 when the container does not say)
  std::string codec;  // decoder name, e.g. "h264"
  int64_t num_frames() const { return frames.defined() ? frames.size(0) : 0; }
  int64_t height() const { return frames.defined() ? frames.size(1) : 0; }
  int64_t width() const { return frames.defined() ? frames.size(2) : 0; }
};

struct ReadOptions {
  int64_t max_frames = 0;  // stop after this many frames; 0 = all
};

// Decodes every frame of the first video stream. NotFound for a missing file, InvalidArgument for a
// file FFmpeg cannot open as a video or that holds no decodable frame, NotImplemented without FFmpeg.
// Thread-safe (each call owns its FFmpeg state).
Result<DecodedVideo> ReadVideo(const std::string& path, const ReadOptions& options = {});

// True when this build decodes video.
bool CanReadVideo();

}  // namespace stas::eval

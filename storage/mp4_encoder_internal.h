// Private to storage/: the encoder behind Mp4Writer. storage/mp4_writer_ffmpeg.cc implements it on
// FFmpeg; without FFmpeg, storage/mp4_writer.cc provides an OpenMp4Encoder that says so.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "common/status.h"
#include "storage/mp4_writer.h"

namespace stas::storage {

class Mp4Writer::Impl {
 public:
  virtual ~Impl() = default;
  // frames: contiguous CPU uint8 [T, H, W, 3] of the configured size.
  virtual Status Encode(const at::Tensor& frames) = 0;
  // Drains the encoder, writes the trailer and closes the file. Called once.
  virtual Status Close() = 0;
  virtual std::string codec_name() const = 0;
};

// Creates `file` and an encoder for `options` (already validated, codec name may be empty).
Result<std::unique_ptr<Mp4Writer::Impl>> OpenMp4Encoder(const std::string& file, const Mp4Options& options);

}  // namespace stas::storage

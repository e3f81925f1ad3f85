// Mp4Writer: encodes RGB frames to an MP4 file with FFmpeg's libraries (H.264 via libx264 when the
// FFmpeg build has it, else MPEG-4 part 2), yuv420p, constant frame rate.
//
// Files appear whole or not at all: frames go to a hidden temporary file in the destination folder,
// which Finish() renames into place. A writer destroyed before Finish(), or one whose encoding failed,
// removes its temporary file.
//
// This header does not need FFmpeg. In a build without FFmpeg (STAS_WITH_FFMPEG=OFF), Open returns
// NotImplemented("built without FFmpeg") and everything else here still works.
//
// Not thread-safe: one writer is used by one thread.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace stas::storage {

struct Mp4Options {
  int width = 0;    // pixels, even (yuv420p halves the chroma planes)
  int height = 0;
  int fps = 16;     // frames per second, in [1, 240]
  // Encoder name ("libx264", "mpeg4", ...); empty = libx264 when available, else mpeg4.
  std::string codec;
  int crf = 18;                      // libx264 quality (lower = better); mpeg4 uses a fixed qscale
  std::string x264_preset = "medium";
  // Encoder threads; 0 = FFmpeg picks (one per core). FFmpeg's library default is a single thread,
  // which left x264 finishing seconds after the last decoded frame of a 480p video.
  int threads = 0;
  bool faststart = true;             // moov atom in front, so HTTP clients can start playing early
};

class Mp4Writer {
 public:
  // Creates the temporary file beside `path` (whose folder must exist) and opens the encoder.
  // InvalidArgument for bad options, NotFound for a missing folder, NotImplemented without FFmpeg.
  static Result<std::unique_ptr<Mp4Writer>> Open(const std::string& path, const Mp4Options& options);
  ~Mp4Writer();
  Mp4Writer(const Mp4Writer&) = delete;
  Mp4Writer& operator=(const Mp4Writer&) = delete;

  // Appends frames: [T, H, W, 3] (or one [H, W, 3] frame) RGB, uint8 in [0, 255] or floating point
  // in [0, 1] (clamped and rounded), any device. H and W must match the options.
  Status WriteFrames(const at::Tensor& frames);

  // Flushes the encoder, writes the trailer, fsyncs, and renames the temporary file over `path`
  // (replacing an existing file). At least one frame must have been written.
  Status Finish();
  // Same as Finish but leaves the finished file at temp_path() for the caller to commit (e.g. with
  // storage::CommitOutput); the caller then owns (and must remove or rename) that file.
  Result<std::string> FinishToTemp();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }
  const std::string& codec_name() const { return codec_name_; }
  int64_t frames_written() const { return frames_written_; }

  class Impl;  // FFmpeg state (storage/mp4_writer_ffmpeg.cc)

 private:
  Mp4Writer(std::string path, std::string temp_path, std::unique_ptr<Impl> impl);
  Status FinishEncoding();
  void Discard();

  std::string path_;
  std::string temp_path_;
  std::string codec_name_;
  std::unique_ptr<Impl> impl_;
  int64_t frames_written_ = 0;
  bool finished_ = false;  // the temp file was handed on (renamed or given to the caller)
  bool failed_ = false;    // a previous call failed; the file is unusable
};

// Writes a whole video in one call: Open + WriteFrames + Finish. `frames` as in WriteFrames; width and
// height in `options` are taken from the tensor when left at 0.
Status WriteMp4(const std::string& path, const at::Tensor& frames, Mp4Options options);

// A decoded video [3, T, H, W] or [1, 3, T, H, W] with values in [-1, 1] (the VAE's output) ->
// uint8 frames [T, H, W, 3] on the CPU, ready for WriteFrames.
at::Tensor VideoToRgbFrames(const at::Tensor& video);
// Normalizes WriteFrames input: uint8 or float [T, H, W, 3] / [H, W, 3] -> contiguous CPU uint8
// [T, H, W, 3]. InvalidArgument for other shapes or dtypes.
Result<at::Tensor> ToUint8Frames(const at::Tensor& frames);

// A hidden temporary name in the folder of `path`: <dir>/.<file>.tmp.<pid>.<random>
std::string TemporaryPathFor(const std::string& path);

// "libavcodec 59.37.100, libavformat 59.27.100, ..." of the FFmpeg this binary runs with, or
// "none (built without FFmpeg)".
std::string FfmpegVersionString();
// True when this build encodes video.
bool HaveFfmpeg();

}  // namespace stas::storage

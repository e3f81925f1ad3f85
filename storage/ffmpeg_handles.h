// RAII owners for the FFmpeg handles shared by the encoder (storage/mp4_writer_ffmpeg.cc) and the
// decoder (eval/mp4_reader_ffmpeg.cc), and FFmpeg's error text. Include only from *_ffmpeg.cc files:
// it needs FFmpeg's headers.
#pragma once

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/error.h>
#include <libswscale/swscale.h>
}

#include <memory>
#include <string>

namespace stas::storage::ffmpeg {

struct CodecContextDeleter {
  void operator()(AVCodecContext* ctx) const { avcodec_free_context(&ctx); }
};
struct FrameDeleter {
  void operator()(AVFrame* frame) const { av_frame_free(&frame); }
};
struct PacketDeleter {
  void operator()(AVPacket* packet) const { av_packet_free(&packet); }
};
struct SwsDeleter {
  void operator()(SwsContext* sws) const { sws_freeContext(sws); }
};
// A demuxer opened by avformat_open_input (a muxer is freed differently: see the encoder).
struct InputDeleter {
  void operator()(AVFormatContext* ctx) const { avformat_close_input(&ctx); }
};

using CodecContextPtr = std::unique_ptr<AVCodecContext, CodecContextDeleter>;
using FramePtr = std::unique_ptr<AVFrame, FrameDeleter>;
using PacketPtr = std::unique_ptr<AVPacket, PacketDeleter>;
using SwsPtr = std::unique_ptr<SwsContext, SwsDeleter>;
using InputPtr = std::unique_ptr<AVFormatContext, InputDeleter>;

// av_strerror's text for an AVERROR code, or "error N" when FFmpeg has none.
inline std::string ErrorText(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  if (av_strerror(code, buf, sizeof(buf)) < 0) return "error " + std::to_string(code);
  return buf;
}

}  // namespace stas::storage::ffmpeg

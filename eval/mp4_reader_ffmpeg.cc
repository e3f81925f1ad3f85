// The FFmpeg decoder behind ReadVideo (built only with STAS_WITH_FFMPEG).
#include <cerrno>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
}

#include "eval/mp4_reader.h"
#include "storage/ffmpeg_handles.h"

namespace stas::eval {

namespace {

using storage::ffmpeg::ErrorText;
using storage::ffmpeg::CodecContextPtr;
using storage::ffmpeg::FramePtr;
using storage::ffmpeg::InputPtr;
using storage::ffmpeg::PacketPtr;
using storage::ffmpeg::SwsPtr;

Status AvFailure(const std::string& path, const char* call, int code) {
  return Internal(path + ": FFmpeg " + call + " failed: " + ErrorText(code));
}

class Decoder {
 public:
  explicit Decoder(std::string path, ReadOptions options) : path_(std::move(path)), options_(options) {}

  Result<DecodedVideo> Run() {
    STAS_RETURN_IF_ERROR(Open());
    PacketPtr packet(av_packet_alloc());
    frame_.reset(av_frame_alloc());
    if (!packet || !frame_) return Internal(path_ + ": out of memory allocating FFmpeg frames");
    bool draining = false;
    while (!Full()) {
      if (!draining) {
        const int rc = av_read_frame(input_.get(), packet.get());
        if (rc == AVERROR_EOF) {
          draining = true;
          STAS_RETURN_IF_ERROR(Send(nullptr));
        } else if (rc < 0) {
          return AvFailure(path_, "av_read_frame", rc);
        } else {
          Status st = packet->stream_index == stream_index_ ? Send(packet.get()) : Status::Ok();
          av_packet_unref(packet.get());
          STAS_RETURN_IF_ERROR(st);
        }
      }
      STAS_ASSIGN_OR_RETURN(bool finished, ReceiveAll());
      if (finished) break;
    }
    if (frames_.empty()) return InvalidArgument(path_ + ": the video stream holds no decodable frame");
    DecodedVideo video;
    video.frames = at::stack(frames_).to(at::kFloat).div_(255.0f).contiguous();
    const AVStream* stream = input_->streams[stream_index_];
    if (stream->avg_frame_rate.num > 0 && stream->avg_frame_rate.den > 0) video.fps = av_q2d(stream->avg_frame_rate);
    video.codec = codec_->codec ? codec_->codec->name : "";
    return video;
  }

 private:
  bool Full() const { return options_.max_frames > 0 && static_cast<int64_t>(frames_.size()) >= options_.max_frames; }

  Status Open() {
    std::error_code ec;
    if (!std::filesystem::exists(path_, ec)) return NotFound(path_ + ": no such file");
    if (std::filesystem::is_directory(path_, ec)) return InvalidArgument(path_ + " is a folder, not a video");
    AVFormatContext* raw = nullptr;
    int rc = avformat_open_input(&raw, path_.c_str(), nullptr, nullptr);
    if (rc < 0) return InvalidArgument(path_ + " is not a video FFmpeg can read (" + ErrorText(rc) + ")");
    input_.reset(raw);
    rc = avformat_find_stream_info(input_.get(), nullptr);
    if (rc < 0) return InvalidArgument(path_ + " is not a video FFmpeg can read (" + ErrorText(rc) + ")");
    const AVCodec* codec = nullptr;
    rc = av_find_best_stream(input_.get(), AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (rc < 0 || !codec) return InvalidArgument(path_ + " has no video stream");
    stream_index_ = rc;
    codec_.reset(avcodec_alloc_context3(codec));
    if (!codec_) return Internal(path_ + ": out of memory allocating the decoder");
    rc = avcodec_parameters_to_context(codec_.get(), input_->streams[stream_index_]->codecpar);
    if (rc < 0) return AvFailure(path_, "avcodec_parameters_to_context", rc);
    rc = avcodec_open2(codec_.get(), codec, nullptr);
    if (rc < 0) return AvFailure(path_, "avcodec_open2", rc);
    return Status::Ok();
  }

  Status Send(const AVPacket* packet) {
    const int rc = avcodec_send_packet(codec_.get(), packet);
    // EAGAIN cannot happen here: every Send is followed by ReceiveAll, which empties the decoder.
    if (rc < 0 && rc != AVERROR_EOF) return InvalidArgument(path_ + ": corrupt video data (" + ErrorText(rc) + ")");
    return Status::Ok();
  }

  // Takes every frame the decoder has ready; true once the decoder is fully drained.
  Result<bool> ReceiveAll() {
    while (!Full()) {
      const int rc = avcodec_receive_frame(codec_.get(), frame_.get());
      if (rc == AVERROR(EAGAIN)) return false;
      if (rc == AVERROR_EOF) return true;
      if (rc < 0) return InvalidArgument(path_ + ": corrupt video data (" + ErrorText(rc) + ")");
      Status st = Convert();
      av_frame_unref(frame_.get());
      STAS_RETURN_IF_ERROR(st);
    }
    return true;
  }

  // One decoded frame -> packed RGB24 uint8 [H, W, 3]. All frames of a video must share one size.
  Status Convert() {
    const int w = frame_->width, h = frame_->height;
    if (w <= 0 || h <= 0) return InvalidArgument(path_ + ": a decoded frame has no size");
    if (!frames_.empty() && (w != width_ || h != height_))
      return InvalidArgument(path_ + ": the frame size changes mid-stream (" + std::to_string(width_) + "x" +
                             std::to_string(height_) + " -> " + std::to_string(w) + "x" + std::to_string(h) + ")");
    width_ = w;
    height_ = h;
    // Full-range output, BT.709 input when tagged so (our writer tags BT.709), else the decoder's guess.
    sws_.reset(sws_getCachedContext(sws_.release(), w, h, static_cast<AVPixelFormat>(frame_->format), w, h,
                                    AV_PIX_FMT_RGB24, SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nullptr,
                                    nullptr, nullptr));
    if (!sws_) return Internal(path_ + ": FFmpeg cannot convert pixel format " + std::to_string(frame_->format) + " to RGB");
    const int colorspace = frame_->colorspace == AVCOL_SPC_BT709 ? SWS_CS_ITU709 : SWS_CS_DEFAULT;
    const int src_range = frame_->color_range == AVCOL_RANGE_JPEG ? 1 : 0;
    sws_setColorspaceDetails(sws_.get(), sws_getCoefficients(colorspace), src_range, sws_getCoefficients(SWS_CS_DEFAULT),
                             1, 0, 1 << 16, 1 << 16);
    at::Tensor rgb = at::empty({h, w, 3}, at::kByte);
    uint8_t* dst[4] = {rgb.data_ptr<uint8_t>(), nullptr, nullptr, nullptr};
    const int dst_stride[4] = {w * 3, 0, 0, 0};
    sws_scale(sws_.get(), frame_->data, frame_->linesize, 0, h, dst, dst_stride);
    frames_.push_back(std::move(rgb));
    return Status::Ok();
  }

  std::string path_;
  ReadOptions options_;
  InputPtr input_;
  CodecContextPtr codec_;
  FramePtr frame_;
  SwsPtr sws_;
  int stream_index_ = -1;
  int width_ = 0, height_ = 0;
  std::vector<at::Tensor> frames_;  // uint8 [H, W, 3], converted to float once at the end
};

}  // namespace

Result<DecodedVideo> ReadVideo(const std::string& path, const ReadOptions& options) {
  if (path.empty()) return InvalidArgument("video path is empty");
  if (options.max_frames < 0) return InvalidArgument("max_frames must be >= 0");
  return Decoder(path, options).Run();
}

bool CanReadVideo() { return true; }

}  // namespace stas::eval

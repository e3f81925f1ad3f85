// The FFmpeg encoder behind Mp4Writer (built only with STAS_WITH_FFMPEG).
#include <cerrno>
#include <cstdarg>
#include <memory>
#include <mutex>
#include <string>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

#include "common/log.h"
#include "storage/ffmpeg_handles.h"
#include "storage/mp4_encoder_internal.h"

namespace stas::storage {

namespace {

std::string VersionTriple(unsigned v) {
  return std::to_string(v >> 16) + "." + std::to_string((v >> 8) & 0xff) + "." + std::to_string(v & 0xff);
}

// An FFmpeg failure as a Status that names the call, FFmpeg's own text, the library version and
// where it happened. Errors of the file system are I/O errors; everything else is internal.
Status AvError(const char* call, int code, const char* file, int line) {
  std::string msg = std::string("FFmpeg ") + call + " failed: " + ffmpeg::ErrorText(code) + " (libavcodec " +
                    VersionTriple(avcodec_version()) + ", " + file + ":" + std::to_string(line) + ")";
  for (int e : {ENOSPC, EIO, EACCES, ENOENT, EROFS, EDQUOT, EPERM})
    if (code == AVERROR(e)) return IoError(std::move(msg));
  return Internal(std::move(msg));
}

}  // namespace

// Evaluates an FFmpeg call returning an int; on a negative result returns the Status from the
// enclosing function.
#define STAS_AV_CHECK(call)                                                           \
  do {                                                                                \
    const int _stas_av_rc = (call);                                                   \
    if (_stas_av_rc < 0) return AvError(#call, _stas_av_rc, __FILE__, __LINE__);      \
  } while (0)

namespace {

// RAII owners for FFmpeg handles.
struct FormatContextDeleter {
  void operator()(AVFormatContext* ctx) const {
    if (ctx->pb && !(ctx->oformat->flags & AVFMT_NOFILE)) avio_closep(&ctx->pb);
    avformat_free_context(ctx);
  }
};
// AVDictionary is handed around by address, so the owner holds the pointer itself.
class Dictionary {
 public:
  Dictionary() = default;
  ~Dictionary() { av_dict_free(&dict_); }
  Dictionary(const Dictionary&) = delete;
  Dictionary& operator=(const Dictionary&) = delete;
  void Set(const char* key, const std::string& value) { av_dict_set(&dict_, key, value.c_str(), 0); }
  AVDictionary** get() { return &dict_; }
  // Keys the library did not consume (misspelled or unsupported options).
  std::string Leftovers() const {
    std::string keys;
    const AVDictionaryEntry* e = nullptr;
    while ((e = av_dict_get(dict_, "", e, AV_DICT_IGNORE_SUFFIX))) keys += std::string(keys.empty() ? "" : ", ") + e->key;
    return keys;
  }

 private:
  AVDictionary* dict_ = nullptr;
};

using FormatContextPtr = std::unique_ptr<AVFormatContext, FormatContextDeleter>;
using ffmpeg::CodecContextPtr;
using ffmpeg::FramePtr;
using ffmpeg::PacketPtr;
using ffmpeg::SwsPtr;

// FFmpeg logs to stderr by default (libx264 prints statistics at info level); route its warnings
// and errors through our logger and drop the chatter.
void LogFromFfmpeg(void* avcl, int level, const char* fmt, va_list vl) {
  if (level > AV_LOG_WARNING) return;
  char line[1024];
  int print_prefix = 1;
  va_list copy;
  va_copy(copy, vl);
  av_log_format_line2(avcl, level, fmt, copy, line, sizeof(line), &print_prefix);
  va_end(copy);
  std::string text(line);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if (level <= AV_LOG_ERROR) STAS_LOG_ERROR("ffmpeg: {}", text);
  else STAS_LOG_WARN("ffmpeg: {}", text);
}

void InstallLogCallbackOnce() {
  static std::once_flag once;
  std::call_once(once, [] { av_log_set_callback(LogFromFfmpeg); });
}

class FfmpegMp4Encoder final : public Mp4Writer::Impl {
 public:
  static Result<std::unique_ptr<Mp4Writer::Impl>> Open(const std::string& file, const Mp4Options& options) {
    InstallLogCallbackOnce();
    auto enc = std::unique_ptr<FfmpegMp4Encoder>(new FfmpegMp4Encoder(options));
    STAS_RETURN_IF_ERROR(enc->Start(file));
    return std::unique_ptr<Mp4Writer::Impl>(std::move(enc));
  }

  Status Encode(const at::Tensor& frames) override {
    const int64_t t = frames.size(0);
    if (frames.size(1) != options_.height || frames.size(2) != options_.width)
      return InvalidArgument("frame size " + std::to_string(frames.size(2)) + "x" + std::to_string(frames.size(1)) +
                             " does not match the video's " + std::to_string(options_.width) + "x" +
                             std::to_string(options_.height));
    const int64_t frame_bytes = int64_t{options_.width} * options_.height * 3;
    const uint8_t* base = frames.data_ptr<uint8_t>();
    for (int64_t i = 0; i < t; ++i) {
      STAS_AV_CHECK(av_frame_make_writable(frame_.get()));
      const uint8_t* src[1] = {base + i * frame_bytes};
      const int src_stride[1] = {options_.width * 3};
      sws_scale(sws_.get(), src, src_stride, 0, options_.height, frame_->data, frame_->linesize);
      frame_->pts = next_pts_++;
      STAS_AV_CHECK(avcodec_send_frame(codec_.get(), frame_.get()));
      STAS_RETURN_IF_ERROR(DrainPackets());
    }
    return Status::Ok();
  }

  Status Close() override {
    STAS_AV_CHECK(avcodec_send_frame(codec_.get(), nullptr));  // enter draining mode
    STAS_RETURN_IF_ERROR(DrainPackets());
    STAS_AV_CHECK(av_write_trailer(format_.get()));
    STAS_AV_CHECK(avio_closep(&format_->pb));
    return Status::Ok();
  }

  std::string codec_name() const override { return codec_name_; }

 private:
  explicit FfmpegMp4Encoder(const Mp4Options& options) : options_(options) {}

  static const AVCodec* ChooseEncoder(const std::string& requested, Status* error) {
    if (!requested.empty()) {
      const AVCodec* c = avcodec_find_encoder_by_name(requested.c_str());
      if (!c) *error = InvalidArgument("this FFmpeg has no encoder named '" + requested + "'");
      return c;
    }
    if (const AVCodec* c = avcodec_find_encoder_by_name("libx264")) return c;
    if (const AVCodec* c = avcodec_find_encoder(AV_CODEC_ID_MPEG4)) {
      STAS_LOG_WARN("mp4: libx264 is not available in this FFmpeg; encoding MPEG-4 part 2 ({})", c->name);
      return c;
    }
    *error = NotImplemented("this FFmpeg has neither libx264 nor an MPEG-4 encoder");
    return nullptr;
  }

  Status Start(const std::string& file) {
    Status choose_error;
    const AVCodec* codec = ChooseEncoder(options_.codec, &choose_error);
    if (!codec) return choose_error;
    codec_name_ = codec->name;
    STAS_LOG_INFO("mp4: encoding with {} ({}), yuv420p, {} fps", codec->name, codec->long_name ? codec->long_name : "",
                  options_.fps);

    AVFormatContext* raw_format = nullptr;
    STAS_AV_CHECK(avformat_alloc_output_context2(&raw_format, nullptr, "mp4", file.c_str()));
    format_.reset(raw_format);

    AVStream* stream = avformat_new_stream(format_.get(), nullptr);
    if (!stream) return Internal("FFmpeg avformat_new_stream failed");
    stream_index_ = stream->index;

    codec_.reset(avcodec_alloc_context3(codec));
    if (!codec_) return Internal("FFmpeg avcodec_alloc_context3 failed");
    AVCodecContext* c = codec_.get();
    c->width = options_.width;
    c->height = options_.height;
    c->pix_fmt = AV_PIX_FMT_YUV420P;
    c->time_base = AVRational{1, options_.fps};
    c->framerate = AVRational{options_.fps, 1};
    c->gop_size = std::max(1, options_.fps * 2);  // a key frame every 2 s keeps seeking cheap
    c->thread_count = options_.threads;
    c->color_range = AVCOL_RANGE_MPEG;
    c->colorspace = AVCOL_SPC_BT709;
    c->color_primaries = AVCOL_PRI_BT709;
    c->color_trc = AVCOL_TRC_BT709;
    if (format_->oformat->flags & AVFMT_GLOBALHEADER) c->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;

    Dictionary codec_options;
    if (codec_name_ == "libx264" || codec_name_ == "libx264rgb") {
      codec_options.Set("crf", std::to_string(options_.crf));
      codec_options.Set("preset", options_.x264_preset);
    } else {
      // Constant quantizer: MPEG-4 part 2 has no CRF; qscale 3 is visually close to x264 CRF ~20.
      c->flags |= AV_CODEC_FLAG_QSCALE;
      c->global_quality = FF_QP2LAMBDA * 3;
    }
    STAS_AV_CHECK(avcodec_open2(c, codec, codec_options.get()));
    if (auto left = codec_options.Leftovers(); !left.empty())
      STAS_LOG_WARN("mp4: {} ignored options: {}", codec_name_, left);
    STAS_AV_CHECK(avcodec_parameters_from_context(stream->codecpar, c));
    stream->time_base = c->time_base;
    stream->avg_frame_rate = c->framerate;
    stream->r_frame_rate = c->framerate;

    STAS_AV_CHECK(avio_open(&format_->pb, file.c_str(), AVIO_FLAG_WRITE));
    Dictionary muxer_options;
    if (options_.faststart) muxer_options.Set("movflags", "+faststart");
    STAS_AV_CHECK(avformat_write_header(format_.get(), muxer_options.get()));

    frame_.reset(av_frame_alloc());
    packet_.reset(av_packet_alloc());
    if (!frame_ || !packet_) return Internal("FFmpeg frame/packet allocation failed");
    frame_->format = c->pix_fmt;
    frame_->width = c->width;
    frame_->height = c->height;
    STAS_AV_CHECK(av_frame_get_buffer(frame_.get(), 0));

    sws_.reset(sws_getContext(options_.width, options_.height, AV_PIX_FMT_RGB24, options_.width, options_.height,
                              AV_PIX_FMT_YUV420P, SWS_BICUBIC | SWS_ACCURATE_RND, nullptr,
                              nullptr, nullptr));
    if (!sws_) return Internal("FFmpeg sws_getContext(rgb24 -> yuv420p) failed");
    // Full-range RGB in, limited-range BT.709 out: matches the colour tags set on the stream above.
    const int* bt709 = sws_getCoefficients(SWS_CS_ITU709);
    if (sws_setColorspaceDetails(sws_.get(), bt709, 1, bt709, 0, 0, 1 << 16, 1 << 16) < 0)
      return Internal("FFmpeg sws_setColorspaceDetails(BT.709) is not supported by this libswscale");
    return Status::Ok();
  }

  // Moves every packet the encoder has ready into the muxer.
  Status DrainPackets() {
    AVStream* stream = format_->streams[stream_index_];
    while (true) {
      const int rc = avcodec_receive_packet(codec_.get(), packet_.get());
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return Status::Ok();
      STAS_AV_CHECK(rc);
      av_packet_rescale_ts(packet_.get(), codec_->time_base, stream->time_base);
      packet_->stream_index = stream_index_;
      // Takes the packet's reference and leaves packet_ blank for the next receive.
      STAS_AV_CHECK(av_interleaved_write_frame(format_.get(), packet_.get()));
    }
  }

  Mp4Options options_;
  std::string codec_name_;
  // Declaration order matters for destruction: the codec and scaler go before the container.
  FormatContextPtr format_;
  CodecContextPtr codec_;
  FramePtr frame_;
  PacketPtr packet_;
  SwsPtr sws_;
  int stream_index_ = 0;
  int64_t next_pts_ = 0;
};

}  // namespace

Result<std::unique_ptr<Mp4Writer::Impl>> OpenMp4Encoder(const std::string& file, const Mp4Options& options) {
  return FfmpegMp4Encoder::Open(file, options);
}

std::string FfmpegVersionString() {
  return "libavcodec " + VersionTriple(avcodec_version()) + ", libavformat " + VersionTriple(avformat_version()) +
         ", libswscale " + VersionTriple(swscale_version()) + ", libavutil " + VersionTriple(avutil_version());
}

bool HaveFfmpeg() { return true; }

}  // namespace stas::storage

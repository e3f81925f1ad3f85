#include "storage/mp4_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "common/check.h"
#include "common/fs.h"
#include "common/log.h"
#include "storage/mp4_encoder_internal.h"

namespace stas::storage {

namespace fs = std::filesystem;

std::string TemporaryPathFor(const std::string& path) {
  const fs::path p(path);
  std::random_device rd;
  const std::string name = "." + p.filename().string() + ".tmp." + std::to_string(::getpid()) + "." +
                           std::to_string(rd()) + std::to_string(rd());
  return (p.parent_path() / name).string();
}

Result<at::Tensor> ToUint8Frames(const at::Tensor& frames) {
  if (!frames.defined()) return InvalidArgument("frames tensor is undefined");
  at::Tensor f = frames;
  if (f.dim() == 3) f = f.unsqueeze(0);
  if (f.dim() != 4 || f.size(3) != 3)
    return InvalidArgument("frames must be [T, H, W, 3] RGB, got " + std::to_string(frames.dim()) +
                           " dims with last size " + std::to_string(frames.dim() ? frames.size(-1) : 0));
  if (f.size(0) == 0) return InvalidArgument("frames tensor holds no frames");
  f = f.to(at::kCPU);
  if (f.scalar_type() == at::kByte) return f.contiguous();
  if (!at::isFloatingType(f.scalar_type()))
    return InvalidArgument(std::string("frames must be uint8 or floating point, got ") + c10::toString(f.scalar_type()));
  // Rounding (not truncation) keeps mid-grey 0.5 at 128 and the conversion symmetric.
  return f.to(at::kFloat).clamp(0.0, 1.0).mul(255.0).round().to(at::kByte).contiguous();
}

at::Tensor VideoToRgbFrames(const at::Tensor& video) {
  at::Tensor v = video;
  if (v.dim() == 5) {
    STAS_CHECK(v.size(0) == 1) << "VideoToRgbFrames takes one video, got batch " << v.size(0);
    v = v.squeeze(0);
  }
  STAS_CHECK(v.dim() == 4 && v.size(0) == 3) << "VideoToRgbFrames expects [3, T, H, W], got " << v.sizes();
  return v.to(at::kCPU, at::kFloat)
      .add(1.0)
      .mul(0.5)
      .clamp(0.0, 1.0)
      .mul(255.0)
      .round()
      .to(at::kByte)
      .permute({1, 2, 3, 0})
      .contiguous();
}

Mp4Writer::Mp4Writer(std::string path, std::string temp_path, std::unique_ptr<Impl> impl)
    : path_(std::move(path)), temp_path_(std::move(temp_path)), impl_(std::move(impl)) {
  codec_name_ = impl_->codec_name();
}

Mp4Writer::~Mp4Writer() { Discard(); }

void Mp4Writer::Discard() {
  impl_.reset();  // closes FFmpeg's handles on the file first
  if (!finished_) {
    ::unlink(temp_path_.c_str());
    finished_ = true;
  }
}

Result<std::unique_ptr<Mp4Writer>> Mp4Writer::Open(const std::string& path, const Mp4Options& options) {
  if (path.empty()) return InvalidArgument("output path is empty");
  if (options.width <= 0 || options.height <= 0 || options.width % 2 || options.height % 2)
    return InvalidArgument("video width and height must be positive and even, got " + std::to_string(options.width) +
                           "x" + std::to_string(options.height));
  if (options.fps < 1 || options.fps > 240) return InvalidArgument("fps must be in [1, 240], got " + std::to_string(options.fps));
  if (options.crf < 0 || options.crf > 51) return InvalidArgument("crf must be in [0, 51]");
  if (options.threads < 0 || options.threads > 256)
    return InvalidArgument("encoder threads must be in [0, 256] (0 = one per core), got " + std::to_string(options.threads));
  const fs::path p(path);
  if (p.filename().empty()) return InvalidArgument("output path " + path + " names a folder, not a file");
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("output folder " + dir.string() + " does not exist");
  if (fs::is_directory(p, ec)) return InvalidArgument("output path " + path + " is a folder");
  const std::string temp = TemporaryPathFor(path);
  auto impl = OpenMp4Encoder(temp, options);
  if (!impl.ok()) {
    ::unlink(temp.c_str());
    return impl.status().WithContext("cannot start " + path);
  }
  STAS_LOG_DEBUG("mp4: writing {} ({}x{} @ {} fps, {})", path, options.width, options.height, options.fps,
                 (*impl)->codec_name());
  return std::unique_ptr<Mp4Writer>(new Mp4Writer(path, temp, std::move(impl).value()));
}

Status Mp4Writer::WriteFrames(const at::Tensor& frames) {
  if (finished_ || !impl_) return Internal("WriteFrames after Finish on " + path_);
  if (failed_) return Internal("WriteFrames after an earlier failure on " + path_);
  STAS_ASSIGN_OR_RETURN(at::Tensor rgb, ToUint8Frames(frames));
  Status st = impl_->Encode(rgb);
  if (!st.ok()) {
    failed_ = true;
    return st.WithContext(path_);
  }
  frames_written_ += rgb.size(0);
  return Status::Ok();
}

Status Mp4Writer::FinishEncoding() {
  if (finished_ || !impl_) return Internal("Finish called twice on " + path_);
  if (failed_) {
    Discard();
    return Internal("cannot finish " + path_ + " after an earlier failure");
  }
  if (frames_written_ == 0) {
    Discard();
    return InvalidArgument("no frames were written to " + path_);
  }
  Status st = impl_->Close();
  impl_.reset();
  if (!st.ok()) {
    Discard();
    return st.WithContext(path_);
  }
  // The trailer is written; make the bytes durable before the name points at them.
  FileDescriptor fd(::open(temp_path_.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) {
    const std::string err = std::strerror(errno);
    Discard();
    return IoError("cannot fsync " + temp_path_ + ": " + err);
  }
  return Status::Ok();
}

Status Mp4Writer::Finish() {
  STAS_RETURN_IF_ERROR(FinishEncoding());
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    Discard();
    return IoError("cannot rename " + temp_path_ + " to " + path_ + ": " + err);
  }
  finished_ = true;
  return Status::Ok();
}

Result<std::string> Mp4Writer::FinishToTemp() {
  STAS_RETURN_IF_ERROR(FinishEncoding());
  finished_ = true;
  return temp_path_;
}

Status WriteMp4(const std::string& path, const at::Tensor& frames, Mp4Options options) {
  STAS_ASSIGN_OR_RETURN(at::Tensor rgb, ToUint8Frames(frames));
  if (options.width == 0) options.width = static_cast<int>(rgb.size(2));
  if (options.height == 0) options.height = static_cast<int>(rgb.size(1));
  STAS_ASSIGN_OR_RETURN(auto writer, Mp4Writer::Open(path, options));
  STAS_RETURN_IF_ERROR(writer->WriteFrames(rgb));
  return writer->Finish();
}

#if !STAS_HAVE_FFMPEG
Result<std::unique_ptr<Mp4Writer::Impl>> OpenMp4Encoder(const std::string&, const Mp4Options&) {
  return NotImplemented("built without FFmpeg: MP4 encoding needs a build with STAS_WITH_FFMPEG");
}
std::string FfmpegVersionString() { return "none (built without FFmpeg)"; }
bool HaveFfmpeg() { return false; }
#endif

}  // namespace stas::storage

#include "eval/mp4_reader.h"

namespace stas::eval {

#if !STAS_HAVE_FFMPEG
Result<DecodedVideo> ReadVideo(const std::string& path, const ReadOptions&) {
  return NotImplemented("built without FFmpeg: reading " + path + " needs a build with STAS_WITH_FFMPEG");
}
bool CanReadVideo() { return false; }
#endif

}  // namespace stas::eval

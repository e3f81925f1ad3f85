#include "protocol/protocol.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace stas::protocol {

std::string EncodeFrame(const Json& message) {
  const std::string payload = message.dump(-1, ' ', false, Json::error_handler_t::replace);
  std::string frame(4, '\0');
  const uint32_t n = static_cast<uint32_t>(payload.size());
  frame[0] = static_cast<char>((n >> 24) & 0xff);
  frame[1] = static_cast<char>((n >> 16) & 0xff);
  frame[2] = static_cast<char>((n >> 8) & 0xff);
  frame[3] = static_cast<char>(n & 0xff);
  return frame + payload;
}

void FrameDecoder::Append(const char* data, size_t size) {
  if (offset_ > 0 && offset_ == buffer_.size()) {
    buffer_.clear();
    offset_ = 0;
  }
  buffer_.append(data, size);
}

Result<std::optional<Json>> FrameDecoder::Next() {
  if (buffered() < 4) return std::optional<Json>();
  const auto* p = reinterpret_cast<const unsigned char*>(buffer_.data() + offset_);
  const uint32_t n = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
  if (n > max_frame_bytes_)
    return InvalidArgument("protocol frame of " + std::to_string(n) + " bytes exceeds the limit of " +
                           std::to_string(max_frame_bytes_) + " bytes");
  if (buffered() < 4 + static_cast<size_t>(n)) return std::optional<Json>();
  const char* payload = buffer_.data() + offset_ + 4;
  offset_ += 4 + n;
  Json message;
  try {
    message = Json::parse(payload, payload + n);
  } catch (const Json::exception& e) {
    return InvalidArgument(std::string("protocol frame is not valid JSON: ") + e.what());
  }
  if (!message.is_object() || !message.contains("type") || !message["type"].is_string())
    return InvalidArgument("protocol frame must be a JSON object with a string 'type'");
  if (offset_ > (1u << 20)) {  // compact now and then
    buffer_.erase(0, offset_);
    offset_ = 0;
  }
  return std::optional<Json>(std::move(message));
}

Result<std::string> ReadSecretFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read the secret file " + path + ": " + std::strerror(errno));
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
  if (line.empty()) return InvalidArgument("the secret file " + path + " is empty");
  if (line.size() > 256) return InvalidArgument("the secret file " + path + " holds more than 256 bytes");
  for (unsigned char c : line)
    if (c < 0x21 || c >= 0x7f) return InvalidArgument("the secret file " + path + " holds non-printable characters");
  return line;
}

Status WriteFrame(int fd, const Json& message) {
  const std::string frame = EncodeFrame(message);
  size_t done = 0;
  while (done < frame.size()) {
    ssize_t n = ::send(fd, frame.data() + done, frame.size() - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Unavailable(std::string("send failed: ") + std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<Json> ReadFrame(int fd, FrameDecoder& decoder, int timeout_ms) {
  while (true) {
    STAS_ASSIGN_OR_RETURN(std::optional<Json> message, decoder.Next());
    if (message) return std::move(*message);
    pollfd pfd{fd, POLLIN, 0};
    int r = ::poll(&pfd, 1, timeout_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Unavailable(std::string("poll failed: ") + std::strerror(errno));
    }
    if (r == 0) return Timeout("no message from the peer within " + std::to_string(timeout_ms) + " ms");
    char buf[65536];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return Unavailable("connection closed by the peer");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Unavailable(std::string("recv failed: ") + std::strerror(errno));
    }
    decoder.Append(buf, static_cast<size_t>(n));
  }
}

}  // namespace stas::protocol

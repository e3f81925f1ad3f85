#include "coordinator/auth.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "common/fs.h"
#include "protocol/protocol.h"

namespace stas::coordinator {

bool TokenMatches(const std::string& presented, const std::string& expected) {
  if (expected.empty() || presented.size() != expected.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < expected.size(); ++i)
    diff |= static_cast<unsigned char>(presented[i] ^ expected[i]);
  return diff == 0;
}

std::optional<std::string> BearerToken(const std::string& header) {
  const std::string scheme = "bearer ";
  if (header.size() <= scheme.size()) return std::nullopt;
  for (size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(header[i])) != scheme[i]) return std::nullopt;
  size_t start = scheme.size();
  while (start < header.size() && header[start] == ' ') ++start;
  size_t end = header.size();
  while (end > start && (header[end - 1] == ' ' || header[end - 1] == '\t')) --end;
  if (start == end) return std::nullopt;
  return header.substr(start, end - start);
}

bool IsLoopbackHost(const std::string& host_in) {
  std::string host = host_in;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    static const unsigned char kLoop[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    bool loop = true;
    for (int i = 0; i < 16; ++i) loop = loop && v6.s6_addr[i] == kLoop[i];
    // ::ffff:127.x.x.x (IPv4-mapped loopback)
    bool mapped = true;
    for (int i = 0; i < 10; ++i) mapped = mapped && v6.s6_addr[i] == 0;
    mapped = mapped && v6.s6_addr[10] == 0xff && v6.s6_addr[11] == 0xff && v6.s6_addr[12] == 127;
    return loop || mapped;
  }
  return false;
}

Result<std::string> RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    const ssize_t n = ::getrandom(raw.data() + got, bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Internal(std::string("getrandom failed: ") + std::strerror(errno));
    }
    got += static_cast<size_t>(n);
  }
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes);
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

Status CheckTokenText(const std::string& token, const std::string& what) {
  bool blank = true;
  for (unsigned char c : token) {
    if (c < 0x20 || c >= 0x7f) return InvalidArgument(what + " must be printable ASCII");
    if (c != ' ') blank = false;
  }
  if (blank) return InvalidArgument(what + " must not be empty or blank");
  return Status::Ok();
}

std::string WorkerSecretPath(const std::string& storage) { return storage + "/.stas/worker-secret"; }

Result<std::string> LoadOrCreateWorkerSecret(const std::string& storage) {
  const std::string folder = storage + "/.stas";
  if (::mkdir(folder.c_str(), 0700) != 0 && errno != EEXIST)
    return Unavailable("cannot create " + folder + ": " + std::strerror(errno));
  const std::string path = WorkerSecretPath(storage);
  // O_EXCL: the first start creates it; a later start (or a racing one) reads what is there.
  FileDescriptor fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (fd.get() >= 0) {
    STAS_ASSIGN_OR_RETURN(std::string secret, RandomHex(32));
    const std::string line = secret + "\n";
    if (::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()) || ::fsync(fd.get()) != 0)
      return Unavailable("cannot write " + path + ": " + std::strerror(errno));
    return secret;
  }
  if (errno != EEXIST) return Unavailable("cannot create " + path + ": " + std::strerror(errno));
  return protocol::ReadSecretFile(path);
}

}  // namespace stas::coordinator

#include "coordinator/auth.h"

#include <arpa/inet.h>

#include <cctype>

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

}  // namespace stas::coordinator

// Bearer-token checks shared by the HTTP API and the worker protocol, and the loopback test that
// decides whether a token is required at all.
#pragma once

#include <optional>
#include <string>

namespace stas::coordinator {

// Compares a presented token with the expected one in time independent of where they differ.
// An empty expected token matches nothing.
bool TokenMatches(const std::string& presented, const std::string& expected);

// The token of an "Authorization: Bearer <token>" header value; nullopt for any other form.
std::optional<std::string> BearerToken(const std::string& authorization_header);

// True for addresses that only this machine can reach: 127.0.0.0/8, ::1, "localhost".
// Anything else (including 0.0.0.0 and ::, which bind every interface) is not loopback.
bool IsLoopbackHost(const std::string& host);

}  // namespace stas::coordinator

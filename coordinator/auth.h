// Bearer-token checks shared by the HTTP API and the worker protocol, and the loopback test that
// decides whether a token is required at all.
#pragma once

#include <optional>
#include <string>

#include "common/status.h"

namespace stas::coordinator {

// Compares a presented token with the expected one in time independent of where they differ.
// An empty expected token matches nothing.
bool TokenMatches(const std::string& presented, const std::string& expected);

// The token of an "Authorization: Bearer <token>" header value; nullopt for any other form.
std::optional<std::string> BearerToken(const std::string& authorization_header);

// True for addresses that only this machine can reach: 127.0.0.0/8, ::1, "localhost".
// Anything else (including 0.0.0.0 and ::, which bind every interface) is not loopback.
bool IsLoopbackHost(const std::string& host);

// `bytes` bytes from the kernel's CSPRNG (getrandom), as lower-case hex. Lease tokens and the worker
// secret come from here: neither may be predictable from earlier ones.
Result<std::string> RandomHex(size_t bytes);

// InvalidArgument when a configured token is empty or only whitespace, or holds characters that
// cannot travel in an HTTP header (control characters, non-ASCII).
Status CheckTokenText(const std::string& token, const std::string& what);

// The worker secret of a coordinator without --token: <storage>/.stas/worker-secret, created on the
// first start (32 random bytes as hex, mode 0600, never overwritten). Worker groups prove they may act
// as workers by sending it in hello (`stas worker --secret-file`, or --storage on a shared folder).
std::string WorkerSecretPath(const std::string& storage);
Result<std::string> LoadOrCreateWorkerSecret(const std::string& storage);

}  // namespace stas::coordinator

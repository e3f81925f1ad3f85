// A small synchronous HTTP/1.1 client (Boost.Beast) for the coordinator's API, used by `stas submit`,
// `status`, `watch` and `cancel`.
//
// One client keeps one keep-alive connection and reconnects once when the server closed it between
// requests. Only http:// is supported (the coordinator binds loopback by default; put TLS in front
// of it with a proxy when it must face a network). A bearer token, when given, goes in every request.
// Not thread-safe: one client per thread.
#pragma once

#include <memory>
#include <string>

#include "common/json.h"
#include "common/status.h"

namespace stas::cli {

struct HttpUrl {
  std::string host;
  std::string port = "80";
  std::string base_path;  // without a trailing '/', "" for the root
};
// "http://HOST[:PORT][/base]". InvalidArgument for anything else (https is NotImplemented).
Result<HttpUrl> ParseHttpUrl(const std::string& url);

struct HttpResponse {
  int status = 0;
  std::string body;
  std::string content_type;
  bool ok() const { return status >= 200 && status < 300; }
};

class HttpClient {
 public:
  // Does not connect yet. timeout_ms bounds each request (connect + write + read).
  static Result<std::unique_ptr<HttpClient>> Create(const std::string& server_url, std::string bearer_token = "",
                                                    int timeout_ms = 30000);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // `target` starts with '/' and is appended to the URL's base path. Any HTTP status is a successful
  // Result; Unavailable when the server cannot be reached, Timeout when it does not answer in time.
  Result<HttpResponse> Get(const std::string& target);
  Result<HttpResponse> Post(const std::string& target, const std::string& json_body);
  Result<HttpResponse> Delete(const std::string& target);

  const std::string& server() const { return server_; }

 private:
  class Impl;
  HttpClient(std::string server, std::unique_ptr<Impl> impl);
  std::string server_;
  std::unique_ptr<Impl> impl_;
};

// The message of an API error: the "error" (or "message") field of a JSON body, else the body itself,
// prefixed with the status ("400: frames must be 4k+1, got 10").
std::string ApiErrorMessage(const HttpResponse& response);
// The body as a JSON value; InvalidArgument naming the request when it is not JSON.
Result<Json> JsonBody(const HttpResponse& response, const std::string& what);
// Percent-encodes a path segment or query value.
std::string UrlEncode(const std::string& text);

}  // namespace stas::cli

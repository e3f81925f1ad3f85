#include "cli/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <optional>

namespace stas::cli {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

Result<HttpUrl> ParseHttpUrl(const std::string& url) {
  const std::string http_prefix = "http://";
  if (url.rfind("https://", 0) == 0)
    return NotImplemented("https is not supported by the stas client; reach the coordinator over http "
                          "(it binds loopback by default) or through a TLS-terminating proxy");
  if (url.rfind(http_prefix, 0) != 0) return InvalidArgument("--server must look like http://HOST:PORT, got '" + url + "'");
  std::string rest = url.substr(http_prefix.size());
  HttpUrl out;
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) out.base_path = rest.substr(slash);
  while (!out.base_path.empty() && out.base_path.back() == '/') out.base_path.pop_back();
  if (authority.empty()) return InvalidArgument("--server has no host: '" + url + "'");
  if (authority.find('@') != std::string::npos)
    return InvalidArgument("--server must not carry credentials; use --token or STAS_TOKEN");
  if (authority[0] == '[') {
    const size_t close = authority.find(']');
    if (close == std::string::npos) return InvalidArgument("--server has an unterminated IPv6 address: '" + url + "'");
    out.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return InvalidArgument("--server: expected ':' after ']' in '" + url + "'");
      out.port = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.rfind(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) out.port = authority.substr(colon + 1);
  }
  if (out.host.empty()) return InvalidArgument("--server has no host: '" + url + "'");
  if (out.port.empty() || out.port.size() > 5 || !std::all_of(out.port.begin(), out.port.end(), ::isdigit) ||
      std::stoi(out.port) < 1 || std::stoi(out.port) > 65535)
    return InvalidArgument("--server has a bad port '" + out.port + "'");
  return out;
}

class HttpClient::Impl {
 public:
  Impl(HttpUrl url, std::string token, int timeout_ms)
      : url_(std::move(url)), token_(std::move(token)), timeout_(std::chrono::milliseconds(timeout_ms)) {}

  Result<HttpResponse> Request(http::verb method, const std::string& target, const std::string* body) {
    // A kept-alive connection the server has closed fails on first use; one fresh attempt follows.
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool reused = stream_.has_value();
      auto r = TryRequest(method, target, body);
      if (r.ok() || !reused) return r;
      Close();
    }
    return Unavailable("unreachable");
  }

 private:
  Result<HttpResponse> TryRequest(http::verb method, const std::string& target, const std::string* body) {
    beast::error_code ec;
    if (!stream_) {
      tcp::resolver resolver(io_);
      auto endpoints = resolver.resolve(url_.host, url_.port, ec);
      if (ec) return Unavailable("cannot resolve " + url_.host + ": " + ec.message());
      stream_.emplace(io_);
      stream_->expires_after(timeout_);
      stream_->connect(endpoints, ec);
      if (ec) {
        Close();
        return Unavailable("cannot connect to http://" + url_.host + ":" + url_.port + ": " + ec.message() +
                           " (is `stas coordinator` running?)");
      }
    }
    http::request<http::string_body> req{method, url_.base_path + target, 11};
    req.set(http::field::host, url_.host + ":" + url_.port);
    req.set(http::field::user_agent, "stas-cli");
    req.set(http::field::accept, "application/json");
    req.keep_alive(true);
    if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
    if (body) {
      req.set(http::field::content_type, "application/json");
      req.body() = *body;
    }
    req.prepare_payload();
    stream_->expires_after(timeout_);
    http::write(*stream_, req, ec);
    if (ec) {
      Close();
      return Unavailable("sending the request failed: " + ec.message());
    }
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(256u << 20);
    http::read(*stream_, buffer, parser, ec);
    if (ec) {
      const bool timed_out = ec == beast::error::timeout;
      Close();
      if (timed_out) return Timeout("the server did not answer within " + std::to_string(timeout_.count()) + " ms");
      return Unavailable("reading the response failed: " + ec.message());
    }
    auto res = parser.release();
    HttpResponse out;
    out.status = static_cast<int>(res.result_int());
    out.body = std::move(res.body());
    out.content_type = std::string(res[http::field::content_type]);
    if (!res.keep_alive()) Close();
    return out;
  }

  void Close() {
    if (stream_) {
      beast::error_code ignored;
      stream_->socket().shutdown(tcp::socket::shutdown_both, ignored);
      stream_.reset();
    }
  }

  HttpUrl url_;
  std::string token_;
  std::chrono::milliseconds timeout_;
  boost::asio::io_context io_;
  std::optional<beast::tcp_stream> stream_;
};

Result<std::unique_ptr<HttpClient>> HttpClient::Create(const std::string& server_url, std::string bearer_token,
                                                       int timeout_ms) {
  STAS_ASSIGN_OR_RETURN(HttpUrl url, ParseHttpUrl(server_url));
  return std::unique_ptr<HttpClient>(
      new HttpClient(server_url, std::make_unique<Impl>(std::move(url), std::move(bearer_token), timeout_ms)));
}

HttpClient::HttpClient(std::string server, std::unique_ptr<Impl> impl)
    : server_(std::move(server)), impl_(std::move(impl)) {}
HttpClient::~HttpClient() = default;

Result<HttpResponse> HttpClient::Get(const std::string& target) { return impl_->Request(http::verb::get, target, nullptr); }
Result<HttpResponse> HttpClient::Post(const std::string& target, const std::string& json_body) {
  return impl_->Request(http::verb::post, target, &json_body);
}
Result<HttpResponse> HttpClient::Delete(const std::string& target) {
  return impl_->Request(http::verb::delete_, target, nullptr);
}

std::string ApiErrorMessage(const HttpResponse& response) {
  std::string message = response.body;
  try {
    Json j = Json::parse(response.body);
    if (j.is_object()) {
      for (const char* key : {"error", "message"}) {
        if (!j.contains(key)) continue;
        const Json& v = j[key];
        if (v.is_string()) message = v.get<std::string>();
        else if (v.is_object() && v.contains("message") && v["message"].is_string())  // OpenAI-style errors
          message = v["message"].get<std::string>();
        else message = v.dump();
        break;
      }
    }
  } catch (const Json::exception&) {
  }
  while (!message.empty() && std::isspace(static_cast<unsigned char>(message.back()))) message.pop_back();
  if (message.empty()) message = "(empty response)";
  return std::to_string(response.status) + ": " + message;
}

Result<Json> JsonBody(const HttpResponse& response, const std::string& what) {
  try {
    return Json::parse(response.body);
  } catch (const Json::exception& e) {
    return InvalidArgument(what + ": the server's answer is not JSON (" + std::string(e.what()) + ")");
  }
}

std::string UrlEncode(const std::string& text) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace stas::cli

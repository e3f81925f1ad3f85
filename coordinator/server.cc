#include "coordinator/server.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <atomic>
#include <csignal>
#include <deque>
#include <map>
#include <mutex>
#include <optional>

#include "common/log.h"
#include "protocol/protocol.h"

namespace stas::coordinator {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

std::string EndpointString(const tcp::socket& socket) {
  boost::system::error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return "?";
  const std::string addr = ep.address().to_string();
  return (ep.address().is_v6() ? "[" + addr + "]" : addr) + ":" + std::to_string(ep.port());
}

Result<tcp::endpoint> ResolveEndpoint(net::io_context& ioc, const std::string& host, int port) {
  boost::system::error_code ec;
  auto address = net::ip::make_address(host, ec);
  if (!ec) return tcp::endpoint(address, static_cast<unsigned short>(port));
  tcp::resolver resolver(ioc);
  auto results = resolver.resolve(host, std::to_string(port), ec);
  if (ec || results.empty()) return InvalidArgument("cannot resolve '" + host + "': " + ec.message());
  return results.begin()->endpoint();
}

std::string PeerAddress(const tcp::socket& socket) {
  boost::system::error_code ec;
  auto ep = socket.remote_endpoint(ec);
  return ec ? "?" : ep.address().to_string();
}

// A warning that repeats (an accept error storm, a flood of refused connections) is written at most
// once a second, with the count of the ones left out.
class RateLimitedWarning {
 public:
  void Warn(const std::string& message) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::seconds(1)) {
      ++suppressed_;
      return;
    }
    if (suppressed_ > 0)
      STAS_LOG_WARN("{} ({} similar messages in the last second left out)", message, suppressed_);
    else
      STAS_LOG_WARN("{}", message);
    suppressed_ = 0;
    last_ = now;
  }

 private:
  std::chrono::steady_clock::time_point last_{};
  int64_t suppressed_ = 0;
};

}  // namespace

// ------------------------------------------------------------------------------- worker connections

class WorkerConnection : public WorkerChannel, public std::enable_shared_from_this<WorkerConnection> {
 public:
  WorkerConnection(tcp::socket socket, CoordinatorServer::Impl* server, Dispatcher::ConnectionId id);
  void Start();
  void Send(const Json& message) override;
  void Close() override;
  std::string peer() const override { return peer_; }
  const std::string& peer_address() const { return peer_address_; }
  void Shutdown();

 private:
  void DoRead();
  void DoWrite();

  tcp::socket socket_;
  CoordinatorServer::Impl* server_;
  Dispatcher::ConnectionId id_;
  std::string peer_;
  std::string peer_address_;
  protocol::FrameDecoder decoder_{protocol::kMaxPreHelloFrameBytes};
  net::steady_timer hello_timer_;
  bool authenticated_ = false;
  std::array<char, 65536> buffer_{};
  std::deque<std::string> outbox_;
  bool writing_ = false;
  bool closing_ = false;
  bool closed_ = false;
};

// ------------------------------------------------------------------------------------- http sessions

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket socket, CoordinatorServer::Impl* server);
  void Start() { DoRead(); }

 private:
  void DoRead();
  void OnRead(beast::error_code ec);
  void Respond(const HttpResponse& response, bool keep_alive, bool head);
  template <class Message>
  void Write(std::shared_ptr<Message> message);
  void Close();

  beast::tcp_stream stream_;
  CoordinatorServer::Impl* server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

// --------------------------------------------------------------------------------------------- Impl

struct CoordinatorServer::Impl {
  Impl(Dispatcher* d, HttpApi* a, ServerOptions o)
      : dispatcher(d), api(a), options(std::move(o)), worker_acceptor(ioc), http_acceptor(ioc), ticker(ioc),
        signals(ioc), stop_timer(ioc), worker_accept_pause(ioc), http_accept_pause(ioc) {}

  Dispatcher* dispatcher;
  HttpApi* api;
  ServerOptions options;
  net::io_context ioc;
  tcp::acceptor worker_acceptor;
  tcp::acceptor http_acceptor;
  net::steady_timer ticker;
  net::signal_set signals;
  net::steady_timer stop_timer;
  net::steady_timer worker_accept_pause;
  net::steady_timer http_accept_pause;
  int worker_accept_backoff_ms = 0;
  int http_accept_backoff_ms = 0;
  RateLimitedWarning accept_warning;
  RateLimitedWarning refuse_warning;
  std::map<Dispatcher::ConnectionId, std::shared_ptr<WorkerConnection>> connections;
  std::map<std::string, int> connections_per_peer;
  Dispatcher::ConnectionId next_id = 1;
  bool stopping = false;
  std::atomic<int> stop_signal{0};
  // The offload instances not serving a request now. A pool thread takes one for each request; there are
  // as many instances as threads, so one is always free.
  std::mutex free_apis_mu;
  std::vector<HttpApi*> free_apis = options.offload_apis;
  // Runs offloaded requests; declared last so it is joined before the loop's state goes away.
  std::unique_ptr<net::thread_pool> pool =
      options.offload_apis.empty() ? nullptr : std::make_unique<net::thread_pool>(options.offload_apis.size());

  HttpApi* TakeOffloadApi() {
    std::lock_guard<std::mutex> lock(free_apis_mu);
    HttpApi* api = free_apis.back();
    free_apis.pop_back();
    return api;
  }
  void ReturnOffloadApi(HttpApi* api) {
    std::lock_guard<std::mutex> lock(free_apis_mu);
    free_apis.push_back(api);
  }

  Status Bind(tcp::acceptor& acceptor, const std::string& host, int port, const char* what) {
    STAS_ASSIGN_OR_RETURN(tcp::endpoint ep, ResolveEndpoint(ioc, host, port));
    boost::system::error_code ec;
    acceptor.open(ep.protocol(), ec);
    if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
    if (ec)
      return Unavailable(std::string("cannot listen for ") + what + " on " + host + ":" + std::to_string(port) + ": " +
                         ec.message());
    return Status::Ok();
  }

  // After an accept error (EMFILE, ENFILE, ENOBUFS...) the listener waits before trying again, 10 ms
  // doubling to 1 s, so a full descriptor table does not turn into a busy loop of failing accepts.
  void PauseAccept(net::steady_timer& timer, int& backoff_ms, void (Impl::*resume)()) {
    backoff_ms = std::clamp(backoff_ms * 2, 10, 1000);
    timer.expires_after(std::chrono::milliseconds(backoff_ms));
    timer.async_wait([this, resume](beast::error_code ec) {
      if (!ec && !stopping) (this->*resume)();
    });
  }

  void AcceptWorker() {
    worker_acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec == net::error::operation_aborted || stopping || !worker_acceptor.is_open()) return;
        accept_warning.Warn("worker accept failed: " + ec.message() + "; pausing that listener");
        PauseAccept(worker_accept_pause, worker_accept_backoff_ms, &Impl::AcceptWorker);
        return;
      }
      worker_accept_backoff_ms = 0;
      try {
        const std::string address = PeerAddress(socket);
        if (static_cast<int>(connections.size()) >= options.max_worker_connections ||
            connections_per_peer[address] >= options.max_worker_connections_per_peer) {
          refuse_warning.Warn("refusing a worker connection from " + address + ": " +
                              std::to_string(connections.size()) + " open (" +
                              std::to_string(connections_per_peer[address]) + " from that address)");
          if (connections_per_peer[address] == 0) connections_per_peer.erase(address);
          boost::system::error_code close_ec;
          socket.close(close_ec);
        } else {
          boost::system::error_code opt_ec;
          socket.set_option(net::socket_base::keep_alive(true), opt_ec);
          socket.set_option(tcp::no_delay(true), opt_ec);
          const auto id = next_id++;
          auto connection = std::make_shared<WorkerConnection>(std::move(socket), this, id);
          connections[id] = connection;
          ++connections_per_peer[connection->peer_address()];
          dispatcher->OnConnect(id, connection);
          connection->Start();
        }
      } catch (const std::exception& e) {
        STAS_LOG_ERROR("setting up a worker connection failed: {}", e.what());
      }
      if (!stopping) AcceptWorker();
    });
  }

  void ForgetConnection(Dispatcher::ConnectionId id) {
    auto it = connections.find(id);
    if (it == connections.end()) return;
    auto peer = connections_per_peer.find(it->second->peer_address());
    if (peer != connections_per_peer.end() && --peer->second <= 0) connections_per_peer.erase(peer);
    connections.erase(it);
  }

  void AcceptHttp() {
    http_acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec == net::error::operation_aborted || stopping || !http_acceptor.is_open()) return;
        accept_warning.Warn("http accept failed: " + ec.message() + "; pausing that listener");
        PauseAccept(http_accept_pause, http_accept_backoff_ms, &Impl::AcceptHttp);
        return;
      }
      http_accept_backoff_ms = 0;
      try {
        std::make_shared<HttpSession>(std::move(socket), this)->Start();
      } catch (const std::exception& e) {
        STAS_LOG_ERROR("setting up an HTTP session failed: {}", e.what());
      }
      if (!stopping) AcceptHttp();
    });
  }

  void ScheduleTick() {
    ticker.expires_after(std::chrono::milliseconds(std::max(10, options.tick_ms)));
    ticker.async_wait([this](beast::error_code ec) {
      if (ec || stopping) return;
      try {
        dispatcher->Tick();
      } catch (const std::exception& e) {
        STAS_LOG_ERROR("dispatcher tick failed: {}", e.what());
      }
      ScheduleTick();
    });
  }

  void BeginStop() {
    if (stopping) return;
    stopping = true;
    STAS_LOG_INFO("coordinator stopping");
    boost::system::error_code ec;
    worker_acceptor.close(ec);
    http_acceptor.close(ec);
    ticker.cancel();
    worker_accept_pause.cancel();
    http_accept_pause.cancel();
    signals.cancel(ec);
    auto conns = connections;  // Shutdown() edits the map
    for (auto& [id, c] : conns) c->Shutdown();
    // Give in-flight HTTP responses a moment, then end the loop.
    stop_timer.expires_after(std::chrono::milliseconds(300));
    stop_timer.async_wait([this](beast::error_code) { ioc.stop(); });
  }
};

// ----------------------------------------------------------------------------- WorkerConnection impl

WorkerConnection::WorkerConnection(tcp::socket socket, CoordinatorServer::Impl* server, Dispatcher::ConnectionId id)
    : socket_(std::move(socket)),
      server_(server),
      id_(id),
      peer_(EndpointString(socket_)),
      peer_address_(PeerAddress(socket_)),
      hello_timer_(server->ioc) {}

void WorkerConnection::Start() {
  // A connection that has not said a valid hello in time is closed: it holds a descriptor and a
  // buffer, and an unauthenticated peer gets nothing else.
  auto self = shared_from_this();
  hello_timer_.expires_after(std::chrono::milliseconds(std::max(1, server_->options.hello_timeout_ms)));
  hello_timer_.async_wait([self](beast::error_code ec) {
    try {
      if (ec || self->closed_ || self->authenticated_) return;
      self->server_->dispatcher->OnProtocolError(
          self->id_, "no valid hello within " + std::to_string(self->server_->options.hello_timeout_ms) + " ms");
      self->Close();
    } catch (const std::exception& e) {
      STAS_LOG_ERROR("worker connection {}: {}", self->peer_, e.what());
      self->Shutdown();
    }
  });
  DoRead();
}

void WorkerConnection::DoRead() {
  auto self = shared_from_this();
  socket_.async_read_some(net::buffer(buffer_), [self](beast::error_code ec, size_t n) {
    try {
      if (ec) {
        self->Shutdown();
        return;
      }
      self->decoder_.Append(self->buffer_.data(), n);
      while (!self->closed_ && !self->closing_) {
        auto next = self->decoder_.Next();
        if (!next.ok()) {
          self->server_->dispatcher->OnProtocolError(self->id_, next.status().message());
          break;
        }
        if (!next->has_value()) break;
        self->server_->dispatcher->OnMessage(self->id_, **next);
        if (!self->authenticated_ && self->server_->dispatcher->Authenticated(self->id_)) {
          self->authenticated_ = true;
          self->hello_timer_.cancel();
          self->decoder_.set_max_frame_bytes(protocol::kMaxFrameBytes);
        }
      }
      if (!self->closed_ && !self->closing_) self->DoRead();
    } catch (const std::exception& e) {
      STAS_LOG_ERROR("worker connection {}: {}", self->peer_, e.what());
      self->Shutdown();
    }
  });
}

void WorkerConnection::Send(const Json& message) {
  if (closed_ || closing_) return;
  outbox_.push_back(protocol::EncodeFrame(message));
  if (!writing_) DoWrite();
}

void WorkerConnection::DoWrite() {
  writing_ = true;
  auto self = shared_from_this();
  net::async_write(socket_, net::buffer(outbox_.front()), [self](beast::error_code ec, size_t) {
    try {
      self->writing_ = false;
      if (!self->outbox_.empty()) self->outbox_.pop_front();
      if (ec) {
        self->Shutdown();
        return;
      }
      if (!self->outbox_.empty()) {
        self->DoWrite();
      } else if (self->closing_) {
        self->Shutdown();
      }
    } catch (const std::exception& e) {
      STAS_LOG_ERROR("worker connection {}: {}", self->peer_, e.what());
    }
  });
}

void WorkerConnection::Close() {
  if (closed_) return;
  closing_ = true;
  if (!writing_) Shutdown();
}

void WorkerConnection::Shutdown() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ec;
  hello_timer_.cancel();
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  // Tell the dispatcher later, never from inside one of its own calls.
  auto self = shared_from_this();
  net::post(server_->ioc, [self] {
    try {
      self->server_->dispatcher->OnDisconnect(self->id_);
    } catch (const std::exception& e) {
      STAS_LOG_ERROR("disconnect of {}: {}", self->peer_, e.what());
    }
    self->server_->ForgetConnection(self->id_);
  });
}

// ----------------------------------------------------------------------------------- HttpSession impl

HttpSession::HttpSession(tcp::socket socket, CoordinatorServer::Impl* server)
    : stream_(std::move(socket)), server_(server) {}

void HttpSession::DoRead() {
  parser_.emplace();
  parser_->body_limit(server_->options.max_body_bytes);
  parser_->header_limit(64 * 1024);
  stream_.expires_after(std::chrono::seconds(server_->options.http_idle_timeout_s));
  auto self = shared_from_this();
  http::async_read(stream_, buffer_, *parser_, [self](beast::error_code ec, size_t) {
    try {
      self->OnRead(ec);
    } catch (const std::exception& e) {
      STAS_LOG_ERROR("HTTP session: {}", e.what());
      self->Close();
    }
  });
}

void HttpSession::OnRead(beast::error_code ec) {
  if (ec == http::error::end_of_stream || ec == net::error::operation_aborted || ec == beast::error::timeout ||
      ec == net::error::connection_reset || ec == net::error::eof) {
    return Close();
  }
  if (ec == http::error::body_limit) {
    HttpResponse r;
    r.status = 413;
    r.body = Json({{"error", "request body exceeds the limit of " + std::to_string(server_->options.max_body_bytes) +
                                 " bytes"}}).dump();
    return Respond(r, false, false);
  }
  if (ec) {
    HttpResponse r;
    r.status = 400;
    r.body = Json({{"error", "malformed HTTP request: " + ec.message()}}).dump();
    return Respond(r, false, false);
  }
  const auto& msg = parser_->get();
  HttpRequest request;
  request.method = std::string(msg.method_string());
  request.target = std::string(msg.target());
  for (const auto& field : msg) {
    std::string name(field.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    request.headers[name] = std::string(field.value());
  }
  request.body = msg.body();
  const bool head = msg.method() == http::verb::head;
  if (head) request.method = "GET";
  const bool keep_alive = msg.keep_alive();
  if (server_->pool && server_->api->ShouldOffload(request)) {
    // Redis and file work runs on a worker thread (an HttpApi with its own Redis connection); the loop
    // keeps serving /healthz, heartbeats and dispatch meanwhile. The response and a dispatch come back
    // to the loop.
    auto self = shared_from_this();
    auto served = server_->dispatcher->ServedModels();
    auto snapshot = server_->dispatcher->snapshot();
    net::post(*server_->pool, [self, request = std::move(request), served = std::move(served),
                               snapshot = std::move(snapshot), keep_alive, head]() {
      HttpApi* offload = self->server_->TakeOffloadApi();
      HttpResponse response = offload->HandleOffLoop(request, served, snapshot);
      self->server_->ReturnOffloadApi(offload);
      const bool changed = request.method != "GET" && response.status < 300;
      net::post(self->server_->ioc, [self, response = std::move(response), keep_alive, head, changed]() {
        STAS_LOG_DEBUG("HTTP (off the loop) -> {}", response.status);
        self->Respond(response, keep_alive, head);
        if (changed) self->server_->dispatcher->Poke();
      });
    });
    return;
  }
  HttpResponse response = server_->api->Handle(request);
  STAS_LOG_DEBUG("HTTP {} {} -> {}", request.method, request.target, response.status);
  Respond(response, keep_alive, head);
}

void HttpSession::Respond(const HttpResponse& response, bool keep_alive, bool head) {
  auto decorate = [&](auto& res) {
    res.set(http::field::server, "stas-coordinator");
    res.set(http::field::content_type, response.content_type);
    res.set(http::field::cache_control, "no-store");
    for (const auto& [k, v] : response.headers) res.set(k, v);
    res.keep_alive(keep_alive);
  };
  if (!response.file_path.empty() && !head) {
    beast::error_code ec;
    http::file_body::value_type body;
    body.open(response.file_path.c_str(), beast::file_mode::scan, ec);
    if (!ec) {
      auto res = std::make_shared<http::response<http::file_body>>(http::status::ok, 11);
      decorate(*res);
      res->body() = std::move(body);
      res->prepare_payload();
      return Write(res);
    }
    HttpResponse missing;
    missing.status = 404;
    missing.body = Json({{"error", "cannot open the video: " + ec.message()}}).dump();
    return Respond(missing, keep_alive, head);
  }
  auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(response.status), 11);
  decorate(*res);
  res->body() = head ? std::string() : response.body;
  res->prepare_payload();
  Write(res);
}

template <class Message>
void HttpSession::Write(std::shared_ptr<Message> message) {
  auto self = shared_from_this();
  http::async_write(stream_, *message, [self, message](beast::error_code ec, size_t) {
    try {
      if (ec || !message->keep_alive() || self->server_->stopping) return self->Close();
      self->DoRead();
    } catch (const std::exception& e) {
      STAS_LOG_ERROR("HTTP session: {}", e.what());
    }
  });
}

void HttpSession::Close() {
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream_.socket().close(ec);
}

// ------------------------------------------------------------------------------- CoordinatorServer

CoordinatorServer::CoordinatorServer(Dispatcher* dispatcher, HttpApi* api, ServerOptions options)
    : impl_(std::make_unique<Impl>(dispatcher, api, std::move(options))) {}

CoordinatorServer::~CoordinatorServer() = default;

Status CoordinatorServer::Start() {
  Impl& s = *impl_;
  STAS_RETURN_IF_ERROR(s.Bind(s.worker_acceptor, s.options.listen_host, s.options.listen_port, "worker groups"));
  STAS_RETURN_IF_ERROR(s.Bind(s.http_acceptor, s.options.http_host, s.options.http_port, "HTTP"));
  s.AcceptWorker();
  s.AcceptHttp();
  s.ScheduleTick();
  if (s.options.handle_signals) {
    boost::system::error_code ec;
    s.signals.add(SIGINT, ec);
    s.signals.add(SIGTERM, ec);
    s.signals.async_wait([&s](beast::error_code ec, int signal) {
      if (ec) return;
      STAS_LOG_INFO("received signal {}", signal);
      s.stop_signal = signal;
      s.BeginStop();
    });
  }
  // First tick right away: recover pending tickets before the first worker asks.
  net::post(s.ioc, [&s] {
    try {
      s.dispatcher->Tick();
    } catch (const std::exception& e) {
      STAS_LOG_ERROR("dispatcher tick failed: {}", e.what());
    }
  });
  return Status::Ok();
}

int CoordinatorServer::Run() {
  while (true) {
    try {
      impl_->ioc.run();
      break;
    } catch (const std::exception& e) {
      // Handlers catch their own exceptions; this is the last line of defence.
      STAS_LOG_ERROR("event loop: {}", e.what());
    }
  }
  return impl_->stop_signal;
}

void CoordinatorServer::Stop() {
  net::post(impl_->ioc, [this] { impl_->BeginStop(); });
}

int CoordinatorServer::worker_port() const {
  boost::system::error_code ec;
  auto ep = impl_->worker_acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

int CoordinatorServer::http_port() const {
  boost::system::error_code ec;
  auto ep = impl_->http_acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

}  // namespace stas::coordinator

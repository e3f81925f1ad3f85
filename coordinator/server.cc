#include "coordinator/server.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <atomic>
#include <csignal>
#include <deque>
#include <map>
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

}  // namespace

// ------------------------------------------------------------------------------- worker connections

class WorkerConnection : public WorkerChannel, public std::enable_shared_from_this<WorkerConnection> {
 public:
  WorkerConnection(tcp::socket socket, CoordinatorServer::Impl* server, Dispatcher::ConnectionId id);
  void Start();
  void Send(const Json& message) override;
  void Close() override;
  std::string peer() const override { return peer_; }
  void Shutdown();

 private:
  void DoRead();
  void DoWrite();

  tcp::socket socket_;
  CoordinatorServer::Impl* server_;
  Dispatcher::ConnectionId id_;
  std::string peer_;
  protocol::FrameDecoder decoder_;
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
        signals(ioc), stop_timer(ioc) {}

  Dispatcher* dispatcher;
  HttpApi* api;
  ServerOptions options;
  net::io_context ioc;
  tcp::acceptor worker_acceptor;
  tcp::acceptor http_acceptor;
  net::steady_timer ticker;
  net::signal_set signals;
  net::steady_timer stop_timer;
  std::map<Dispatcher::ConnectionId, std::shared_ptr<WorkerConnection>> connections;
  Dispatcher::ConnectionId next_id = 1;
  bool stopping = false;
  std::atomic<int> stop_signal{0};

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

  void AcceptWorker() {
    worker_acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec != net::error::operation_aborted) STAS_LOG_WARN("worker accept failed: {}", ec.message());
        if (!stopping && worker_acceptor.is_open()) AcceptWorker();
        return;
      }
      try {
        boost::system::error_code opt_ec;
        socket.set_option(net::socket_base::keep_alive(true), opt_ec);
        socket.set_option(tcp::no_delay(true), opt_ec);
        const auto id = next_id++;
        auto connection = std::make_shared<WorkerConnection>(std::move(socket), this, id);
        connections[id] = connection;
        dispatcher->OnConnect(id, connection);
        connection->Start();
      } catch (const std::exception& e) {
        STAS_LOG_ERROR("setting up a worker connection failed: {}", e.what());
      }
      if (!stopping) AcceptWorker();
    });
  }

  void AcceptHttp() {
    http_acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec != net::error::operation_aborted) STAS_LOG_WARN("http accept failed: {}", ec.message());
        if (!stopping && http_acceptor.is_open()) AcceptHttp();
        return;
      }
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
    : socket_(std::move(socket)), server_(server), id_(id), peer_(EndpointString(socket_)) {}

void WorkerConnection::Start() { DoRead(); }

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
    self->server_->connections.erase(self->id_);
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
  HttpResponse response = server_->api->Handle(request);
  STAS_LOG_DEBUG("HTTP {} {} -> {}", request.method, request.target, response.status);
  Respond(response, msg.keep_alive(), head);
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

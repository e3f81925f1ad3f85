// CoordinatorServer: the network side of the coordinator on one Boost.Asio event loop.
//
// - Worker listener (--listen): length-prefixed JSON frames (protocol/protocol.h) to and from the
//   Dispatcher. TCP keep-alive is on so half-open connections of dead hosts are noticed.
//   Before a connection's hello is accepted it is held to a deadline (hello_timeout_ms) and a small
//   frame limit (protocol::kMaxPreHelloFrameBytes); connections are capped in total and per peer
//   address (the excess is closed at once). Accept errors (e.g. out of file descriptors) pause that
//   listener with a growing backoff instead of spinning, and are logged at most once a second.
// - HTTP listener (--http): Boost.Beast HTTP/1.1 with keep-alive, handing each request to HttpApi.
//   Bodies above the limit get 413, unparsable requests 400, idle connections close after 60 s.
//   Videos are streamed from disk (file_body).
// - A timer runs Dispatcher::Tick every tick_ms.
// - Requests that wait on Redis or files run off the loop (ServerOptions::offload_apis) on worker threads.
// - SIGINT/SIGTERM (when handle_signals) stop it gracefully: listeners close, worker connections
//   close (groups reconnect to the next coordinator and keep their leases), then the loop ends.
// No exception leaves an Asio handler: each handler catches and logs.
// Thread-safety: Start/Run on one thread; Stop() may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/dispatcher.h"
#include "coordinator/http_api.h"

namespace stas::coordinator {

struct ServerOptions {
  std::string listen_host = "127.0.0.1";
  int listen_port = 7070;  // 0 = any free port (see worker_port())
  std::string http_host = "127.0.0.1";
  int http_port = 8080;
  int tick_ms = 200;
  size_t max_body_bytes = 8u << 20;
  int http_idle_timeout_s = 60;
  bool handle_signals = true;
  // When not empty, requests that wait on Redis or files (HttpApi::ShouldOffload) run on a pool of
  // worker threads, one per instance here; each instance must use a Redis connection of its own and
  // serves one request at a time. The loop never waits for them, and a big batch on one thread does
  // not hold up listings or cancels on another.
  std::vector<HttpApi*> offload_apis;
  int hello_timeout_ms = 5000;          // a worker connection must say a valid hello within this
  int max_worker_connections = 256;     // open worker connections, all peers together
  int max_worker_connections_per_peer = 32;  // per remote IP address
};

class CoordinatorServer {
 public:
  // `dispatcher` and `api` are borrowed and used only on the Run() thread.
  CoordinatorServer(Dispatcher* dispatcher, HttpApi* api, ServerOptions options);
  ~CoordinatorServer();
  CoordinatorServer(const CoordinatorServer&) = delete;
  CoordinatorServer& operator=(const CoordinatorServer&) = delete;

  // Binds both listeners. Unavailable (address in use, cannot bind) or InvalidArgument (bad address).
  Status Start();
  // Runs the event loop until Stop() or a signal. Returns the signal number that stopped it (0 if none).
  int Run();
  void Stop();

  int worker_port() const;
  int http_port() const;

  struct Impl;  // the event loop's state (server.cc); public so its connection classes can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace stas::coordinator

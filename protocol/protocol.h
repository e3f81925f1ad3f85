// The coordinator <-> worker-group wire protocol: length-prefixed JSON over TCP.
//
// Frame: 4-byte big-endian payload length, then that many bytes of UTF-8 JSON (an object with a
// "type" field). Frames above kMaxFrameBytes are a protocol error (the connection is dropped).
//
// Worker group leader -> coordinator:
//   hello      {worker, group_size, model, host, pid, token?}    first frame after connect; token is
//                                                                 required when the coordinator has one
//                                                                 (else it answers error and closes)
//   ready      {}                                                 asks for a job (coordinator may hold it)
//   heartbeat  {job_id, lease, step, steps, stage}                renews the job's lease; also progress
//   commit     {job_id, lease}                                    asks permission to publish the output
//   done       {job_id, lease, output, manifest, timings}         output committed under the storage folder
//   failed     {job_id, lease, error, retryable}
// Coordinator -> worker:
//   welcome    {worker, heartbeat_ms, lease_ms, storage}
//   job        {job_id, lease, attempt, spec, resume}             spec = RenderSpec JSON
//   heartbeat_ack {job_id, cancel}                                cancel=true: stop between steps
//   commit_ack {job_id, granted}                                  false: the lease was lost; discard output
//   error      {message}
// A lease token is an opaque string; a worker whose lease was taken over (it stalled past lease_ms)
// is denied its commit, which is what keeps a late result from producing a second output.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/json.h"
#include "common/status.h"

namespace stas::protocol {

constexpr uint32_t kMaxFrameBytes = 16u << 20;

// Encodes one frame (header + payload).
std::string EncodeFrame(const Json& message);

// Incremental decoder: feed bytes as they arrive, pop complete messages.
class FrameDecoder {
 public:
  void Append(const char* data, size_t size);
  // Next complete message, nullopt when more bytes are needed; InvalidArgument on an oversized frame
  // or a payload that is not a JSON object with a string "type" (the stream is then unusable).
  Result<std::optional<Json>> Next();
  size_t buffered() const { return buffer_.size() - offset_; }

 private:
  std::string buffer_;
  size_t offset_ = 0;
};

// Blocking helpers over a connected socket file descriptor (the worker side uses plain sockets).
Status WriteFrame(int fd, const Json& message);
// Waits up to timeout_ms (-1 = forever) for one message. Timeout -> kTimeout; closed -> kUnavailable.
Result<Json> ReadFrame(int fd, FrameDecoder& decoder, int timeout_ms);

}  // namespace stas::protocol

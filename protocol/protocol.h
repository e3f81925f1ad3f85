// The coordinator <-> worker-group wire protocol: length-prefixed JSON over TCP.
//
// Frame: 4-byte big-endian payload length, then that many bytes of UTF-8 JSON (an object with a
// "type" field). Frames above kMaxFrameBytes are a protocol error (the connection is dropped).
//
// Worker group leader -> coordinator:
//   hello      {worker, group_size, model, host, pid, token}     first frame after connect, within the
//                                                                 coordinator's hello deadline; token is
//                                                                 its --token or its worker secret (else
//                                                                 it answers error and closes)
//   ready      {}                                                 asks for a job (coordinator may hold it)
//   heartbeat  {job_id, lease, step, steps, stage}                renews the job's lease; also progress
//   commit     {job_id, lease}                                    asks permission to publish the output
//   done       {job_id, lease, timings}                           output committed; accepted only after
//                                                                 this lease's commit was granted. The
//                                                                 coordinator records the output it
//                                                                 assigned in the job message;
//                                                                 output/manifest fields a worker sends
//                                                                 are ignored
//   failed     {job_id, lease, error, retryable}                  error is cut to 4 KiB (on a UTF-8
//                                                                 character boundary)
// Coordinator -> worker:
//   welcome    {worker, heartbeat_ms, lease_ms, storage}
//   job        {job_id, lease, attempt, spec, resume, output}     spec = RenderSpec JSON; output = where
//                                                                 the video goes, relative to the storage
//                                                                 folder ("<folder>/<name>.mp4", assigned
//                                                                 by the coordinator); a worker writes
//                                                                 exactly there and refuses the job (not
//                                                                 retryable) when it is missing or not a
//                                                                 safe path under its storage folder;
//              [upcoming_prompts]                                 optional: prompts of the jobs queued
//                                                                 next (a hint to encode them early)
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
// Before a connection has said a valid hello, frames are small: a hello is well under 1 KiB.
constexpr uint32_t kMaxPreHelloFrameBytes = 16u << 10;
// Longest error text / stage name carried in a message.
constexpr size_t kMaxErrorBytes = 4096;
constexpr size_t kMaxStageBytes = 64;
// Largest step count a heartbeat may report (the job spec's limit).
constexpr int kMaxJobSteps = 1000;

// Encodes one frame (header + payload). Never throws: invalid UTF-8 in a string is replaced (U+FFFD).
std::string EncodeFrame(const Json& message);

// Reads a worker secret / token file: its first line, trimmed. InvalidArgument when it is empty,
// longer than 256 bytes or not printable ASCII; NotFound / Unavailable when it cannot be read.
Result<std::string> ReadSecretFile(const std::string& path);

// Incremental decoder: feed bytes as they arrive, pop complete messages.
class FrameDecoder {
 public:
  explicit FrameDecoder(uint32_t max_frame_bytes = kMaxFrameBytes) : max_frame_bytes_(max_frame_bytes) {}
  void set_max_frame_bytes(uint32_t n) { max_frame_bytes_ = n; }
  void Append(const char* data, size_t size);
  // Next complete message, nullopt when more bytes are needed; InvalidArgument on an oversized frame
  // or a payload that is not a JSON object with a string "type" (the stream is then unusable).
  Result<std::optional<Json>> Next();
  size_t buffered() const { return buffer_.size() - offset_; }

 private:
  uint32_t max_frame_bytes_;
  std::string buffer_;
  size_t offset_ = 0;
};

// Blocking helpers over a connected socket file descriptor (the worker side uses plain sockets).
Status WriteFrame(int fd, const Json& message);
// Waits up to timeout_ms (-1 = forever) for one message. Timeout -> kTimeout; closed -> kUnavailable.
Result<Json> ReadFrame(int fd, FrameDecoder& decoder, int timeout_ms);

}  // namespace stas::protocol

// BackgroundFrameWriter: runs a frame sink (an MP4 encoder) on its own thread, so that encoding the
// pieces of a video overlaps the VAE decoding the next pieces on the render thread.
//
// Push hands a piece over and returns at once unless `max_queued` pieces already wait (then it waits
// for room: memory stays bounded when the encoder is the slower side). Pieces reach the sink in push
// order. Finish waits until every pushed piece went through the sink and returns the sink's first
// error; after an error later pieces are dropped and Push reports that error too.
//
// Thread-safety: Push and Finish from one (the render) thread; the sink runs on the writer's thread.
#pragma once

#include <ATen/ATen.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "common/status.h"

namespace stas::worker {

class BackgroundFrameWriter {
 public:
  using Sink = std::function<Status(const at::Tensor& frames)>;
  explicit BackgroundFrameWriter(Sink sink, size_t max_queued = 4);
  ~BackgroundFrameWriter();  // Finish(), ignoring its status
  BackgroundFrameWriter(const BackgroundFrameWriter&) = delete;
  BackgroundFrameWriter& operator=(const BackgroundFrameWriter&) = delete;

  Status Push(at::Tensor frames);
  Status Finish();

 private:
  void Loop();

  Sink sink_;
  size_t max_queued_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<at::Tensor> queue_;
  bool closing_ = false;
  Status error_ = Status::Ok();
  std::thread thread_;
};

}  // namespace stas::worker

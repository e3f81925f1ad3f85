#include "worker/background_writer.h"

#include <exception>
#include <string>

namespace stas::worker {

BackgroundFrameWriter::BackgroundFrameWriter(Sink sink, size_t max_queued)
    : sink_(std::move(sink)), max_queued_(max_queued < 1 ? 1 : max_queued), thread_([this] { Loop(); }) {}

BackgroundFrameWriter::~BackgroundFrameWriter() { (void)Finish(); }

Status BackgroundFrameWriter::Push(at::Tensor frames) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return queue_.size() < max_queued_ || !error_.ok(); });
  if (!error_.ok()) return error_;
  if (closing_) return Internal("BackgroundFrameWriter: Push after Finish");
  queue_.push_back(std::move(frames));
  changed_.notify_all();
  return Status::Ok();
}

Status BackgroundFrameWriter::Finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
    changed_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void BackgroundFrameWriter::Loop() {
  while (true) {
    at::Tensor piece;
    {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [&] { return !queue_.empty() || closing_; });
      if (queue_.empty()) return;  // closing and drained
      piece = std::move(queue_.front());
      queue_.pop_front();
      if (!error_.ok()) continue;  // drop what follows a failure
    }
    Status st = Status::Ok();
    try {
      st = sink_(piece);
    } catch (const std::exception& e) {
      st = Internal(std::string("frame sink failed with an exception: ") + e.what());
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (!st.ok() && error_.ok()) error_ = st;
    changed_.notify_all();
  }
}

}  // namespace stas::worker

// BackgroundFrameWriter: the encoder's work overlaps the producer's, pieces keep their order, errors
// come back, and the queue stays bounded.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "worker/background_writer.h"

namespace stas::worker {
namespace {

using namespace std::chrono_literals;

// An ordered log of what happened on either thread.
struct EventLog {
  std::mutex mu;
  std::vector<std::string> events;
  void Add(std::string e) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(std::move(e));
  }
  int IndexOf(const std::string& e) {
    std::lock_guard<std::mutex> lock(mu);
    for (size_t i = 0; i < events.size(); ++i)
      if (events[i] == e) return static_cast<int>(i);
    return -1;
  }
};

TEST(BackgroundFrameWriter, EncodingOverlapsTheNextPiecesAndKeepsTheirOrder) {
  EventLog log;
  std::vector<int64_t> written;
  BackgroundFrameWriter writer([&](const at::Tensor& frames) {
    log.Add("encode " + std::to_string(frames.item<int64_t>()) + " start");
    std::this_thread::sleep_for(30ms);
    written.push_back(frames.item<int64_t>());
    log.Add("encode " + std::to_string(frames.item<int64_t>()) + " end");
    return Status::Ok();
  });
  const auto start = std::chrono::steady_clock::now();
  for (int64_t piece = 0; piece < 4; ++piece) {
    log.Add("decode " + std::to_string(piece) + " start");
    std::this_thread::sleep_for(30ms);  // the VAE's work on this piece
    log.Add("decode " + std::to_string(piece) + " end");
    ASSERT_TRUE(writer.Push(at::tensor(piece)).ok());
  }
  ASSERT_TRUE(writer.Finish().ok());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(written, (std::vector<int64_t>{0, 1, 2, 3}));
  // Piece 0 was being encoded while piece 1 was decoded: its encode began before decode 1 ended.
  EXPECT_LT(log.IndexOf("encode 0 start"), log.IndexOf("decode 1 end"));
  EXPECT_LT(log.IndexOf("encode 2 start"), log.IndexOf("decode 3 end"));
  // Serial work would take 8 x 30 ms; overlapped it is about 5 x 30 ms.
  EXPECT_LT(seconds, 0.225);
}

TEST(BackgroundFrameWriter, TheSinksFirstErrorReachesPushAndFinishAndLaterPiecesAreDropped) {
  std::atomic<int> calls{0};
  BackgroundFrameWriter writer([&](const at::Tensor& frames) -> Status {
    ++calls;
    if (frames.item<int64_t>() == 1) return IoError("disk full");
    return Status::Ok();
  });
  ASSERT_TRUE(writer.Push(at::tensor(int64_t{0})).ok());
  ASSERT_TRUE(writer.Push(at::tensor(int64_t{1})).ok());
  // Wait until the failure is known, then the next Push reports it.
  Status pushed = Status::Ok();
  for (int i = 0; i < 200 && pushed.ok(); ++i) {
    std::this_thread::sleep_for(5ms);
    if (calls.load() >= 2) pushed = writer.Push(at::tensor(int64_t{2}));
  }
  EXPECT_EQ(pushed.code(), StatusCode::kIoError);
  Status finished = writer.Finish();
  EXPECT_EQ(finished.code(), StatusCode::kIoError);
  EXPECT_NE(finished.message().find("disk full"), std::string::npos);
  EXPECT_EQ(calls.load(), 2);
}

TEST(BackgroundFrameWriter, PushWaitsWhenTheQueueIsFull) {
  std::atomic<bool> release{false};
  std::atomic<int> done{0};
  BackgroundFrameWriter writer(
      [&](const at::Tensor&) {
        while (!release.load()) std::this_thread::sleep_for(1ms);
        ++done;
        return Status::Ok();
      },
      /*max_queued=*/1);
  ASSERT_TRUE(writer.Push(at::tensor(0)).ok());  // taken by the sink, which blocks
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(writer.Push(at::tensor(1)).ok());  // queued
  std::atomic<bool> third_returned{false};
  std::thread producer([&] {
    EXPECT_TRUE(writer.Push(at::tensor(2)).ok());
    third_returned = true;
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(third_returned.load());  // no room: the producer waits
  release = true;
  producer.join();
  EXPECT_TRUE(writer.Finish().ok());
  EXPECT_EQ(done.load(), 3);
}

}  // namespace
}  // namespace stas::worker

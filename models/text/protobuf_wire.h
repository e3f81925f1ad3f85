// A minimal protocol-buffers wire-format reader and writer: enough to read and write a SentencePiece
// `spiece.model` (a serialized ModelProto) without linking libprotobuf or libsentencepiece (both carry
// protobuf and clash with LibTorch's at load time on Debian).
//
// Supported wire types: varint (0), 64-bit (1), length-delimited (2), 32-bit (5). Groups (3, 4) are
// rejected. The reader never reads past its buffer: every malformed input (truncated varint, a length
// past the end, a field number of 0, an unknown wire type) is an InvalidArgument Status.
// Readers view the caller's bytes (which must outlive them); writers own their buffer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace stas::models::text::pb {

enum class WireType : uint8_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// One field as read from the wire. For length-delimited fields `bytes` views the payload.
struct Field {
  uint32_t number = 0;
  WireType type = WireType::kVarint;
  uint64_t varint = 0;     // kVarint, and the raw bits of kFixed64 / kFixed32
  std::string_view bytes;  // kLengthDelimited

  // Typed views; InvalidArgument when the wire type does not fit the declared field type.
  Result<int32_t> AsInt32() const;  // int32/enum: 64-bit two's complement on the wire, truncated
  Result<bool> AsBool() const;
  Result<float> AsFloat() const;    // fixed32
  Result<std::string_view> AsBytes() const;
};

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  size_t position() const { return pos_; }
  // Reads the next field. Precondition: !done().
  Result<Field> Next();

 private:
  Result<uint64_t> ReadVarint();
  std::string_view data_;
  size_t pos_ = 0;
};

class Writer {
 public:
  void Varint(uint32_t field, uint64_t value);
  void Int32(uint32_t field, int32_t value);  // negative values take 10 bytes, as protobuf writes them
  void Bool(uint32_t field, bool value) { Varint(field, value ? 1 : 0); }
  void Float(uint32_t field, float value);
  void Bytes(uint32_t field, std::string_view value);
  // Raw bytes appended as they are (tests use it to build malformed messages).
  void Raw(std::string_view bytes) { out_.append(bytes); }
  void RawVarint(uint64_t value);
  const std::string& data() const { return out_; }

 private:
  void Tag(uint32_t field, WireType type);
  std::string out_;
};

}  // namespace stas::models::text::pb

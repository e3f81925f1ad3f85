#include "models/text/protobuf_wire.h"

#include <cstring>

namespace stas::models::text::pb {

namespace {
const char* WireTypeName(WireType t) {
  switch (t) {
    case WireType::kVarint: return "varint";
    case WireType::kFixed64: return "fixed64";
    case WireType::kLengthDelimited: return "length-delimited";
    case WireType::kFixed32: return "fixed32";
  }
  return "?";
}

Status WrongType(const Field& f, WireType want) {
  return InvalidArgument("protobuf field " + std::to_string(f.number) + " has wire type " + WireTypeName(f.type) +
                         ", expected " + WireTypeName(want));
}
}  // namespace

Result<int32_t> Field::AsInt32() const {
  if (type != WireType::kVarint) return WrongType(*this, WireType::kVarint);
  return static_cast<int32_t>(static_cast<uint32_t>(varint));
}

Result<bool> Field::AsBool() const {
  if (type != WireType::kVarint) return WrongType(*this, WireType::kVarint);
  return varint != 0;
}

Result<float> Field::AsFloat() const {
  if (type != WireType::kFixed32) return WrongType(*this, WireType::kFixed32);
  const uint32_t bits = static_cast<uint32_t>(varint);
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

Result<std::string_view> Field::AsBytes() const {
  if (type != WireType::kLengthDelimited) return WrongType(*this, WireType::kLengthDelimited);
  return bytes;
}

Result<uint64_t> Reader::ReadVarint() {
  uint64_t value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos_ >= data_.size()) return InvalidArgument("protobuf: truncated varint at byte " + std::to_string(pos_));
    const uint8_t byte = static_cast<uint8_t>(data_[pos_++]);
    value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return value;
  }
  return InvalidArgument("protobuf: varint longer than 10 bytes at byte " + std::to_string(pos_));
}

Result<Field> Reader::Next() {
  const size_t start = pos_;
  STAS_ASSIGN_OR_RETURN(uint64_t tag, ReadVarint());
  Field f;
  const uint64_t number = tag >> 3;
  if (number == 0 || number > (1u << 29) - 1)
    return InvalidArgument("protobuf: invalid field number " + std::to_string(number) + " at byte " +
                           std::to_string(start));
  f.number = static_cast<uint32_t>(number);
  const uint32_t wire = static_cast<uint32_t>(tag & 7);
  auto need = [&](uint64_t n) -> Status {
    if (static_cast<uint64_t>(data_.size() - pos_) < n)
      return InvalidArgument("protobuf: field " + std::to_string(f.number) + " at byte " + std::to_string(start) +
                             " runs past the end of the message (" + std::to_string(n) + " bytes wanted, " +
                             std::to_string(data_.size() - pos_) + " left)");
    return Status::Ok();
  };
  switch (wire) {
    case 0: {
      f.type = WireType::kVarint;
      STAS_ASSIGN_OR_RETURN(f.varint, ReadVarint());
      return f;
    }
    case 1: {
      f.type = WireType::kFixed64;
      STAS_RETURN_IF_ERROR(need(8));
      uint64_t v = 0;
      for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
      pos_ += 8;
      f.varint = v;
      return f;
    }
    case 2: {
      f.type = WireType::kLengthDelimited;
      STAS_ASSIGN_OR_RETURN(uint64_t length, ReadVarint());
      STAS_RETURN_IF_ERROR(need(length));
      f.bytes = data_.substr(pos_, static_cast<size_t>(length));
      pos_ += static_cast<size_t>(length);
      return f;
    }
    case 5: {
      f.type = WireType::kFixed32;
      STAS_RETURN_IF_ERROR(need(4));
      uint32_t v = 0;
      for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
      pos_ += 4;
      f.varint = v;
      return f;
    }
    default:
      return InvalidArgument("protobuf: unsupported wire type " + std::to_string(wire) + " for field " +
                             std::to_string(f.number) + " at byte " + std::to_string(start));
  }
}

void Writer::RawVarint(uint64_t value) {
  while (value >= 0x80) {
    out_.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out_.push_back(static_cast<char>(value));
}

void Writer::Tag(uint32_t field, WireType type) {
  RawVarint((static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(type));
}

void Writer::Varint(uint32_t field, uint64_t value) {
  Tag(field, WireType::kVarint);
  RawVarint(value);
}

void Writer::Int32(uint32_t field, int32_t value) {
  // Sign-extended to 64 bits, as protobuf encodes int32.
  Varint(field, static_cast<uint64_t>(static_cast<int64_t>(value)));
}

void Writer::Float(uint32_t field, float value) {
  Tag(field, WireType::kFixed32);
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
}

void Writer::Bytes(uint32_t field, std::string_view value) {
  Tag(field, WireType::kLengthDelimited);
  RawVarint(value.size());
  out_.append(value);
}

}  // namespace stas::models::text::pb

#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/torch_compat.h"

namespace stas {

// RAII owner of a private read-only mapping of a whole file.
class MappedFile {
 public:
  MappedFile(void* data, size_t size) : data_(data), size_(size) {}
  ~MappedFile() {
    if (data_ && size_) munmap(data_, size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* bytes() const { return static_cast<const uint8_t*>(data_); }
  size_t size() const { return size_; }

 private:
  void* data_;
  size_t size_;
};

size_t SafetensorsDtypeSize(const std::string& d) {
  static const std::map<std::string, size_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},      {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2},     {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"I64", 8}, {"U64", 8},     {"F64", 8},     {"C64", 8}};
  auto it = kSizes.find(d);
  return it == kSizes.end() ? 0 : it->second;
}

namespace {

Status Bad(const std::string& what) { return InvalidArgument("safetensors: " + what); }

// Multiplies with overflow detection.
bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

Result<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* data, size_t size) {
  if (size < 8) return Bad("file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > kMaxSafetensorsHeaderBytes)
    return Bad("header length " + std::to_string(header_len) + " exceeds the limit of " +
               std::to_string(kMaxSafetensorsHeaderBytes) + " bytes");
  if (header_len > size - 8)
    return Bad("header length " + std::to_string(header_len) + " is larger than the file (" +
               std::to_string(size) + " bytes): truncated file?");
  SafetensorsHeader header;
  header.data_offset = 8 + header_len;
  const uint64_t data_size = size - header.data_offset;

  nlohmann::json json;
  try {
    json = nlohmann::json::parse(data + 8, data + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    return Bad(std::string("header is not valid JSON: ") + e.what());
  }
  if (!json.is_object()) return Bad("header is not a JSON object");

  for (auto it = json.begin(); it != json.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return Bad("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return Bad("__metadata__ value for '" + m.key() + "' is not a string");
        header.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) return Bad("entry '" + name + "' is not an object");
    SafetensorsEntry e;
    e.name = name;
    auto dtype = v.find("dtype");
    auto shape = v.find("shape");
    auto offsets = v.find("data_offsets");
    if (dtype == v.end() || !dtype->is_string()) return Bad("entry '" + name + "' has no string dtype");
    e.dtype = dtype->get<std::string>();
    const size_t item = SafetensorsDtypeSize(e.dtype);
    if (item == 0) return Bad("entry '" + name + "' has unknown dtype '" + e.dtype + "'");
    if (shape == v.end() || !shape->is_array()) return Bad("entry '" + name + "' has no shape array");
    uint64_t numel = 1;
    for (const auto& d : *shape) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        return Bad("entry '" + name + "' has a shape dimension that is not a non-negative integer");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || MulOverflows(numel, dim, &numel))
        return Bad("entry '" + name + "' has a shape whose element count overflows");
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    if (offsets == v.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
        !(*offsets)[1].is_number_unsigned())
      return Bad("entry '" + name + "' needs data_offsets [begin, end] of non-negative integers");
    e.begin = (*offsets)[0].get<uint64_t>();
    e.end = (*offsets)[1].get<uint64_t>();
    if (e.begin > e.end) return Bad("entry '" + name + "' has data_offsets with begin > end");
    if (e.end > data_size)
      return Bad("entry '" + name + "' ends at byte " + std::to_string(e.end) + " past the data region of " +
                 std::to_string(data_size) + " bytes: truncated file?");
    uint64_t bytes = 0;
    if (MulOverflows(numel, item, &bytes) || bytes != e.end - e.begin)
      return Bad("entry '" + name + "' spans " + std::to_string(e.end - e.begin) + " bytes but shape x dtype needs " +
                 std::to_string(numel) + " x " + std::to_string(item));
    header.entries.push_back(std::move(e));
  }

  // Ranges must not overlap (empty tensors may share an offset).
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& e : header.entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](auto* a, auto* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto* prev = by_offset[i - 1];
    const auto* cur = by_offset[i];
    if (cur->begin < prev->end && cur->end > cur->begin)
      return Bad("entries '" + prev->name + "' and '" + cur->name + "' have overlapping data ranges");
  }
  std::sort(header.entries.begin(), header.entries.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return header;
}

Result<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound("safetensors file not found: " + path);
    return IoError("cannot open " + path + ": " + std::strerror(errno));
  }
  FileDescriptor owner(fd);
  struct stat st {};
  if (fstat(fd, &st) != 0) return IoError("cannot stat " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return InvalidArgument(path + " is not a regular file");
  const size_t size = static_cast<size_t>(st.st_size);
  std::shared_ptr<MappedFile> map;
  if (size == 0) {
    map = std::make_shared<MappedFile>(nullptr, 0);
  } else {
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) return IoError("cannot mmap " + path + ": " + std::strerror(errno));
    map = std::make_shared<MappedFile>(p, size);
  }
  auto header = ParseSafetensorsHeader(map->bytes(), map->size());
  if (!header.ok()) return header.status().WithContext(path);
  SafetensorsFile file;
  file.path_ = path;
  file.map_ = std::move(map);
  file.header_ = std::move(header).value();
  return file;
}

const SafetensorsEntry* SafetensorsFile::Find(const std::string& name) const {
  auto it = std::lower_bound(header_.entries.begin(), header_.entries.end(), name,
                             [](const SafetensorsEntry& e, const std::string& n) { return e.name < n; });
  return (it != header_.entries.end() && it->name == name) ? &*it : nullptr;
}

bool SafetensorsFile::Contains(const std::string& name) const { return Find(name) != nullptr; }

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  for (const auto& e : header_.entries) names.push_back(e.name);
  return names;
}

Result<at::Tensor> SafetensorsFile::Get(const std::string& name) const {
  const SafetensorsEntry* e = Find(name);
  if (!e) return NotFound("tensor '" + name + "' not in " + path_);
  auto type = compat::ScalarTypeForSafetensorsDtype(e->dtype);
  if (!type)
    return NotImplemented("tensor '" + name + "' in " + path_ + " has dtype " + e->dtype +
                          ", which LibTorch " + compat::TorchVersionString() + " cannot represent");
  auto options = at::TensorOptions().dtype(*type).device(at::kCPU);
  if (e->end == e->begin) return at::empty(e->shape, options);
  uint8_t* ptr = const_cast<uint8_t*>(map_->bytes()) + header_.data_offset + e->begin;
  const size_t item = SafetensorsDtypeSize(e->dtype);
  auto keep_alive = map_;
  at::Tensor view = at::from_blob(
      ptr, e->shape, [keep_alive](void*) mutable { keep_alive.reset(); }, options);
  if (reinterpret_cast<uintptr_t>(ptr) % item != 0) return view.clone();
  return view;
}

Status WriteSafetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  static const std::map<at::ScalarType, std::string> kNames = {
      {at::kBool, "BOOL"}, {at::kByte, "U8"},  {at::kChar, "I8"},  {at::kShort, "I16"},     {at::kInt, "I32"},
      {at::kLong, "I64"},  {at::kHalf, "F16"}, {at::kFloat, "F32"}, {at::kBFloat16, "BF16"}, {at::kDouble, "F64"}};
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> blobs;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    auto it = kNames.find(t.scalar_type());
    if (it == kNames.end()) return InvalidArgument("cannot write tensor '" + name + "' of dtype " + std::string(c10::toString(t.scalar_type())));
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = c.numel() * c.element_size();
    header[name] = {{"dtype", it->second}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    blobs.push_back(c);
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // keep the data region 8-byte aligned
  std::string bytes;
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  bytes += text;
  for (const auto& b : blobs) bytes.append(static_cast<const char*>(b.data_ptr()), b.numel() * b.element_size());
  return WriteFileAtomically(path, bytes);
}

}  // namespace stas

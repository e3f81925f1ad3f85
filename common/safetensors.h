// Safetensors reading: a memory-mapped file with a strictly validated header.
//
// Format: u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data region; offsets are relative to the start of the data region.
//
// Every malformed input (truncated file, header larger than the file or than kMaxHeaderBytes, bad JSON,
// unknown dtype, offsets past the end, overlapping ranges, size not matching shape x dtype) is reported
// as an InvalidArgument Status naming the file and the tensor; nothing here crashes on hostile bytes.
// SafetensorsFile is immutable after Open and safe to share between threads.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace stas {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;           // as written: "F32", "BF16", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;          // byte offsets in the data region
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // sorted by name
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;               // 8 + header length
};

// Refuses headers above this size (real checkpoints use well under 1 MiB).
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

// Bytes per element of a safetensors dtype name; 0 when the name is not a safetensors dtype.
size_t SafetensorsDtypeSize(const std::string& dtype);

// Parses and validates the header of a safetensors image held in memory (the whole file).
// Pure function: the fuzz target drives it directly.
Result<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* data, size_t size);

class MappedFile;

class SafetensorsFile {
 public:
  // Maps `path` read-only (copy-on-write) and validates its header.
  static Result<SafetensorsFile> Open(const std::string& path);

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  bool Contains(const std::string& name) const;
  std::vector<std::string> Names() const;
  const SafetensorsEntry* Find(const std::string& name) const;

  // A CPU tensor viewing the mapping (kept alive by the tensor) when aligned, else an aligned copy.
  // NotImplemented when this LibTorch has no such dtype (e.g. U16 on 1.13).
  Result<at::Tensor> Get(const std::string& name) const;

 private:
  std::string path_;
  std::shared_ptr<MappedFile> map_;
  SafetensorsHeader header_;
};

// Writes tensors (any device; copied to CPU, made contiguous) to `path` atomically (temp + rename).
Status WriteSafetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace stas

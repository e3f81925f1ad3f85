// Named-tensor sources: safetensors files, sharded checkpoints, key prefixes.
//
// WeightStore is a cheap-to-copy view (shared state); Get is thread-safe. Tensors come back on the
// CPU in their stored dtype, viewing the file mapping where possible (zero copy).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "common/status.h"

namespace stas {

class WeightStore {
 public:
  WeightStore() = default;

  // One safetensors file.
  static Result<WeightStore> OpenFile(const std::string& path);
  // A component folder: `*.safetensors.index.json` (sharded) when present, else every `*.safetensors`.
  static Result<WeightStore> OpenDirectory(const std::string& dir);
  // An in-memory store (tests, the built-in tiny model).
  static WeightStore FromTensors(std::map<std::string, at::Tensor> tensors);

  // A view where Get("a.b") reads "<prefix>a.b" of this store.
  WeightStore WithPrefix(const std::string& prefix) const;

  bool Has(const std::string& name) const;
  Result<at::Tensor> Get(const std::string& name) const;
  // Names under this view's prefix, with the prefix removed, sorted.
  std::vector<std::string> Names() const;
  std::string Describe() const;  // for error messages: the files or "in-memory"

 private:
  struct Shared;
  std::shared_ptr<const Shared> shared_;
  std::string prefix_;
};

// Thrown by WeightReader::Require; model loaders catch it at their boundary (LoadModelWeights).
class MissingWeightError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads weights for a module with shape checks, converting to a device/dtype on the way.
class WeightReader {
 public:
  WeightReader(WeightStore store, at::TensorOptions options) : store_(std::move(store)), options_(options) {}
  // Throws MissingWeightError when absent or of another shape (expected empty = any shape).
  at::Tensor Require(const std::string& name, at::IntArrayRef expected_shape = {}) const;
  // Like Require but in float32 regardless of the reader's dtype (fp32 islands).
  at::Tensor RequireFloat(const std::string& name, at::IntArrayRef expected_shape = {}) const;
  std::optional<at::Tensor> Optional(const std::string& name) const;
  WeightReader Sub(const std::string& prefix) const { return WeightReader(store_.WithPrefix(prefix), options_); }
  const at::TensorOptions& options() const { return options_; }
  const WeightStore& store() const { return store_; }

 private:
  at::Tensor Load(const std::string& name, at::IntArrayRef expected_shape, at::TensorOptions options) const;
  WeightStore store_;
  at::TensorOptions options_;
};

// Runs a loader that may throw MissingWeightError/CheckFailure and returns its result or a Status.
template <typename T, typename Fn>
Result<T> LoadModelWeights(const std::string& what, Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return InvalidArgument("loading " + what + ": " + e.what());
  }
}

}  // namespace stas

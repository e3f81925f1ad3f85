// libFuzzer target for the safetensors header parser:
//   cmake -DSTAS_BUILD_FUZZERS=ON -DCMAKE_CXX_COMPILER=clang++ ... && ./safetensors_header_fuzz
#include <cstddef>
#include <cstdint>

#include "common/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto header = stas::ParseSafetensorsHeader(data, size);
  if (header.ok()) {
    for (const auto& e : header->entries)
      if (header->data_offset + e.end > size) __builtin_trap();
  }
  return 0;
}

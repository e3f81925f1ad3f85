// The parts of a SentencePiece `spiece.model` (a serialized sentencepiece.ModelProto) that encoding
// needs, read and written with our own wire-format code (models/text/protobuf_wire.h), plus the
// "precompiled charsmap" normalizer (a darts-clone double-array trie of normalization rules).
//
// ModelProto field numbers used (proto2, see sentencepiece_model.proto):
//   pieces = 1 (repeated SentencePiece {piece = 1, score = 2 (float), type = 3}),
//   trainer_spec = 2, normalizer_spec = 3; other fields (self_test_data, denormalizer_spec, extensions)
//   are skipped. Unknown fields inside the known messages are skipped too, as protobuf does.
// Parsing checks the wire format only; the tokenizer (tokenizer.h) checks the vocabulary's semantics.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace stas::models::text {

enum class PieceType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct SentencePieceEntry {
  std::string piece;
  float score = 0.0f;
  PieceType type = PieceType::kNormal;
};

// TrainerSpec fields that matter at encode time (defaults as in sentencepiece_model.proto).
struct TrainerSpec {
  int32_t model_type = 1;  // 1 unigram, 2 BPE, 3 word, 4 char
  int32_t vocab_size = 8000;
  bool treat_whitespace_as_suffix = false;
  bool byte_fallback = false;
  int32_t unk_id = 0;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  int32_t pad_id = -1;
  std::string unk_piece = "<unk>";
  std::string bos_piece = "<s>";
  std::string eos_piece = "</s>";
  std::string pad_piece = "<pad>";
};

struct NormalizerSpec {
  std::string name;                  // "nmt_nfkc", "identity", ... (informational)
  std::string precompiled_charsmap;  // empty = no character normalization
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

struct SentencePieceModel {
  std::vector<SentencePieceEntry> pieces;  // id = index
  TrainerSpec trainer_spec;
  NormalizerSpec normalizer_spec;

  // InvalidArgument (naming the byte offset and field) for anything that is not a well-formed ModelProto.
  static Result<SentencePieceModel> Parse(std::string_view bytes);
  // Reads and parses a file; NotFound when it is missing.
  static Result<SentencePieceModel> Load(const std::string& path);
  // The ModelProto bytes for this model (fields above only). Parse(Serialize()) round-trips.
  std::string Serialize() const;
};

// The normalization rules of NormalizerSpec.precompiled_charsmap:
//   <u32 little-endian trie size N><N bytes: darts-clone double array (u32 units)><NUL-separated outputs>
// The trie maps a UTF-8 byte sequence to the offset of its replacement in the outputs blob.
// Lookups are bounds-checked: a corrupt map can yield no match, never an out-of-range read.
class PrecompiledCharsMap {
 public:
  PrecompiledCharsMap() = default;
  static Result<PrecompiledCharsMap> Parse(std::string_view blob);
  bool empty() const { return units_.empty(); }
  // The longest rule whose source is a prefix of `input`: {replacement, source length in bytes};
  // {"", 0} when no rule matches.
  std::pair<std::string_view, size_t> LongestMatch(std::string_view input) const;

 private:
  std::vector<uint32_t> units_;
  std::string outputs_;
};

}  // namespace stas::models::text

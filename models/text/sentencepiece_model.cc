#include "models/text/sentencepiece_model.h"

#include <cstring>

#include "common/fs.h"
#include "models/text/protobuf_wire.h"

namespace stas::models::text {

namespace {

// Field numbers (sentencepiece_model.proto).
constexpr uint32_t kModelPieces = 1, kModelTrainerSpec = 2, kModelNormalizerSpec = 3;
constexpr uint32_t kPiecePiece = 1, kPieceScore = 2, kPieceType = 3;
constexpr uint32_t kTrainerModelType = 3, kTrainerVocabSize = 4, kTrainerTreatWhitespaceAsSuffix = 24,
                   kTrainerByteFallback = 35, kTrainerUnkId = 40, kTrainerBosId = 41, kTrainerEosId = 42,
                   kTrainerPadId = 43, kTrainerUnkPiece = 45, kTrainerBosPiece = 46, kTrainerEosPiece = 47,
                   kTrainerPadPiece = 48;
constexpr uint32_t kNormName = 1, kNormCharsmap = 2, kNormAddDummyPrefix = 3, kNormRemoveExtraWhitespaces = 4,
                   kNormEscapeWhitespaces = 5;

template <typename T>
Status Assign(const Result<T>& r, T* out, const char* what) {
  if (!r.ok()) return r.status().WithContext(what);
  *out = r.value();
  return Status::Ok();
}

Status AssignString(const pb::Field& f, std::string* out, const char* what) {
  auto r = f.AsBytes();
  if (!r.ok()) return r.status().WithContext(what);
  out->assign(r->data(), r->size());
  return Status::Ok();
}

Result<SentencePieceEntry> ParsePiece(std::string_view bytes, size_t index) {
  SentencePieceEntry entry;
  pb::Reader reader(bytes);
  const std::string where = "piece #" + std::to_string(index);
  while (!reader.done()) {
    auto f = reader.Next();
    if (!f.ok()) return f.status().WithContext(where);
    switch (f->number) {
      case kPiecePiece: STAS_RETURN_IF_ERROR(AssignString(*f, &entry.piece, where.c_str())); break;
      case kPieceScore: STAS_RETURN_IF_ERROR(Assign(f->AsFloat(), &entry.score, where.c_str())); break;
      case kPieceType: {
        int32_t type = 0;
        STAS_RETURN_IF_ERROR(Assign(f->AsInt32(), &type, where.c_str()));
        if (type < 1 || type > 6) return InvalidArgument(where + ": unknown piece type " + std::to_string(type));
        entry.type = static_cast<PieceType>(type);
        break;
      }
      default: break;  // extensions and future fields
    }
  }
  return entry;
}

Status ParseTrainerSpec(std::string_view bytes, TrainerSpec* spec) {
  pb::Reader reader(bytes);
  const char* where = "trainer_spec";
  while (!reader.done()) {
    auto f = reader.Next();
    if (!f.ok()) return f.status().WithContext(where);
    switch (f->number) {
      case kTrainerModelType: STAS_RETURN_IF_ERROR(Assign(f->AsInt32(), &spec->model_type, where)); break;
      case kTrainerVocabSize: STAS_RETURN_IF_ERROR(Assign(f->AsInt32(), &spec->vocab_size, where)); break;
      case kTrainerTreatWhitespaceAsSuffix:
        STAS_RETURN_IF_ERROR(Assign(f->AsBool(), &spec->treat_whitespace_as_suffix, where));
        break;
      case kTrainerByteFallback: STAS_RETURN_IF_ERROR(Assign(f->AsBool(), &spec->byte_fallback, where)); break;
      case kTrainerUnkId: STAS_RETURN_IF_ERROR(Assign(f->AsInt32(), &spec->unk_id, where)); break;
      case kTrainerBosId: STAS_RETURN_IF_ERROR(Assign(f->AsInt32(), &spec->bos_id, where)); break;
      case kTrainerEosId: STAS_RETURN_IF_ERROR(Assign(f->AsInt32(), &spec->eos_id, where)); break;
      case kTrainerPadId: STAS_RETURN_IF_ERROR(Assign(f->AsInt32(), &spec->pad_id, where)); break;
      case kTrainerUnkPiece: STAS_RETURN_IF_ERROR(AssignString(*f, &spec->unk_piece, where)); break;
      case kTrainerBosPiece: STAS_RETURN_IF_ERROR(AssignString(*f, &spec->bos_piece, where)); break;
      case kTrainerEosPiece: STAS_RETURN_IF_ERROR(AssignString(*f, &spec->eos_piece, where)); break;
      case kTrainerPadPiece: STAS_RETURN_IF_ERROR(AssignString(*f, &spec->pad_piece, where)); break;
      default: break;  // training-only options
    }
  }
  return Status::Ok();
}

Status ParseNormalizerSpec(std::string_view bytes, NormalizerSpec* spec) {
  pb::Reader reader(bytes);
  const char* where = "normalizer_spec";
  while (!reader.done()) {
    auto f = reader.Next();
    if (!f.ok()) return f.status().WithContext(where);
    switch (f->number) {
      case kNormName: STAS_RETURN_IF_ERROR(AssignString(*f, &spec->name, where)); break;
      case kNormCharsmap: STAS_RETURN_IF_ERROR(AssignString(*f, &spec->precompiled_charsmap, where)); break;
      case kNormAddDummyPrefix: STAS_RETURN_IF_ERROR(Assign(f->AsBool(), &spec->add_dummy_prefix, where)); break;
      case kNormRemoveExtraWhitespaces:
        STAS_RETURN_IF_ERROR(Assign(f->AsBool(), &spec->remove_extra_whitespaces, where));
        break;
      case kNormEscapeWhitespaces:
        STAS_RETURN_IF_ERROR(Assign(f->AsBool(), &spec->escape_whitespaces, where));
        break;
      default: break;  // normalization_rule_tsv and future fields
    }
  }
  return Status::Ok();
}

}  // namespace

Result<SentencePieceModel> SentencePieceModel::Parse(std::string_view bytes) {
  if (bytes.empty()) return InvalidArgument("sentencepiece model is empty");
  SentencePieceModel model;
  pb::Reader reader(bytes);
  while (!reader.done()) {
    auto f = reader.Next();
    if (!f.ok()) return f.status().WithContext("sentencepiece ModelProto");
    switch (f->number) {
      case kModelPieces: {
        auto payload = f->AsBytes();
        if (!payload.ok()) return payload.status().WithContext("sentencepiece ModelProto pieces");
        STAS_ASSIGN_OR_RETURN(SentencePieceEntry entry, ParsePiece(*payload, model.pieces.size()));
        model.pieces.push_back(std::move(entry));
        break;
      }
      case kModelTrainerSpec: {
        auto payload = f->AsBytes();
        if (!payload.ok()) return payload.status().WithContext("sentencepiece ModelProto trainer_spec");
        STAS_RETURN_IF_ERROR(ParseTrainerSpec(*payload, &model.trainer_spec));
        break;
      }
      case kModelNormalizerSpec: {
        auto payload = f->AsBytes();
        if (!payload.ok()) return payload.status().WithContext("sentencepiece ModelProto normalizer_spec");
        STAS_RETURN_IF_ERROR(ParseNormalizerSpec(*payload, &model.normalizer_spec));
        break;
      }
      default: break;
    }
  }
  if (model.pieces.empty()) return InvalidArgument("sentencepiece model has no pieces (not a spiece.model?)");
  return model;
}

Result<SentencePieceModel> SentencePieceModel::Load(const std::string& path) {
  STAS_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  auto model = Parse(bytes);
  if (!model.ok()) return model.status().WithContext(path);
  return model;
}

std::string SentencePieceModel::Serialize() const {
  pb::Writer out;
  for (const auto& p : pieces) {
    pb::Writer piece;
    piece.Bytes(kPiecePiece, p.piece);
    piece.Float(kPieceScore, p.score);
    piece.Int32(kPieceType, static_cast<int32_t>(p.type));
    out.Bytes(kModelPieces, piece.data());
  }
  pb::Writer trainer;
  trainer.Int32(kTrainerModelType, trainer_spec.model_type);
  trainer.Int32(kTrainerVocabSize, trainer_spec.vocab_size);
  trainer.Bool(kTrainerTreatWhitespaceAsSuffix, trainer_spec.treat_whitespace_as_suffix);
  trainer.Bool(kTrainerByteFallback, trainer_spec.byte_fallback);
  trainer.Int32(kTrainerUnkId, trainer_spec.unk_id);
  trainer.Int32(kTrainerBosId, trainer_spec.bos_id);
  trainer.Int32(kTrainerEosId, trainer_spec.eos_id);
  trainer.Int32(kTrainerPadId, trainer_spec.pad_id);
  trainer.Bytes(kTrainerUnkPiece, trainer_spec.unk_piece);
  trainer.Bytes(kTrainerBosPiece, trainer_spec.bos_piece);
  trainer.Bytes(kTrainerEosPiece, trainer_spec.eos_piece);
  trainer.Bytes(kTrainerPadPiece, trainer_spec.pad_piece);
  out.Bytes(kModelTrainerSpec, trainer.data());
  pb::Writer norm;
  norm.Bytes(kNormName, normalizer_spec.name);
  if (!normalizer_spec.precompiled_charsmap.empty()) norm.Bytes(kNormCharsmap, normalizer_spec.precompiled_charsmap);
  norm.Bool(kNormAddDummyPrefix, normalizer_spec.add_dummy_prefix);
  norm.Bool(kNormRemoveExtraWhitespaces, normalizer_spec.remove_extra_whitespaces);
  norm.Bool(kNormEscapeWhitespaces, normalizer_spec.escape_whitespaces);
  out.Bytes(kModelNormalizerSpec, norm.data());
  return out.data();
}

// --- precompiled charsmap ---------------------------------------------------------------------------

namespace {
// darts-clone unit layout: bits 0-7 label, bit 8 has_leaf, bit 9 offset scale, bits 10-31 offset;
// a leaf unit holds its value in bits 0-30 and has bit 31 set (so its label never matches a byte).
inline bool UnitHasLeaf(uint32_t u) { return (u >> 8) & 1; }
inline uint32_t UnitValue(uint32_t u) { return u & ((1u << 31) - 1); }
inline uint32_t UnitLabel(uint32_t u) { return u & ((1u << 31) | 0xffu); }
inline uint32_t UnitOffset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
}  // namespace

Result<PrecompiledCharsMap> PrecompiledCharsMap::Parse(std::string_view blob) {
  if (blob.size() <= 4) return InvalidArgument("precompiled charsmap is truncated (" + std::to_string(blob.size()) + " bytes)");
  uint32_t trie_size = 0;
  for (int i = 0; i < 4; ++i) trie_size |= static_cast<uint32_t>(static_cast<uint8_t>(blob[i])) << (8 * i);
  if (trie_size > blob.size() - 4)
    return InvalidArgument("precompiled charsmap: trie size " + std::to_string(trie_size) + " exceeds the blob (" +
                           std::to_string(blob.size()) + " bytes)");
  if (trie_size == 0 || trie_size % 4 != 0)
    return InvalidArgument("precompiled charsmap: trie size " + std::to_string(trie_size) +
                           " is not a positive multiple of 4");
  PrecompiledCharsMap map;
  map.units_.resize(trie_size / 4);
  for (size_t i = 0; i < map.units_.size(); ++i) {
    const char* p = blob.data() + 4 + 4 * i;
    map.units_[i] = static_cast<uint32_t>(static_cast<uint8_t>(p[0])) |
                    static_cast<uint32_t>(static_cast<uint8_t>(p[1])) << 8 |
                    static_cast<uint32_t>(static_cast<uint8_t>(p[2])) << 16 |
                    static_cast<uint32_t>(static_cast<uint8_t>(p[3])) << 24;
  }
  map.outputs_.assign(blob.substr(4 + trie_size));
  return map;
}

std::pair<std::string_view, size_t> PrecompiledCharsMap::LongestMatch(std::string_view input) const {
  std::pair<std::string_view, size_t> best{std::string_view(), 0};
  if (units_.empty()) return best;
  // darts-clone common-prefix search: follow one byte at a time; a unit with has_leaf marks the end
  // of a rule whose value (offset into outputs_) sits in the unit at the child base.
  size_t node = UnitOffset(units_[0]);
  for (size_t i = 0; i < input.size(); ++i) {
    const uint8_t byte = static_cast<uint8_t>(input[i]);
    node ^= byte;
    if (node >= units_.size()) break;
    const uint32_t unit = units_[node];
    if (UnitLabel(unit) != byte) break;
    node ^= UnitOffset(unit);
    if (node >= units_.size()) break;
    if (UnitHasLeaf(unit)) {
      const uint32_t value = UnitValue(units_[node]);
      if (value < outputs_.size()) {
        const size_t end = outputs_.find('\0', value);
        if (end != std::string::npos) best = {std::string_view(outputs_).substr(value, end - value), i + 1};
      }
    }
  }
  return best;
}

}  // namespace stas::models::text

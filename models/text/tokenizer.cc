#include "models/text/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "common/check.h"

namespace stas::models::text {

namespace {

constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";  // U+2581, sentencepiece's escaped space
constexpr std::string_view kReplacementChar = "\xef\xbf\xbd";  // U+FFFD
// sentencepiece scores an unknown character min_score - kUnkPenalty.
constexpr float kUnkPenalty = 10.0f;

// Byte length of the UTF-8 character led by `c`, from its lead byte alone (sentencepiece's OneCharLen).
inline size_t OneCharLen(char c) { return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[(static_cast<uint8_t>(c)) >> 4]; }
inline bool IsTrailByte(char c) { return (static_cast<uint8_t>(c) & 0xc0) == 0x80; }
inline bool IsValidCodepoint(uint32_t c) { return c < 0xd800 || (c >= 0xe000 && c <= 0x10ffff); }

// Decodes one character; false (with *length = 1) for malformed UTF-8 (overlong forms, surrogates,
// truncated sequences). A literal U+FFFD counts as valid, as in sentencepiece.
bool DecodeUtf8(std::string_view s, size_t* length, uint32_t* codepoint) {
  const auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(s[i])); };
  *length = 1;
  if (b(0) < 0x80) {
    *codepoint = b(0);
    return true;
  }
  if (s.size() >= 2 && (b(0) & 0xe0) == 0xc0) {
    const uint32_t cp = ((b(0) & 0x1f) << 6) | (b(1) & 0x3f);
    if (IsTrailByte(s[1]) && cp >= 0x80 && IsValidCodepoint(cp)) {
      *length = 2;
      *codepoint = cp;
      return true;
    }
  } else if (s.size() >= 3 && (b(0) & 0xf0) == 0xe0) {
    const uint32_t cp = ((b(0) & 0x0f) << 12) | ((b(1) & 0x3f) << 6) | (b(2) & 0x3f);
    if (IsTrailByte(s[1]) && IsTrailByte(s[2]) && cp >= 0x800 && IsValidCodepoint(cp)) {
      *length = 3;
      *codepoint = cp;
      return true;
    }
  } else if (s.size() >= 4 && (b(0) & 0xf8) == 0xf0) {
    const uint32_t cp = ((b(0) & 0x07) << 18) | ((b(1) & 0x3f) << 12) | ((b(2) & 0x3f) << 6) | (b(3) & 0x3f);
    if (IsTrailByte(s[1]) && IsTrailByte(s[2]) && IsTrailByte(s[3]) && cp >= 0x10000 && IsValidCodepoint(cp)) {
      *length = 4;
      *codepoint = cp;
      return true;
    }
  }
  *codepoint = 0xfffd;
  return false;
}

void AppendUtf8(uint32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3f)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3f)));
  }
}

std::string ByteToPiece(uint8_t byte) {
  static const char kHex[] = "0123456789ABCDEF";
  return std::string("<0x") + kHex[byte >> 4] + kHex[byte & 15] + ">";
}

bool IsInVocabularyTrie(PieceType t) {
  return t == PieceType::kNormal || t == PieceType::kUserDefined || t == PieceType::kUnused;
}

// Finds the pieces that are prefixes of a text by narrowing a lexicographically sorted range one byte
// at a time: memory-light (one index per piece) and O(log V) per byte even for 256k-piece vocabularies.
class PrefixIndex {
 public:
  template <typename Keep>
  void Build(const std::vector<SentencePieceEntry>* pieces, Keep&& keep) {
    pieces_ = pieces;
    sorted_.clear();
    for (size_t i = 0; i < pieces->size(); ++i)
      if (keep((*pieces)[i])) sorted_.push_back(static_cast<int32_t>(i));
    std::sort(sorted_.begin(), sorted_.end(),
              [&](int32_t a, int32_t b) { return (*pieces)[a].piece < (*pieces)[b].piece; });
  }
  bool empty() const { return sorted_.empty(); }

  // Calls fn(length, id) for every piece equal to text[0, length), shortest first.
  template <typename Fn>
  void ForEachPrefix(std::string_view text, Fn&& fn) const {
    size_t lo = 0, hi = sorted_.size();
    for (size_t depth = 0; depth < text.size() && lo < hi; ++depth) {
      const uint8_t c = static_cast<uint8_t>(text[depth]);
      // Every piece in [lo, hi) starts with text[0, depth); a piece of exactly that length sorts first.
      if (Piece(lo).size() == depth) ++lo;
      const auto byte_at = [&](size_t k) { return static_cast<uint8_t>(Piece(k)[depth]); };
      size_t a = lo, b = hi;
      while (a < b) {  // first with byte >= c
        const size_t m = (a + b) / 2;
        if (byte_at(m) < c) a = m + 1; else b = m;
      }
      lo = a;
      b = hi;
      while (a < b) {  // first with byte > c
        const size_t m = (a + b) / 2;
        if (byte_at(m) <= c) a = m + 1; else b = m;
      }
      hi = a;
      if (lo < hi && Piece(lo).size() == depth + 1) fn(depth + 1, sorted_[lo]);
    }
  }

 private:
  const std::string& Piece(size_t k) const { return (*pieces_)[sorted_[k]].piece; }
  const std::vector<SentencePieceEntry>* pieces_ = nullptr;
  std::vector<int32_t> sorted_;
};

}  // namespace

struct SentencePieceTokenizer::Impl {
  SentencePieceModel model;
  PrecompiledCharsMap charsmap;
  PrefixIndex vocabulary;    // NORMAL, USER_DEFINED and UNUSED pieces: what the Viterbi search may match
  PrefixIndex user_defined;  // kept verbatim by the normalizer
  std::unordered_map<std::string, int32_t> normal_ids;    // NORMAL, USER_DEFINED, UNUSED
  std::unordered_map<std::string, int32_t> reserved_ids;  // UNKNOWN, CONTROL, BYTE
  std::array<int32_t, 256> byte_ids{};
  int32_t unk_id = -1;
  int32_t eos_id = -1;
  int32_t pad_id = -1;
  float min_score = 0;
  float max_score = 0;

  int32_t PieceToId(std::string_view piece) const {
    const std::string key(piece);
    if (auto it = reserved_ids.find(key); it != reserved_ids.end()) return it->second;
    if (auto it = normal_ids.find(key); it != normal_ids.end()) return it->second;
    return unk_id;
  }

  // One normalization step at the start of `input`: {output, input bytes consumed}, consumed >= 1.
  std::pair<std::string_view, size_t> NormalizePrefix(std::string_view input) const {
    if (!user_defined.empty()) {
      size_t longest = 0;
      user_defined.ForEachPrefix(input, [&](size_t length, int32_t) { longest = length; });
      if (longest > 0) return {input.substr(0, longest), longest};
    }
    auto rule = charsmap.LongestMatch(input);
    if (rule.second > 0) return rule;
    size_t length;
    uint32_t codepoint;
    if (!DecodeUtf8(input, &length, &codepoint)) return {kReplacementChar, 1};  // consume one bad byte
    return {input.substr(0, length), length};
  }

  std::string Normalize(std::string_view input) const;
  // Best segmentation of normalized text: (piece text, id) pairs.
  std::vector<std::pair<std::string_view, int32_t>> Viterbi(std::string_view normalized) const;
  // Final pieces as sentencepiece reports them (runs of unknowns merged, or byte fallback).
  std::vector<std::pair<std::string, int32_t>> EncodePieces(std::string_view text) const;
};

std::string SentencePieceTokenizer::Impl::Normalize(std::string_view input) const {
  const NormalizerSpec& spec = model.normalizer_spec;
  const bool as_suffix = model.trainer_spec.treat_whitespace_as_suffix;
  std::string out;
  if (spec.remove_extra_whitespaces) {
    while (!input.empty()) {
      auto step = NormalizePrefix(input);
      if (step.first != " ") break;
      input.remove_prefix(step.second);
    }
  }
  if (input.empty()) return out;
  out.reserve(input.size() * 3);
  const std::string_view space = spec.escape_whitespaces ? kSpaceSymbol : std::string_view(" ");
  if (!as_suffix && spec.add_dummy_prefix) out.append(space);
  bool previous_was_space = spec.remove_extra_whitespaces;
  while (!input.empty()) {
    auto [piece, consumed] = NormalizePrefix(input);
    // Drops spaces that would follow a space (remove_extra_whitespaces).
    while (previous_was_space && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
    if (!piece.empty()) {
      for (char c : piece) {
        if (c == ' ' && spec.escape_whitespaces) out.append(kSpaceSymbol);
        else out.push_back(c);
      }
      previous_was_space = piece.back() == ' ';
    }
    input.remove_prefix(consumed);
    if (!spec.remove_extra_whitespaces) previous_was_space = false;
  }
  if (spec.remove_extra_whitespaces) {
    while (out.size() >= space.size() && out.compare(out.size() - space.size(), space.size(), space) == 0)
      out.resize(out.size() - space.size());
  }
  if (as_suffix && spec.add_dummy_prefix) out.append(space);
  return out;
}

std::vector<std::pair<std::string_view, int32_t>> SentencePieceTokenizer::Impl::Viterbi(
    std::string_view text) const {
  // best[i]: the best segmentation of text[0, i); filled left to right over character starts. Scores are
  // accumulated in float and ties keep the first candidate, exactly as sentencepiece's optimized encoder.
  struct Best {
    int32_t id = -1;
    float score = 0;
    int64_t starts_at = -1;
  };
  const size_t size = text.size();
  std::vector<Best> best(size + 1);
  const float unk_score = min_score - kUnkPenalty;
  size_t start = 0;
  while (start < size) {
    const float score_here = best[start].score;
    const size_t char_length = std::min(OneCharLen(text[start]), size - start);
    bool single_char_piece = false;
    vocabulary.ForEachPrefix(text.substr(start), [&](size_t length, int32_t id) {
      const SentencePieceEntry& entry = model.pieces[id];
      if (entry.type == PieceType::kUnused) return;
      // User-defined pieces get a bonus so they always win, as in sentencepiece.
      const double piece_score = entry.type == PieceType::kUserDefined
                                     ? static_cast<double>(length * max_score) - 0.1
                                     : static_cast<double>(entry.score);
      // (sentencepiece adds and compares in double here, then stores float)
      const double candidate = piece_score + score_here;
      Best& target = best[start + length];
      if (target.starts_at == -1 || candidate > target.score)
        target = {id, static_cast<float>(candidate), static_cast<int64_t>(start)};
      if (length == char_length) single_char_piece = true;
    });
    if (!single_char_piece) {
      const float candidate = unk_score + score_here;
      Best& target = best[start + char_length];
      if (target.starts_at == -1 || candidate > target.score)
        target = {unk_id, candidate, static_cast<int64_t>(start)};
    }
    start += char_length;
  }
  std::vector<std::pair<std::string_view, int32_t>> pieces;
  for (size_t end = size; end > 0;) {
    const Best& node = best[end];
    STAS_CHECK(node.starts_at >= 0 && static_cast<size_t>(node.starts_at) < end) << "broken Viterbi path at " << end;
    pieces.emplace_back(text.substr(node.starts_at, end - node.starts_at), node.id);
    end = static_cast<size_t>(node.starts_at);
  }
  std::reverse(pieces.begin(), pieces.end());
  return pieces;
}

std::vector<std::pair<std::string, int32_t>> SentencePieceTokenizer::Impl::EncodePieces(std::string_view text) const {
  const std::string normalized = Normalize(text);
  std::vector<std::pair<std::string, int32_t>> out;
  bool previous_unknown = false;
  for (const auto& [piece, id] : Viterbi(normalized)) {
    const bool unknown = id == unk_id;
    if (unknown && model.trainer_spec.byte_fallback) {
      for (char c : piece) {
        const uint8_t byte = static_cast<uint8_t>(c);
        out.emplace_back(ByteToPiece(byte), byte_ids[byte]);
      }
    } else if (unknown && previous_unknown) {
      out.back().first.append(piece);  // one unk for a run of unknown characters
    } else {
      out.emplace_back(std::string(piece), id);
    }
    previous_unknown = unknown;
  }
  return out;
}

Result<SentencePieceTokenizer> SentencePieceTokenizer::FromModel(SentencePieceModel model) {
  if (model.trainer_spec.model_type != 1) {
    static const char* kNames[] = {"?", "unigram", "BPE", "word", "char"};
    const int32_t t = model.trainer_spec.model_type;
    return NotImplemented(std::string("sentencepiece model type ") + (t >= 1 && t <= 4 ? kNames[t] : "?") + " (" +
                          std::to_string(t) + "): only unigram models (T5, UMT5) are supported");
  }
  if (model.pieces.empty()) return InvalidArgument("sentencepiece model has no pieces");
  if (model.pieces.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    return InvalidArgument("sentencepiece model has too many pieces");
  auto impl = std::make_shared<Impl>();
  impl->model = std::move(model);
  Impl& m = *impl;
  m.byte_ids.fill(-1);
  std::array<bool, 256> byte_found{};
  m.min_score = std::numeric_limits<float>::max();
  // sentencepiece starts the maximum at FLT_MIN (the smallest positive float), not at -FLT_MAX; the
  // user-defined bonus depends on it, so we keep that.
  m.max_score = std::numeric_limits<float>::min();
  for (size_t i = 0; i < m.model.pieces.size(); ++i) {
    const SentencePieceEntry& p = m.model.pieces[i];
    const int32_t id = static_cast<int32_t>(i);
    if (p.piece.empty()) return InvalidArgument("sentencepiece piece #" + std::to_string(i) + " is empty");
    auto& ids = IsInVocabularyTrie(p.type) ? m.normal_ids : m.reserved_ids;
    if (!ids.emplace(p.piece, id).second)
      return InvalidArgument("sentencepiece piece '" + p.piece + "' is defined twice (ids " +
                             std::to_string(ids[p.piece]) + " and " + std::to_string(i) + ")");
    if (p.type == PieceType::kUnknown) {
      if (m.unk_id >= 0)
        return InvalidArgument("sentencepiece model defines two unknown pieces (ids " + std::to_string(m.unk_id) +
                               " and " + std::to_string(i) + ")");
      m.unk_id = id;
    }
    if (p.type == PieceType::kByte) {
      if (!m.model.trainer_spec.byte_fallback)
        return InvalidArgument("sentencepiece byte piece '" + p.piece + "' found although byte_fallback is off");
      int byte = -1;
      for (int b = 0; b < 256 && byte < 0; ++b)
        if (ByteToPiece(static_cast<uint8_t>(b)) == p.piece) byte = b;
      if (byte < 0) return InvalidArgument("sentencepiece byte piece '" + p.piece + "' is not of the form <0xNN>");
      byte_found[byte] = true;
      m.byte_ids[byte] = id;
    }
    if (p.type == PieceType::kNormal) {
      m.min_score = std::min(m.min_score, p.score);
      m.max_score = std::max(m.max_score, p.score);
    }
  }
  if (m.unk_id < 0) return InvalidArgument("sentencepiece model defines no unknown piece");
  if (m.model.trainer_spec.byte_fallback && std::find(byte_found.begin(), byte_found.end(), false) != byte_found.end())
    return InvalidArgument("sentencepiece model has byte_fallback on but not all 256 <0xNN> pieces");
  if (!m.model.normalizer_spec.precompiled_charsmap.empty()) {
    auto charsmap = PrecompiledCharsMap::Parse(m.model.normalizer_spec.precompiled_charsmap);
    if (!charsmap.ok()) return charsmap.status();
    m.charsmap = std::move(charsmap).value();
  }
  m.vocabulary.Build(&m.model.pieces, [](const SentencePieceEntry& p) { return IsInVocabularyTrie(p.type); });
  m.user_defined.Build(&m.model.pieces, [](const SentencePieceEntry& p) { return p.type == PieceType::kUserDefined; });
  // EOS / pad by their piece names, as sentencepiece resolves eos_id() and pad_id().
  const auto control_id = [&](const std::string& piece) {
    auto it = m.reserved_ids.find(piece);
    return it == m.reserved_ids.end() || m.model.pieces[it->second].type != PieceType::kControl ? -1 : it->second;
  };
  m.eos_id = control_id(m.model.trainer_spec.eos_piece);
  m.pad_id = control_id(m.model.trainer_spec.pad_piece);
  SentencePieceTokenizer tokenizer;
  tokenizer.impl_ = std::move(impl);
  return tokenizer;
}

Result<SentencePieceTokenizer> SentencePieceTokenizer::Load(const std::string& path) {
  STAS_ASSIGN_OR_RETURN(SentencePieceModel model, SentencePieceModel::Load(path));
  auto tokenizer = FromModel(std::move(model));
  if (!tokenizer.ok()) return tokenizer.status().WithContext(path);
  return tokenizer;
}

std::string SentencePieceTokenizer::Normalize(std::string_view text) const { return impl_->Normalize(text); }

std::vector<int32_t> SentencePieceTokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  for (const auto& [piece, id] : impl_->EncodePieces(text)) ids.push_back(id);
  return ids;
}

std::vector<std::string> SentencePieceTokenizer::EncodeAsPieces(std::string_view text) const {
  std::vector<std::string> pieces;
  for (auto& [piece, id] : impl_->EncodePieces(text)) pieces.push_back(std::move(piece));
  return pieces;
}

int32_t SentencePieceTokenizer::vocab_size() const { return static_cast<int32_t>(impl_->model.pieces.size()); }
int32_t SentencePieceTokenizer::PieceToId(std::string_view piece) const { return impl_->PieceToId(piece); }
const std::string& SentencePieceTokenizer::IdToPiece(int32_t id) const {
  STAS_CHECK(id >= 0 && id < vocab_size()) << "token id " << id << " outside the vocabulary of " << vocab_size();
  return impl_->model.pieces[id].piece;
}
int32_t SentencePieceTokenizer::unk_id() const { return impl_->unk_id; }
int32_t SentencePieceTokenizer::eos_id() const { return impl_->eos_id; }
int32_t SentencePieceTokenizer::pad_id() const { return impl_->pad_id; }
const SentencePieceModel& SentencePieceTokenizer::model() const { return impl_->model; }

// --- prompt cleaning -----------------------------------------------------------------------------------

namespace {

struct NamedEntity {
  const char* name;
  const char* value;  // UTF-8
  bool legacy;        // also recognised without the trailing ';' (HTML's legacy Latin-1 names)
};

// Common HTML5 named character references (values from the HTML5 entity table). Sorted by name.
const NamedEntity kNamedEntities[] = {
    {"AElig", "\xc3\x86", true},
    {"AMP", "\x26", true},
    {"Aacute", "\xc3\x81", true},
    {"Acirc", "\xc3\x82", true},
    {"Agrave", "\xc3\x80", true},
    {"Alpha", "\xce\x91", false},
    {"Aring", "\xc3\x85", true},
    {"Atilde", "\xc3\x83", true},
    {"Auml", "\xc3\x84", true},
    {"Beta", "\xce\x92", false},
    {"COPY", "\xc2\xa9", true},
    {"Ccedil", "\xc3\x87", true},
    {"Chi", "\xce\xa7", false},
    {"Dagger", "\xe2\x80\xa1", false},
    {"Delta", "\xce\x94", false},
    {"ETH", "\xc3\x90", true},
    {"Eacute", "\xc3\x89", true},
    {"Ecirc", "\xc3\x8a", true},
    {"Egrave", "\xc3\x88", true},
    {"Epsilon", "\xce\x95", false},
    {"Eta", "\xce\x97", false},
    {"Euml", "\xc3\x8b", true},
    {"GT", "\x3e", true},
    {"Gamma", "\xce\x93", false},
    {"Iacute", "\xc3\x8d", true},
    {"Icirc", "\xc3\x8e", true},
    {"Igrave", "\xc3\x8c", true},
    {"Iota", "\xce\x99", false},
    {"Iuml", "\xc3\x8f", true},
    {"Kappa", "\xce\x9a", false},
    {"LT", "\x3c", true},
    {"Lambda", "\xce\x9b", false},
    {"Mu", "\xce\x9c", false},
    {"NewLine", "\x0a", false},
    {"Ntilde", "\xc3\x91", true},
    {"Nu", "\xce\x9d", false},
    {"OElig", "\xc5\x92", false},
    {"Oacute", "\xc3\x93", true},
    {"Ocirc", "\xc3\x94", true},
    {"Ograve", "\xc3\x92", true},
    {"Omega", "\xce\xa9", false},
    {"Omicron", "\xce\x9f", false},
    {"Oslash", "\xc3\x98", true},
    {"Otilde", "\xc3\x95", true},
    {"Ouml", "\xc3\x96", true},
    {"Phi", "\xce\xa6", false},
    {"Pi", "\xce\xa0", false},
    {"Prime", "\xe2\x80\xb3", false},
    {"Psi", "\xce\xa8", false},
    {"QUOT", "\x22", true},
    {"REG", "\xc2\xae", true},
    {"Rho", "\xce\xa1", false},
    {"Scaron", "\xc5\xa0", false},
    {"Sigma", "\xce\xa3", false},
    {"THORN", "\xc3\x9e", true},
    {"Tab", "\x09", false},
    {"Tau", "\xce\xa4", false},
    {"Theta", "\xce\x98", false},
    {"Uacute", "\xc3\x9a", true},
    {"Ucirc", "\xc3\x9b", true},
    {"Ugrave", "\xc3\x99", true},
    {"Upsilon", "\xce\xa5", false},
    {"Uuml", "\xc3\x9c", true},
    {"Xi", "\xce\x9e", false},
    {"Yacute", "\xc3\x9d", true},
    {"Yuml", "\xc5\xb8", false},
    {"Zeta", "\xce\x96", false},
    {"aacute", "\xc3\xa1", true},
    {"acirc", "\xc3\xa2", true},
    {"acute", "\xc2\xb4", true},
    {"aelig", "\xc3\xa6", true},
    {"agrave", "\xc3\xa0", true},
    {"alefsym", "\xe2\x84\xb5", false},
    {"alpha", "\xce\xb1", false},
    {"amp", "\x26", true},
    {"and", "\xe2\x88\xa7", false},
    {"apos", "\x27", false},
    {"aring", "\xc3\xa5", true},
    {"asymp", "\xe2\x89\x88", false},
    {"atilde", "\xc3\xa3", true},
    {"auml", "\xc3\xa4", true},
    {"bdquo", "\xe2\x80\x9e", false},
    {"beta", "\xce\xb2", false},
    {"brvbar", "\xc2\xa6", true},
    {"bull", "\xe2\x80\xa2", false},
    {"cap", "\xe2\x88\xa9", false},
    {"ccedil", "\xc3\xa7", true},
    {"cedil", "\xc2\xb8", true},
    {"cent", "\xc2\xa2", true},
    {"check", "\xe2\x9c\x93", false},
    {"chi", "\xcf\x87", false},
    {"circ", "\xcb\x86", false},
    {"clubs", "\xe2\x99\xa3", false},
    {"cong", "\xe2\x89\x85", false},
    {"copy", "\xc2\xa9", true},
    {"crarr", "\xe2\x86\xb5", false},
    {"cross", "\xe2\x9c\x97", false},
    {"cup", "\xe2\x88\xaa", false},
    {"curren", "\xc2\xa4", true},
    {"dArr", "\xe2\x87\x93", false},
    {"dagger", "\xe2\x80\xa0", false},
    {"darr", "\xe2\x86\x93", false},
    {"deg", "\xc2\xb0", true},
    {"delta", "\xce\xb4", false},
    {"diams", "\xe2\x99\xa6", false},
    {"divide", "\xc3\xb7", true},
    {"eacute", "\xc3\xa9", true},
    {"ecirc", "\xc3\xaa", true},
    {"egrave", "\xc3\xa8", true},
    {"empty", "\xe2\x88\x85", false},
    {"emsp", "\xe2\x80\x83", false},
    {"ensp", "\xe2\x80\x82", false},
    {"epsilon", "\xce\xb5", false},
    {"equiv", "\xe2\x89\xa1", false},
    {"eta", "\xce\xb7", false},
    {"eth", "\xc3\xb0", true},
    {"euml", "\xc3\xab", true},
    {"euro", "\xe2\x82\xac", false},
    {"exist", "\xe2\x88\x83", false},
    {"fnof", "\xc6\x92", false},
    {"forall", "\xe2\x88\x80", false},
    {"frac12", "\xc2\xbd", true},
    {"frac14", "\xc2\xbc", true},
    {"frac34", "\xc2\xbe", true},
    {"frasl", "\xe2\x81\x84", false},
    {"gamma", "\xce\xb3", false},
    {"ge", "\xe2\x89\xa5", false},
    {"gt", "\x3e", true},
    {"hArr", "\xe2\x87\x94", false},
    {"harr", "\xe2\x86\x94", false},
    {"hearts", "\xe2\x99\xa5", false},
    {"hellip", "\xe2\x80\xa6", false},
    {"iacute", "\xc3\xad", true},
    {"icirc", "\xc3\xae", true},
    {"iexcl", "\xc2\xa1", true},
    {"igrave", "\xc3\xac", true},
    {"image", "\xe2\x84\x91", false},
    {"infin", "\xe2\x88\x9e", false},
    {"int", "\xe2\x88\xab", false},
    {"iota", "\xce\xb9", false},
    {"iquest", "\xc2\xbf", true},
    {"isin", "\xe2\x88\x88", false},
    {"iuml", "\xc3\xaf", true},
    {"kappa", "\xce\xba", false},
    {"lArr", "\xe2\x87\x90", false},
    {"lambda", "\xce\xbb", false},
    {"lang", "\xe2\x9f\xa8", false},
    {"laquo", "\xc2\xab", true},
    {"larr", "\xe2\x86\x90", false},
    {"lceil", "\xe2\x8c\x88", false},
    {"ldquo", "\xe2\x80\x9c", false},
    {"le", "\xe2\x89\xa4", false},
    {"lfloor", "\xe2\x8c\x8a", false},
    {"lowast", "\xe2\x88\x97", false},
    {"loz", "\xe2\x97\x8a", false},
    {"lrm", "\xe2\x80\x8e", false},
    {"lsaquo", "\xe2\x80\xb9", false},
    {"lsquo", "\xe2\x80\x98", false},
    {"lt", "\x3c", true},
    {"macr", "\xc2\xaf", true},
    {"mdash", "\xe2\x80\x94", false},
    {"micro", "\xc2\xb5", true},
    {"middot", "\xc2\xb7", true},
    {"minus", "\xe2\x88\x92", false},
    {"mu", "\xce\xbc", false},
    {"nabla", "\xe2\x88\x87", false},
    {"nbsp", "\xc2\xa0", true},
    {"ndash", "\xe2\x80\x93", false},
    {"ne", "\xe2\x89\xa0", false},
    {"ni", "\xe2\x88\x8b", false},
    {"not", "\xc2\xac", true},
    {"notin", "\xe2\x88\x89", false},
    {"nsub", "\xe2\x8a\x84", false},
    {"ntilde", "\xc3\xb1", true},
    {"nu", "\xce\xbd", false},
    {"oacute", "\xc3\xb3", true},
    {"ocirc", "\xc3\xb4", true},
    {"oelig", "\xc5\x93", false},
    {"ograve", "\xc3\xb2", true},
    {"oline", "\xe2\x80\xbe", false},
    {"omega", "\xcf\x89", false},
    {"omicron", "\xce\xbf", false},
    {"oplus", "\xe2\x8a\x95", false},
    {"or", "\xe2\x88\xa8", false},
    {"ordf", "\xc2\xaa", true},
    {"ordm", "\xc2\xba", true},
    {"oslash", "\xc3\xb8", true},
    {"otilde", "\xc3\xb5", true},
    {"otimes", "\xe2\x8a\x97", false},
    {"ouml", "\xc3\xb6", true},
    {"para", "\xc2\xb6", true},
    {"part", "\xe2\x88\x82", false},
    {"permil", "\xe2\x80\xb0", false},
    {"perp", "\xe2\x8a\xa5", false},
    {"phi", "\xcf\x86", false},
    {"pi", "\xcf\x80", false},
    {"plusmn", "\xc2\xb1", true},
    {"pound", "\xc2\xa3", true},
    {"prime", "\xe2\x80\xb2", false},
    {"prod", "\xe2\x88\x8f", false},
    {"prop", "\xe2\x88\x9d", false},
    {"psi", "\xcf\x88", false},
    {"quot", "\x22", true},
    {"rArr", "\xe2\x87\x92", false},
    {"radic", "\xe2\x88\x9a", false},
    {"rang", "\xe2\x9f\xa9", false},
    {"raquo", "\xc2\xbb", true},
    {"rarr", "\xe2\x86\x92", false},
    {"rceil", "\xe2\x8c\x89", false},
    {"rdquo", "\xe2\x80\x9d", false},
    {"real", "\xe2\x84\x9c", false},
    {"reg", "\xc2\xae", true},
    {"rfloor", "\xe2\x8c\x8b", false},
    {"rho", "\xcf\x81", false},
    {"rlm", "\xe2\x80\x8f", false},
    {"rsaquo", "\xe2\x80\xba", false},
    {"rsquo", "\xe2\x80\x99", false},
    {"sbquo", "\xe2\x80\x9a", false},
    {"scaron", "\xc5\xa1", false},
    {"sdot", "\xe2\x8b\x85", false},
    {"sect", "\xc2\xa7", true},
    {"shy", "\xc2\xad", true},
    {"sigma", "\xcf\x83", false},
    {"sigmaf", "\xcf\x82", false},
    {"sim", "\xe2\x88\xbc", false},
    {"spades", "\xe2\x99\xa0", false},
    {"star", "\xe2\x98\x86", false},
    {"sub", "\xe2\x8a\x82", false},
    {"sube", "\xe2\x8a\x86", false},
    {"sum", "\xe2\x88\x91", false},
    {"sup", "\xe2\x8a\x83", false},
    {"sup1", "\xc2\xb9", true},
    {"sup2", "\xc2\xb2", true},
    {"sup3", "\xc2\xb3", true},
    {"supe", "\xe2\x8a\x87", false},
    {"szlig", "\xc3\x9f", true},
    {"tau", "\xcf\x84", false},
    {"there4", "\xe2\x88\xb4", false},
    {"theta", "\xce\xb8", false},
    {"thinsp", "\xe2\x80\x89", false},
    {"thorn", "\xc3\xbe", true},
    {"tilde", "\xcb\x9c", false},
    {"times", "\xc3\x97", true},
    {"trade", "\xe2\x84\xa2", false},
    {"uArr", "\xe2\x87\x91", false},
    {"uacute", "\xc3\xba", true},
    {"uarr", "\xe2\x86\x91", false},
    {"ucirc", "\xc3\xbb", true},
    {"ugrave", "\xc3\xb9", true},
    {"uml", "\xc2\xa8", true},
    {"upsilon", "\xcf\x85", false},
    {"uuml", "\xc3\xbc", true},
    {"weierp", "\xe2\x84\x98", false},
    {"xi", "\xce\xbe", false},
    {"yacute", "\xc3\xbd", true},
    {"yen", "\xc2\xa5", true},
    {"yuml", "\xc3\xbf", true},
    {"zeta", "\xce\xb6", false},
    {"zwj", "\xe2\x80\x8d", false},
    {"zwnj", "\xe2\x80\x8c", false},
};

const NamedEntity* FindEntity(const std::string& name) {
  auto it = std::lower_bound(std::begin(kNamedEntities), std::end(kNamedEntities), name,
                             [](const NamedEntity& e, const std::string& n) { return std::strcmp(e.name, n.c_str()) < 0; });
  if (it == std::end(kNamedEntities) || name != it->name) return nullptr;
  return it;
}

// Text as code points. Malformed bytes map to U+DC80..U+DCFF ("surrogateescape") so they survive a
// round trip unchanged; nothing here produces lone surrogates otherwise.
std::vector<uint32_t> ToCodepoints(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  while (!s.empty()) {
    size_t length;
    uint32_t cp;
    if (DecodeUtf8(s, &length, &cp)) out.push_back(cp);
    else out.push_back(0xdc00 + static_cast<uint8_t>(s[0]));
    s.remove_prefix(length);
  }
  return out;
}

std::string FromCodepoints(const std::vector<uint32_t>& cps, size_t begin = 0, size_t end = std::string::npos) {
  std::string out;
  end = std::min(end, cps.size());
  for (size_t i = begin; i < end; ++i) {
    if (cps[i] >= 0xdc80 && cps[i] <= 0xdcff) out.push_back(static_cast<char>(cps[i] - 0xdc00));
    else AppendUtf8(cps[i], &out);
  }
  return out;
}

// Python's str.isspace() set (Unicode White_Space plus the ASCII information separators 0x1c-0x1f).
bool IsUnicodeSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

bool IsAsciiDigit(uint32_t c) { return c >= '0' && c <= '9'; }
bool IsAsciiHexDigit(uint32_t c) { return IsAsciiDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Python html: what a numeric reference to `num` becomes.
std::string NumericReference(uint64_t num) {
  static const std::pair<uint32_t, uint32_t> kInvalidCharrefs[] = {
      {0x00, 0xfffd}, {0x0d, 0x0d},   {0x80, 0x20ac}, {0x81, 0x81},   {0x82, 0x201a}, {0x83, 0x0192},
      {0x84, 0x201e}, {0x85, 0x2026}, {0x86, 0x2020}, {0x87, 0x2021}, {0x88, 0x02c6}, {0x89, 0x2030},
      {0x8a, 0x0160}, {0x8b, 0x2039}, {0x8c, 0x0152}, {0x8d, 0x8d},   {0x8e, 0x017d}, {0x8f, 0x8f},
      {0x90, 0x90},   {0x91, 0x2018}, {0x92, 0x2019}, {0x93, 0x201c}, {0x94, 0x201d}, {0x95, 0x2022},
      {0x96, 0x2013}, {0x97, 0x2014}, {0x98, 0x02dc}, {0x99, 0x2122}, {0x9a, 0x0161}, {0x9b, 0x203a},
      {0x9c, 0x0153}, {0x9d, 0x9d},   {0x9e, 0x017e}, {0x9f, 0x0178}};
  std::string out;
  for (const auto& [from, to] : kInvalidCharrefs) {
    if (num == from) {
      AppendUtf8(to, &out);
      return out;
    }
  }
  if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) {
    AppendUtf8(0xfffd, &out);
    return out;
  }
  const uint32_t c = static_cast<uint32_t>(num);
  const bool invalid = (c >= 0x1 && c <= 0x8) || c == 0xb || (c >= 0xe && c <= 0x1f) || (c >= 0x7f && c <= 0x9f) ||
                       (c >= 0xfdd0 && c <= 0xfdef) || (c & 0xfffe) == 0xfffe;
  if (!invalid) AppendUtf8(c, &out);
  return out;
}

}  // namespace

std::string HtmlUnescape(std::string_view text) {
  if (text.find('&') == std::string_view::npos) return std::string(text);
  const std::vector<uint32_t> cps = ToCodepoints(text);
  const size_t n = cps.size();
  std::string out;
  size_t copied = 0;  // cps[copied, i) still to be appended verbatim
  size_t i = 0;
  while (i < n) {
    if (cps[i] != '&') {
      ++i;
      continue;
    }
    size_t end = i;  // past the reference; == i means "not a reference"
    std::string replacement;
    if (i + 1 < n && cps[i + 1] == '#') {
      size_t k = i + 2;
      bool hex = false;
      if (k + 1 < n && (cps[k] == 'x' || cps[k] == 'X') && IsAsciiHexDigit(cps[k + 1])) {
        hex = true;
        ++k;
      }
      if (k < n && (hex ? IsAsciiHexDigit(cps[k]) : IsAsciiDigit(cps[k]))) {
        uint64_t num = 0;
        while (k < n && (hex ? IsAsciiHexDigit(cps[k]) : IsAsciiDigit(cps[k]))) {
          const uint32_t c = cps[k];
          const uint32_t digit = IsAsciiDigit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
          num = std::min<uint64_t>(num * (hex ? 16 : 10) + digit, 0x110000);  // anything larger is as invalid
          ++k;
        }
        if (k < n && cps[k] == ';') ++k;
        replacement = NumericReference(num);
        end = k;
      }
    } else {
      // A name: 1 to 32 characters other than tab, newline, form feed, space, '<', '&', '#', ';'.
      size_t k = i + 1;
      while (k < n && k - (i + 1) < 32 && cps[k] != '\t' && cps[k] != '\n' && cps[k] != '\f' && cps[k] != ' ' &&
             cps[k] != '<' && cps[k] != '&' && cps[k] != '#' && cps[k] != ';')
        ++k;
      if (k > i + 1) {
        const bool semicolon = k < n && cps[k] == ';';
        const std::string name = FromCodepoints(cps, i + 1, k);
        end = semicolon ? k + 1 : k;
        const NamedEntity* exact = FindEntity(name);
        if (exact && (semicolon || exact->legacy)) {
          replacement = exact->value;
        } else {
          // The longest legacy name that is a proper prefix keeps the rest as text ("&ampx" -> "&x").
          const size_t name_chars = k - (i + 1);
          size_t x = semicolon ? name_chars : name_chars - 1;
          bool found = false;
          for (; x >= 2 && !found; --x) {
            const NamedEntity* e = FindEntity(FromCodepoints(cps, i + 1, i + 1 + x));
            if (e && e->legacy) {
              replacement = std::string(e->value) + FromCodepoints(cps, i + 1 + x, end);
              found = true;
            }
          }
          if (!found) replacement = FromCodepoints(cps, i, end);
        }
      }
    }
    if (end == i) {
      ++i;
      continue;
    }
    out += FromCodepoints(cps, copied, i);
    out += replacement;
    copied = i = end;
  }
  out += FromCodepoints(cps, copied, n);
  return out;
}

std::string CollapseWhitespace(std::string_view text) {
  const std::vector<uint32_t> cps = ToCodepoints(text);
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  bool in_space = false;
  for (uint32_t c : cps) {
    if (IsUnicodeSpace(c)) {
      in_space = true;
      continue;
    }
    if (in_space && !out.empty()) out.push_back(' ');
    in_space = false;
    out.push_back(c);
  }
  return FromCodepoints(out);
}

std::string WanPromptClean(std::string_view prompt) {
  // basic_clean: (ftfy.fix_text when installed: not available here), html.unescape twice, strip;
  // whitespace_clean: every whitespace run -> one space, strip. CollapseWhitespace does both strips.
  return CollapseWhitespace(HtmlUnescape(HtmlUnescape(prompt)));
}

Result<TokenBatch> TokenizeForT5(const SentencePieceTokenizer& tokenizer, const std::vector<std::string>& prompts,
                                 const T5TokenizeOptions& options) {
  if (options.max_length < 1)
    return InvalidArgument("max_length must be at least 1 (room for EOS), got " + std::to_string(options.max_length));
  if (tokenizer.eos_id() < 0) return InvalidArgument("the tokenizer model has no EOS piece (" + tokenizer.model().trainer_spec.eos_piece + ")");
  if (tokenizer.pad_id() < 0) return InvalidArgument("the tokenizer model has no pad piece (" + tokenizer.model().trainer_spec.pad_piece + ")");
  TokenBatch batch;
  batch.batch = static_cast<int64_t>(prompts.size());
  batch.max_length = options.max_length;
  batch.input_ids.assign(batch.batch * batch.max_length, tokenizer.pad_id());
  batch.attention_mask.assign(batch.batch * batch.max_length, 0);
  for (size_t row = 0; row < prompts.size(); ++row) {
    std::vector<int32_t> ids =
        tokenizer.Encode(options.clean_prompts ? WanPromptClean(prompts[row]) : std::string(prompts[row]));
    // transformers truncates the text tokens so that they and the EOS fit in max_length.
    if (static_cast<int64_t>(ids.size()) > options.max_length - 1) ids.resize(options.max_length - 1);
    ids.push_back(tokenizer.eos_id());
    int64_t* row_ids = batch.input_ids.data() + row * batch.max_length;
    int64_t* row_mask = batch.attention_mask.data() + row * batch.max_length;
    for (size_t t = 0; t < ids.size(); ++t) {
      row_ids[t] = ids[t];
      row_mask[t] = 1;
    }
    batch.lengths.push_back(static_cast<int64_t>(ids.size()));
  }
  return batch;
}

}  // namespace stas::models::text

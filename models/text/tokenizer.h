// SentencePiece unigram tokenization (T5 / UMT5 `spiece.model`) without libsentencepiece, and the
// prompt handling of the diffusers text-to-video pipelines around it.
//
// What is reproduced (as sentencepiece's own encoder does it):
//  - normalization: the model's precompiled charsmap (e.g. nmt_nfkc, longest rule first; a malformed
//    UTF-8 byte becomes U+FFFD), user-defined pieces kept verbatim, remove_extra_whitespaces (leading,
//    trailing and repeated spaces), whitespace escaped to U+2581, the dummy prefix (or suffix);
//  - the unigram Viterbi search over the pieces by score (sentencepiece's optimized encoder: same
//    tie-breaking, unknown-character penalty min_score - 10, user-defined pieces always preferred,
//    unused pieces never produced);
//  - unknown characters: one unk id per run of consecutive unknown characters, or with byte_fallback
//    the UTF-8 bytes as <0xNN> pieces.
// Known gaps (documented in docs/MODELS.md):
//  - only unigram models (T5, UMT5); BPE/word/char models give NotImplemented;
//  - special-token strings typed in a prompt ("</s>", "<extra_id_0>") are tokenized as plain text,
//    whereas the transformers tokenizers map them to their ids;
//  - the diffusers Wan prompt cleaning runs ftfy.fix_text first when ftfy is installed; we cannot run
//    ftfy (mojibake repair, curly-quote and ligature fixes), so prompts that need it differ;
//  - html.unescape knows every numeric reference but only a table of common named entities.
//
// A SentencePieceTokenizer is immutable once built: cheap to copy, safe to share between threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "models/text/sentencepiece_model.h"

namespace stas::models::text {

class SentencePieceTokenizer {
 public:
  // Validates the vocabulary as sentencepiece does (non-empty unique pieces, exactly one unknown
  // piece, byte pieces only with byte_fallback and then all 256 of them, a unigram model, a parsable
  // charsmap). InvalidArgument / NotImplemented otherwise.
  static Result<SentencePieceTokenizer> FromModel(SentencePieceModel model);
  // Reads and validates a `spiece.model` file.
  static Result<SentencePieceTokenizer> Load(const std::string& path);

  // The normalized text the unigram model segments (U+2581 for escaped whitespace).
  std::string Normalize(std::string_view text) const;
  // Token ids of `text` (no EOS appended).
  std::vector<int32_t> Encode(std::string_view text) const;
  std::vector<std::string> EncodeAsPieces(std::string_view text) const;

  int32_t vocab_size() const;
  // The id of `piece`, or unk_id() when the vocabulary does not have it (as sentencepiece).
  int32_t PieceToId(std::string_view piece) const;
  // Precondition: 0 <= id < vocab_size() (checked).
  const std::string& IdToPiece(int32_t id) const;
  int32_t unk_id() const;
  // From the trainer spec; -1 when the model defines none.
  int32_t eos_id() const;
  int32_t pad_id() const;
  const SentencePieceModel& model() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// Python's html.unescape: numeric character references (with HTML5's replacements for invalid ones)
// and named references from a table of common entities (with the longest-prefix rule for names
// written without ';'); other named references are left as written.
std::string HtmlUnescape(std::string_view text);
// Every run of Unicode whitespace becomes one ASCII space; leading and trailing whitespace is removed.
std::string CollapseWhitespace(std::string_view text);
// diffusers WanPipeline prompt_clean without ftfy: html.unescape twice, strip, collapse whitespace.
std::string WanPromptClean(std::string_view prompt);

// A padded batch of token ids as the T5 tokenizers of transformers return it for
// padding="max_length", truncation=True, add_special_tokens=True.
struct TokenBatch {
  int64_t batch = 0;
  int64_t max_length = 0;
  std::vector<int64_t> input_ids;       // [batch * max_length], row-major, padded with the pad id
  std::vector<int64_t> attention_mask;  // 1 for every real token (EOS included), 0 for padding
  std::vector<int64_t> lengths;         // real tokens per row, EOS included
};

struct T5TokenizeOptions {
  int64_t max_length = 512;  // Wan: 512; CogVideoX: 226
  bool clean_prompts = true;  // Wan runs prompt_clean; CogVideoX tokenizes the prompt as given
};

// Tokenizes each prompt, truncates it to max_length - 1 tokens, appends EOS and pads with the pad id.
// InvalidArgument when max_length < 1 or the model lacks an EOS or pad id.
Result<TokenBatch> TokenizeForT5(const SentencePieceTokenizer& tokenizer, const std::vector<std::string>& prompts,
                                 const T5TokenizeOptions& options);

}  // namespace stas::models::text

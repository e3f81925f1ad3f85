// SentencePiece tokenizer without libsentencepiece: wire format, model parsing, normalization, unigram
// Viterbi segmentation, byte fallback, prompt cleaning and the T5 batch layout.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "models/text/protobuf_wire.h"
#include "models/text/sentencepiece_model.h"
#include "models/text/tokenizer.h"
#include "support/temp_dir.h"

namespace stas::models::text {
namespace {

const std::string kSp = "\xe2\x96\x81";  // U+2581

// A ModelProto written field by field with our wire writer (not through SentencePieceModel), so the
// parser is checked against bytes laid out as protobuf lays them out.
struct PieceSpec {
  std::string piece;
  float score;
  int type;  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
};

std::string WriteModelProto(const std::vector<PieceSpec>& pieces, bool byte_fallback = false,
                            bool whitespace_as_suffix = false, int model_type = 1) {
  pb::Writer model;
  for (const auto& p : pieces) {
    pb::Writer piece;
    piece.Bytes(1, p.piece);
    piece.Float(2, p.score);
    if (p.type != 1) piece.Int32(3, p.type);  // NORMAL is the default and usually omitted
    model.Bytes(1, piece.data());
  }
  pb::Writer trainer;
  trainer.Int32(3, model_type);
  trainer.Int32(4, static_cast<int32_t>(pieces.size()));
  trainer.Bytes(2, "model_prefix_is_skipped");  // an unrelated field the reader must skip
  if (whitespace_as_suffix) trainer.Bool(24, true);
  if (byte_fallback) trainer.Bool(35, true);
  trainer.Int32(40, 2);   // unk_id
  trainer.Int32(41, -1);  // bos_id: negative int32 takes 10 bytes on the wire
  trainer.Int32(42, 1);   // eos_id
  trainer.Int32(43, 0);   // pad_id
  model.Bytes(2, trainer.data());
  pb::Writer normalizer;
  normalizer.Bytes(1, "identity");
  model.Bytes(3, normalizer.data());
  return model.data();
}

std::vector<PieceSpec> BasePieces() {
  return {{"<pad>", 0, 3}, {"</s>", 0, 3}, {"<unk>", 0, 2}};
}

// Vocabulary used by the hand-derived segmentation tests.
//   ids: 3 "▁"(-4) 4 "▁he"(-2) 5 "llo"(-2) 6 "▁hello"(-5) 7 "▁world"(-3) 8 "h" 9 "e" 10 "l" 11 "o"
//        12 "w" 13 "r" 14 "d" (single letters -6) 15 "▁ab"(-2) 16 "▁a"(-1) 17 "b"(-1)
SentencePieceTokenizer HandVocabulary() {
  auto pieces = BasePieces();
  pieces.insert(pieces.end(), {{kSp, -4, 1},
                               {kSp + "he", -2, 1},
                               {"llo", -2, 1},
                               {kSp + "hello", -5, 1},
                               {kSp + "world", -3, 1},
                               {"h", -6, 1},
                               {"e", -6, 1},
                               {"l", -6, 1},
                               {"o", -6, 1},
                               {"w", -6, 1},
                               {"r", -6, 1},
                               {"d", -6, 1},
                               {kSp + "ab", -2, 1},
                               {kSp + "a", -1, 1},
                               {"b", -1, 1}});
  auto model = SentencePieceModel::Parse(WriteModelProto(pieces));
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  auto tok = SentencePieceTokenizer::FromModel(*model);
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  return *tok;
}

TEST(ProtobufWire, RoundTripsEveryFieldKind) {
  pb::Writer w;
  w.Varint(1, 300);
  w.Int32(2, -1);
  w.Float(3, 1.5f);
  w.Bytes(4, std::string("a\0b", 3));
  w.Bool(5, true);
  EXPECT_EQ(w.data().size(), 3u + 11u + 5u + 5u + 2u);  // -1 takes a 10-byte varint
  pb::Reader r(w.data());
  auto f1 = r.Next();
  ASSERT_TRUE(f1.ok());
  EXPECT_EQ(f1->number, 1u);
  EXPECT_EQ(f1->varint, 300u);
  EXPECT_EQ(*r.Next()->AsInt32(), -1);
  EXPECT_EQ(*r.Next()->AsFloat(), 1.5f);
  EXPECT_EQ(*r.Next()->AsBytes(), std::string_view("a\0b", 3));
  EXPECT_TRUE(*r.Next()->AsBool());
  EXPECT_TRUE(r.done());
}

TEST(ProtobufWire, MalformedInputIsAnErrorNotACrash) {
  // Truncated varint.
  EXPECT_FALSE(pb::Reader(std::string("\x08\x80", 2)).Next().ok());
  // Length past the end.
  auto past = pb::Reader(std::string("\x0a\x05" "ab", 4)).Next();
  ASSERT_FALSE(past.ok());
  EXPECT_NE(past.status().message().find("past the end"), std::string::npos) << past.status().message();
  // Field number 0.
  EXPECT_FALSE(pb::Reader(std::string("\x00\x01", 2)).Next().ok());
  // Group wire type (3).
  EXPECT_FALSE(pb::Reader(std::string("\x0b", 1)).Next().ok());
  // Fixed32 cut short.
  EXPECT_FALSE(pb::Reader(std::string("\x1d\x00\x00", 3)).Next().ok());
  // Wrong wire type for a typed read.
  pb::Writer w;
  w.Varint(2, 7);
  auto f = pb::Reader(w.data()).Next();
  ASSERT_TRUE(f.ok());
  EXPECT_FALSE(f->AsFloat().ok());
  EXPECT_FALSE(f->AsBytes().ok());
}

TEST(SentencePieceModel, ParsesWhatOurWriterWritesAndRoundTrips) {
  auto pieces = BasePieces();
  pieces.push_back({kSp + "x", -1.25f, 1});
  pieces.push_back({"<sep>", 0, 4});
  auto model = SentencePieceModel::Parse(WriteModelProto(pieces, /*byte_fallback=*/false, /*suffix=*/true));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ASSERT_EQ(model->pieces.size(), 5u);
  EXPECT_EQ(model->pieces[3].piece, kSp + "x");
  EXPECT_EQ(model->pieces[3].score, -1.25f);
  EXPECT_EQ(model->pieces[3].type, PieceType::kNormal);
  EXPECT_EQ(model->pieces[4].type, PieceType::kUserDefined);
  EXPECT_EQ(model->pieces[2].type, PieceType::kUnknown);
  EXPECT_EQ(model->trainer_spec.bos_id, -1);
  EXPECT_EQ(model->trainer_spec.eos_id, 1);
  EXPECT_TRUE(model->trainer_spec.treat_whitespace_as_suffix);
  EXPECT_EQ(model->normalizer_spec.name, "identity");
  EXPECT_TRUE(model->normalizer_spec.add_dummy_prefix);  // proto default when absent

  auto again = SentencePieceModel::Parse(model->Serialize());
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->pieces.size(), model->pieces.size());
  for (size_t i = 0; i < model->pieces.size(); ++i) {
    EXPECT_EQ(again->pieces[i].piece, model->pieces[i].piece);
    EXPECT_EQ(again->pieces[i].score, model->pieces[i].score);
    EXPECT_EQ(again->pieces[i].type, model->pieces[i].type);
  }
  EXPECT_EQ(again->trainer_spec.pad_id, 0);
  EXPECT_TRUE(again->trainer_spec.treat_whitespace_as_suffix);
}

TEST(SentencePieceModel, MalformedFilesGiveClearErrors) {
  EXPECT_EQ(SentencePieceModel::Parse("").status().code(), StatusCode::kInvalidArgument);
  const std::string good = WriteModelProto(BasePieces());
  auto truncated = SentencePieceModel::Parse(std::string_view(good).substr(0, good.size() - 3));
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("ModelProto"), std::string::npos) << truncated.status().message();
  // A text file is not a model.
  auto text = SentencePieceModel::Parse("this is not a sentencepiece model\n");
  EXPECT_FALSE(text.ok());
  // A piece type outside the enum.
  pb::Writer piece;
  piece.Bytes(1, "x");
  piece.Int32(3, 9);
  pb::Writer bad_type;
  bad_type.Bytes(1, piece.data());
  auto r = SentencePieceModel::Parse(bad_type.data());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("piece type 9"), std::string::npos) << r.status().message();
  // Missing file.
  EXPECT_EQ(SentencePieceModel::Load("/nonexistent/spiece.model").status().code(), StatusCode::kNotFound);
  // A charsmap whose trie size exceeds the blob.
  EXPECT_FALSE(PrecompiledCharsMap::Parse(std::string("\xff\x00\x00\x00" "abcd", 8)).ok());
  EXPECT_FALSE(PrecompiledCharsMap::Parse(std::string("\x03\x00\x00\x00" "abcd", 8)).ok());
}

TEST(SentencePieceTokenizer, RejectsVocabulariesSentencepieceRejects) {
  auto expect_error = [](std::vector<PieceSpec> pieces, const std::string& needle, bool byte_fallback = false,
                         int model_type = 1) {
    auto model = SentencePieceModel::Parse(WriteModelProto(pieces, byte_fallback, false, model_type));
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    auto tok = SentencePieceTokenizer::FromModel(*model);
    ASSERT_FALSE(tok.ok()) << "accepted a vocabulary that should fail with: " << needle;
    EXPECT_NE(tok.status().message().find(needle), std::string::npos) << tok.status().message();
  };
  expect_error({{"<pad>", 0, 3}, {"a", -1, 1}}, "no unknown piece");
  expect_error({{"<unk>", 0, 2}, {"a", -1, 1}, {"a", -2, 1}}, "defined twice");
  expect_error({{"<unk>", 0, 2}, {"<unk2>", 0, 2}}, "two unknown pieces");
  expect_error({{"<unk>", 0, 2}, {"<0x41>", 0, 6}}, "byte_fallback is off");
  expect_error({{"<unk>", 0, 2}, {"<0x41>", 0, 6}}, "not all 256", /*byte_fallback=*/true);
  expect_error({{"<unk>", 0, 2}, {"", -1, 1}}, "is empty");
  auto bpe = SentencePieceModel::Parse(WriteModelProto({{"<unk>", 0, 2}}, false, false, /*model_type=*/2));
  ASSERT_TRUE(bpe.ok());
  EXPECT_EQ(SentencePieceTokenizer::FromModel(*bpe).status().code(), StatusCode::kNotImplemented);
}

TEST(SentencePieceTokenizer, HandDerivedSegmentations) {
  const SentencePieceTokenizer tok = HandVocabulary();
  // "hello world" -> "▁hello▁world". For "▁hello": "▁he"+"llo" = -4 beats "▁hello" = -5 and any split
  // with single letters (-6 each). "▁world" = -3 beats "▁"(-4) + five letters.
  EXPECT_EQ(tok.Normalize("hello world"), kSp + "hello" + kSp + "world");
  EXPECT_EQ(tok.EncodeAsPieces("hello world"), (std::vector<std::string>{kSp + "he", "llo", kSp + "world"}));
  EXPECT_EQ(tok.Encode("hello world"), (std::vector<int32_t>{4, 5, 7}));
  // Extra, leading and trailing spaces are removed before segmentation.
  EXPECT_EQ(tok.Encode("   hello    world  "), (std::vector<int32_t>{4, 5, 7}));
  // A tie: "▁ab" (-2) and "▁a"+"b" (-1 + -1) score the same; the path found first (the longer last
  // piece, starting earlier) is kept.
  EXPECT_EQ(tok.EncodeAsPieces("ab"), (std::vector<std::string>{kSp + "ab"}));
  // Unknown characters: "x" and "!" are not in the vocabulary; the run "x!" becomes one <unk> (id 2)
  // while the known piece before it stays.
  EXPECT_EQ(tok.EncodeAsPieces("hex!"), (std::vector<std::string>{kSp + "he", "x!"}));
  EXPECT_EQ(tok.Encode("hex!"), (std::vector<int32_t>{4, 2}));
  // "▁x" is no piece: "▁" alone, then <unk> for "x", then "▁world".
  EXPECT_EQ(tok.Encode("x world"), (std::vector<int32_t>{3, 2, 7}));
  EXPECT_TRUE(tok.Encode("").empty());
  EXPECT_TRUE(tok.Encode("    ").empty());
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.unk_id(), 2);
  EXPECT_EQ(tok.PieceToId(kSp + "world"), 7);
  EXPECT_EQ(tok.PieceToId("not-a-piece"), 2);
  EXPECT_EQ(tok.IdToPiece(5), "llo");
}

TEST(SentencePieceTokenizer, ByteFallbackSpellsUnknownCharactersAsBytes) {
  auto pieces = BasePieces();
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    pieces.push_back({name, 0, 6});
  }
  pieces.push_back({kSp + "caf", -1, 1});
  auto model = SentencePieceModel::Parse(WriteModelProto(pieces, /*byte_fallback=*/true));
  ASSERT_TRUE(model.ok());
  auto tok = SentencePieceTokenizer::FromModel(*model);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  // "é" (C3 A9) is unknown: its two UTF-8 bytes become <0xC3> <0xA9> (ids 3 + byte).
  EXPECT_EQ(tok->EncodeAsPieces("caf\xc3\xa9"), (std::vector<std::string>{kSp + "caf", "<0xC3>", "<0xA9>"}));
  EXPECT_EQ(tok->Encode("caf\xc3\xa9"), (std::vector<int32_t>{259, 3 + 0xc3, 3 + 0xa9}));
  // A malformed byte is normalized to U+FFFD (EF BF BD) first, as sentencepiece does.
  EXPECT_EQ(tok->Encode("caf\xff"), (std::vector<int32_t>{259, 3 + 0xef, 3 + 0xbf, 3 + 0xbd}));
}

TEST(SentencePieceTokenizer, UserDefinedPiecesAndWhitespaceSuffix) {
  auto pieces = BasePieces();
  pieces.insert(pieces.end(), {{"<sep>", 0, 4}, {"a", -1, 1}, {"b", -1, 1}, {"<", -1, 1}, {"s", -1, 1},
                               {"e", -1, 1}, {"p", -1, 1}, {">", -1, 1}, {kSp, -1, 1}, {"a" + kSp, -0.5f, 1}});
  auto model = SentencePieceModel::Parse(WriteModelProto(pieces, false, /*whitespace_as_suffix=*/true));
  ASSERT_TRUE(model.ok());
  auto tok = SentencePieceTokenizer::FromModel(*model);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  // The dummy space goes at the end; the user-defined "<sep>" is one piece although its letters exist.
  EXPECT_EQ(tok->Normalize("a<sep>b"), "a<sep>b" + kSp);
  EXPECT_EQ(tok->EncodeAsPieces("a<sep>b"), (std::vector<std::string>{"a", "<sep>", "b", kSp}));
  EXPECT_EQ(tok->EncodeAsPieces("a b"), (std::vector<std::string>{"a" + kSp, "b", kSp}));
}

// Expected ids from libsentencepiece itself (spm_train with a custom normalization TSV, byte fallback and a
// user-defined symbol; see models/text/testdata/README.md): covers the darts-clone charsmap reader,
// multi-character rules, rules that delete, and malformed UTF-8.
TEST(SentencePieceTokenizer, MatchesLibsentencepieceOnACharsmapModel) {
  const std::string dir = std::string(STAS_SOURCE_DIR) + "/models/text/testdata/";
  auto tok = SentencePieceTokenizer::Load(dir + "rules_bytefallback.model");
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  std::ifstream in(dir + "rules_bytefallback_expected.tsv");
  ASSERT_TRUE(in.good());
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    const size_t tab = line.find('\t');
    ASSERT_NE(tab, std::string::npos);
    std::string text;
    for (size_t i = 0; i + 1 < tab; i += 2) text.push_back(static_cast<char>(std::stoi(line.substr(i, 2), nullptr, 16)));
    std::vector<int32_t> expected;
    std::istringstream ids(line.substr(tab + 1));
    for (int32_t id; ids >> id;) expected.push_back(id);
    EXPECT_EQ(tok->Encode(text), expected) << "text: " << text;
    ++checked;
  }
  EXPECT_GE(checked, 15);
  // Spot checks of the rules themselves: full-width to ASCII, the fi ligature, a deleted ZWSP.
  EXPECT_EQ(tok->Normalize("\xef\xbc\xa1\xef\xbc\xa2"), kSp + "AB");
  EXPECT_EQ(tok->Normalize("\xef\xac\x81"), kSp + "fi");
  EXPECT_EQ(tok->Normalize("a\xe2\x80\x8b" "b"), kSp + "ab");
  EXPECT_EQ(tok->Normalize("A\xcc\x88"), kSp + "\xc3\x84");
}

TEST(PromptCleaning, HtmlUnescapeMatchesPython) {
  // Expected values from Python 3's html.unescape (once and twice).
  struct Case {
    const char* input;
    const char* once;
    const char* twice;
  };
  const Case cases[] = {
      {"plain text", "plain text", "plain text"},
      {"a &amp; b", "a & b", "a & b"},
      {"&lt;tag&gt;", "<tag>", "<tag>"},
      {"&quot;q&quot; &#39;s&#39;", "\x22""q\x22"" 's'", "\x22""q\x22"" 's'"},
      {"&#x41;&#66;&#X43;", "ABC", "ABC"},
      {"&amp;amp;", "&amp;", "&"},
      {"&ampx &amp", "&x &", "&x &"},
      {"&notit; &not", "\xc2\xac""it; \xc2\xac""", "\xc2\xac""it; \xc2\xac"""},
      {"&copy 2024", "\xc2\xa9"" 2024", "\xc2\xa9"" 2024"},
      {"&hellip; &mdash; &euro;", "\xe2\x80\xa6"" \xe2\x80\x94"" \xe2\x82\xac""", "\xe2\x80\xa6"" \xe2\x80\x94"" \xe2\x82\xac"""},
      {"&#0; &#13; &#128; &#x9f;", "\xef\xbf\xbd"" \x0d"" \xe2\x82\xac"" \xc5\xb8""", "\xef\xbf\xbd"" \x0d"" \xe2\x82\xac"" \xc5\xb8"""},
      {"&#xD800; &#1114112; &#99999999999;", "\xef\xbf\xbd"" \xef\xbf\xbd"" \xef\xbf\xbd""", "\xef\xbf\xbd"" \xef\xbf\xbd"" \xef\xbf\xbd"""},
      {"&#1; &#xb; &#x10FFFF;", "  ", "  "},
      {"& alone &; &#; &#x; &#xZ", "& alone &; &#; &#x; &#xZ", "& alone &; &#; &#x; &#xZ"},
      {"&unknownentity; &zzz", "&unknownentity; &zzz", "&unknownentity; &zzz"},
      {"&nbsp;x", "\xc2\xa0""x", "\xc2\xa0""x"},
      {"caf&eacute; &Eacute", "caf\xc3\xa9"" \xc3\x89""", "caf\xc3\xa9"" \xc3\x89"""},
      {"&#9731; &#x1F600;", "\xe2\x98\x83"" \xf0\x9f\x98\x80""", "\xe2\x98\x83"" \xf0\x9f\x98\x80"""},
      {"&amp;lt;b&amp;gt;", "&lt;b&gt;", "<b>"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(HtmlUnescape(c.input), c.once) << c.input;
    EXPECT_EQ(HtmlUnescape(HtmlUnescape(c.input)), c.twice) << c.input;
  }
  // Malformed UTF-8 passes through unchanged.
  EXPECT_EQ(HtmlUnescape("\xff&amp;\xfe"), "\xff&\xfe");
}

TEST(PromptCleaning, WanPromptCleanMatchesPython) {
  // Expected values from Python: re.sub(r"\s+", " ", html.unescape(html.unescape(t)).strip()).strip().
  const std::pair<const char*, const char*> cases[] = {
      {"  A  cat\x09""\x09""and\x0a""a dog  ", "A cat and a dog"},
      {"x\xe3\x80\x80""y\xc2\xa0""z\xe2\x80\x83""w\xe2\x80\xa8""v", "x y z w v"},
      {"&amp;nbsp; spaced &nbsp; out ", "spaced out"},
      {"\x0a""\x0a""", ""},
      {"Tom &amp; Jerry &lt;3", "Tom & Jerry <3"},
      {"ok", "ok"},
  };
  for (const auto& [input, expected] : cases) EXPECT_EQ(WanPromptClean(input), expected) << input;
}

TEST(TokenizeForT5, AppendsEosTruncatesAndPads) {
  const SentencePieceTokenizer tok = HandVocabulary();
  T5TokenizeOptions options;
  options.max_length = 5;
  auto batch = TokenizeForT5(tok, {"hello world", "hello hello hello", ""}, options);
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  EXPECT_EQ(batch->batch, 3);
  EXPECT_EQ(batch->max_length, 5);
  // Row 0: ▁he llo ▁world </s> <pad>
  EXPECT_EQ(std::vector<int64_t>(batch->input_ids.begin(), batch->input_ids.begin() + 5),
            (std::vector<int64_t>{4, 5, 7, 1, 0}));
  // Row 1: six text tokens truncated to four, then EOS.
  EXPECT_EQ(std::vector<int64_t>(batch->input_ids.begin() + 5, batch->input_ids.begin() + 10),
            (std::vector<int64_t>{4, 5, 4, 5, 1}));
  // Row 2: the empty prompt is just EOS (the default negative prompt).
  EXPECT_EQ(std::vector<int64_t>(batch->input_ids.begin() + 10, batch->input_ids.end()),
            (std::vector<int64_t>{1, 0, 0, 0, 0}));
  EXPECT_EQ(batch->lengths, (std::vector<int64_t>{4, 5, 1}));
  EXPECT_EQ(batch->attention_mask,
            (std::vector<int64_t>{1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0}));
  // Cleaning (on by default) unescapes and collapses whitespace before tokenization.
  ASSERT_TRUE(options.clean_prompts);
  auto cleaned = TokenizeForT5(tok, {"  hello&#32;&#32;world "}, options);
  ASSERT_TRUE(cleaned.ok());
  EXPECT_EQ(cleaned->lengths[0], 4);
  options.max_length = 0;
  EXPECT_EQ(TokenizeForT5(tok, {"x"}, options).status().code(), StatusCode::kInvalidArgument);
}

TEST(TokenizeForT5, RefusesModelsWithoutEos) {
  auto model = SentencePieceModel::Parse(WriteModelProto({{"<pad>", 0, 3}, {"<unk>", 0, 2}, {"a", -1, 1}}));
  ASSERT_TRUE(model.ok());
  auto tok = SentencePieceTokenizer::FromModel(*model);
  ASSERT_TRUE(tok.ok());
  auto r = TokenizeForT5(*tok, {"a"}, T5TokenizeOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("EOS"), std::string::npos);
}

}  // namespace
}  // namespace stas::models::text

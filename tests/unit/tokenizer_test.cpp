// Tokenizer tests: exact ids against reference tokenizers on the fixture corpus
// (SmolLM2's GGUF; tiny Llama-3 / Qwen2 tokenizer.json files), round trips, the
// incremental detokenizer, special tokens, and broken inputs.
#include "model/tokenizer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "common/error.h"
#include "model/gguf.h"
#include "tests/unit/gguf_writer.h"
#include "model/tokenizer_impl.h"
#include "model/utf8.h"

namespace flint {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const fs::path kData = fs::path(FLINT_TEST_DATA_DIR) / "tokenizer";
const fs::path kSmolLM2 = fs::path(FLINT_MODELS_DIR) / "SmolLM2-135M-Instruct.Q4_1.gguf";

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

std::vector<json> read_jsonl(const fs::path& path) {
  std::vector<json> rows;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);) rows.push_back(json::parse(line));
  return rows;
}

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> lines = [] {
    std::vector<std::string> out;
    for (const json& j : read_jsonl(kData / "corpus.txt")) out.push_back(j.get<std::string>());
    return out;
  }();
  return lines;
}

struct Reference {
  std::vector<int32_t> ids;
  std::vector<int32_t> plain;  // with parse_special=false
};

std::vector<Reference> read_reference(const std::string& name) {
  std::vector<Reference> refs;
  for (const json& row : read_jsonl(kData / (name + ".ids.jsonl"))) {
    Reference r{row.at("ids").get<std::vector<int32_t>>(), {}};
    r.plain = row.contains("plain") ? row.at("plain").get<std::vector<int32_t>>() : r.ids;
    refs.push_back(std::move(r));
  }
  return refs;
}

std::string show_ids(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string out;
  for (int32_t id : ids) out += std::to_string(id) + ":" + json(tok.token_text(id)).dump() + " ";
  return out;
}

// Encodes every corpus line and reports the first line whose ids differ.
void expect_ids_on_corpus(const Tokenizer& tok, const std::vector<Reference>& refs, bool parse_special) {
  const auto& lines = corpus();
  ASSERT_EQ(lines.size(), refs.size()) << "fixture line counts differ: rerun scripts/make-tokenizer-fixtures.py";
  size_t mismatches = 0, first = lines.size();
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto& want = parse_special ? refs[i].ids : refs[i].plain;
    if (tok.encode(lines[i], parse_special, /*add_bos=*/false) != want) {
      ++mismatches;
      first = std::min(first, i);
    }
  }
  if (mismatches > 0) {
    const auto got = tok.encode(lines[first], parse_special, false);
    const auto& want = parse_special ? refs[first].ids : refs[first].plain;
    ADD_FAILURE() << mismatches << " of " << lines.size() << " lines differ; first is line " << first << " "
                  << json(lines[first]).dump() << "\n  want " << show_ids(tok, want) << "\n  got  "
                  << show_ids(tok, got);
  }
}

// `text` without the bytes the vocabulary has no token for (encode drops those).
std::string representable(const Tokenizer& tok, const std::string& text) {
  std::string out;
  for (char c : text)
    if (tok.find_token(byte_level_spelling(std::string_view(&c, 1)))) out.push_back(c);
  return out;
}

void expect_round_trip_and_stream(const Tokenizer& tok) {
  for (size_t i = 0; i < corpus().size(); ++i) {
    const std::string& line = corpus()[i];
    const auto ids = tok.encode(line, true, false);
    const std::string decoded = tok.decode(ids);
    ASSERT_EQ(decoded, representable(tok, line)) << "line " << i << " " << json(line).dump();
    IncrementalDetokenizer detok(tok);
    std::string streamed;
    for (int32_t id : ids) {
      const std::string piece = detok.push(id);
      ASSERT_FALSE(utf8::first_invalid(piece).has_value())
          << "line " << i << ": push emitted part of a character: " << json(piece).dump();
      streamed += piece;
    }
    streamed += detok.flush();
    ASSERT_EQ(streamed, decoded) << "line " << i;
  }
}

Tokenizer load_hf(const std::string& name) {
  return Tokenizer::from_hf_json(read_file(kData / (name + ".tokenizer.json")),
                                 read_file(kData / (name + ".tokenizer_config.json")));
}

int32_t byte_token(const Tokenizer& tok, uint8_t byte) {
  const char c = char(byte);
  auto id = tok.find_token(byte_level_spelling(std::string_view(&c, 1)));
  if (!id) throw std::runtime_error("no token for byte " + std::to_string(byte));
  return *id;
}

#define SKIP_WITHOUT_SMOLLM2() \
  if (!fs::exists(kSmolLM2)) GTEST_SKIP() << kSmolLM2 << " not present (scripts/fetch-model)"

// ---- SmolLM2, from its GGUF
TEST(TokenizerSmolLM2, MatchesReferenceIdsOnEveryCorpusLine) {
  SKIP_WITHOUT_SMOLLM2();
  const Tokenizer tok = Tokenizer::from_gguf(GgufFile(kSmolLM2.string()));
  expect_ids_on_corpus(tok, read_reference("smollm2"), /*parse_special=*/true);
}

TEST(TokenizerSmolLM2, MatchesReferenceIdsWithSpecialTokensNotParsed) {
  SKIP_WITHOUT_SMOLLM2();
  const Tokenizer tok = Tokenizer::from_gguf(GgufFile(kSmolLM2.string()));
  expect_ids_on_corpus(tok, read_reference("smollm2"), /*parse_special=*/false);
}

TEST(TokenizerSmolLM2, ReadsVocabularyAndSpecialIdsFromGguf) {
  SKIP_WITHOUT_SMOLLM2();
  const Tokenizer tok = Tokenizer::from_gguf(GgufFile(kSmolLM2.string()));
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizer::SmolLM);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_EQ(std::vector<int32_t>(tok.eog_ids().begin(), tok.eog_ids().end()), (std::vector<int32_t>{0, 2}));
  EXPECT_TRUE(tok.is_special(1));
  EXPECT_FALSE(tok.is_special(100));
  EXPECT_EQ(tok.find_token("<|im_end|>"), 2);
  EXPECT_EQ(tok.token_text(216), "Ġ");
  EXPECT_EQ(tok.token_bytes(216), " ");
  EXPECT_EQ(tok.encode("<|im_start|>user\nHi<|im_end|>", true, true).front(), 1);  // no BOS added
}

TEST(TokenizerSmolLM2, RoundTripsAndStreamsEveryCorpusLine) {
  SKIP_WITHOUT_SMOLLM2();
  expect_round_trip_and_stream(Tokenizer::from_gguf(GgufFile(kSmolLM2.string())));
}

TEST(TokenizerSmolLM2, EncodesA4kTokenPromptQuickly) {
  SKIP_WITHOUT_SMOLLM2();
  const Tokenizer tok = Tokenizer::from_gguf(GgufFile(kSmolLM2.string()));
  std::string prompt;
  for (const std::string& line : corpus()) prompt += line + "\n";
  while (tok.encode(prompt, true, false).size() < 4096) prompt += prompt;
  auto best = std::chrono::duration<double, std::milli>::max();
  size_t n = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    n = tok.encode(prompt, true, false).size();
    best = std::min<std::chrono::duration<double, std::milli>>(best, std::chrono::steady_clock::now() - start);
  }
  const double per_4k = best.count() * 4096.0 / double(n);
  std::printf("encode: %zu tokens in %.2f ms (%.2f ms per 4096 tokens)\n", n, best.count(), per_4k);
#if defined(NDEBUG) && !defined(FLINT_SANITIZED)
  EXPECT_LT(per_4k, 50.0);
#endif
}

// ---- Llama-3 and Qwen2 pre-tokenizers, tiny tokenizers trained by the fixture script
TEST(TokenizerLlama3, MatchesTokenizersIdsOnEveryCorpusLine) {
  const Tokenizer tok = load_hf("llama3");  // merges as ["a","b"], ignore_merges
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizer::Llama3);
  expect_ids_on_corpus(tok, read_reference("llama3"), true);
}

TEST(TokenizerLlama3, AddsBosNamedByThePostProcessor) {
  const Tokenizer tok = load_hf("llama3");
  const auto bos = tok.find_token("<|begin_of_text|>");
  ASSERT_TRUE(bos);
  EXPECT_EQ(tok.bos_id(), bos);
  EXPECT_TRUE(tok.add_bos());
  EXPECT_EQ(tok.eos_id(), tok.find_token("<|eot_id|>"));
  EXPECT_TRUE(tok.is_eog(*tok.find_token("<|end_of_text|>")));
  const auto with = tok.encode("Hello", true, true), without = tok.encode("Hello", true, false);
  ASSERT_EQ(with.size(), without.size() + 1);
  EXPECT_EQ(with[0], *bos);
  EXPECT_TRUE(std::equal(without.begin(), without.end(), with.begin() + 1));
}

TEST(TokenizerLlama3, RoundTripsAndStreamsEveryCorpusLine) { expect_round_trip_and_stream(load_hf("llama3")); }

TEST(TokenizerQwen2, MatchesTokenizersIdsOnEveryCorpusLine) {
  const Tokenizer tok = load_hf("qwen2");  // merges as "a b" strings, NFC normalizer
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizer::Qwen2);
  expect_ids_on_corpus(tok, read_reference("qwen2"), true);
}

TEST(TokenizerQwen2, HasNoBosAndStopsOnImEnd) {
  const Tokenizer tok = load_hf("qwen2");
  EXPECT_FALSE(tok.bos_id());
  EXPECT_FALSE(tok.add_bos());
  EXPECT_EQ(tok.eos_id(), tok.find_token("<|im_end|>"));
  EXPECT_TRUE(tok.is_eog(*tok.find_token("<|endoftext|>")));
  EXPECT_EQ(tok.encode("Hi", true, true), tok.encode("Hi", true, false));
}

TEST(TokenizerQwen2, RoundTripsAndStreamsEveryCorpusLine) { expect_round_trip_and_stream(load_hf("qwen2")); }

// ---- special and added tokens
TEST(TokenizerSpecial, ControlTokensInTextAreParsedOnlyWhenAsked) {
  const Tokenizer tok = load_hf("qwen2");
  const int32_t start = *tok.find_token("<|im_start|>"), end = *tok.find_token("<|im_end|>");
  const auto parsed = tok.encode("<|im_start|>user\nHi<|im_end|>");
  EXPECT_EQ(parsed.front(), start);
  EXPECT_EQ(parsed.back(), end);
  const auto plain = tok.encode("<|im_start|>user\nHi<|im_end|>", /*parse_special=*/false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), start), 0);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), end), 0);
  EXPECT_EQ(tok.decode(plain), "<|im_start|>user\nHi<|im_end|>");
  EXPECT_EQ(tok.decode(parsed, /*skip_special=*/true), "user\nHi");
}

TEST(TokenizerSpecial, AddedTokensThatAreNotSpecialAreAlwaysMatched) {
  const Tokenizer tok = load_hf("qwen2");
  const int32_t think = *tok.find_token("<think>");
  EXPECT_FALSE(tok.is_special(think));
  for (bool parse_special : {true, false}) {
    const auto ids = tok.encode("a<think>b", parse_special);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), think), 1) << parse_special;
  }
  EXPECT_EQ(tok.decode(tok.encode("<think>x</think>"), /*skip_special=*/true), "<think>x</think>");
}

TEST(TokenizerSpecial, LongestTokenWinsAtTheLeftmostMatch) {
  const json spec = json::parse(R"({
      "model": {"type": "BPE", "vocab": {"<": 0, "a": 1, ">": 2}, "merges": []},
      "added_tokens": [{"id": 3, "content": "<a", "special": true}, {"id": 4, "content": "<a>", "special": true},
                       {"id": 5, "content": "a>", "special": true}],
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}})");
  const Tokenizer tok = Tokenizer::from_hf_json(spec.dump());
  EXPECT_EQ(tok.encode("<a><a"), (std::vector<int32_t>{4, 3}));
  EXPECT_EQ(tok.encode("a<a>"), (std::vector<int32_t>{1, 4}));
  EXPECT_EQ(tok.encode("<a>", false), (std::vector<int32_t>{0, 1, 2}));
}

TEST(TokenizerSpecial, LstripAndRstripSwallowWhiteSpace) {
  const json spec = json::parse(R"({
      "model": {"type": "BPE", "vocab": {"Ġ": 0, "x": 1}, "merges": []},
      "added_tokens": [{"id": 2, "content": "<m>", "special": true, "lstrip": true, "rstrip": true}],
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}})");
  const Tokenizer tok = Tokenizer::from_hf_json(spec.dump());
  EXPECT_EQ(tok.encode("x  <m> \u3000x"), (std::vector<int32_t>{1, 2, 1}));
}

TEST(TokenizerSpecial, BytesWithoutATokenBecomeUnkWhenTheModelNamesOne) {
  // Expected ids from HF tokenizers on the same JSON.
  json spec = json::parse(R"({
      "model": {"type": "BPE", "vocab": {"a": 0, "<unk>": 1}, "merges": [], "unk_token": "<unk>"},
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}})");
  EXPECT_EQ(Tokenizer::from_hf_json(spec.dump()).encode("abba"), (std::vector<int32_t>{0, 1, 1, 0}));
  spec["model"]["fuse_unk"] = true;
  EXPECT_EQ(Tokenizer::from_hf_json(spec.dump()).encode("abba"), (std::vector<int32_t>{0, 1, 0}));
  EXPECT_EQ(Tokenizer::from_hf_json(spec.dump()).encode("ab a"), (std::vector<int32_t>{0, 1, 1, 0}));
  spec["model"].erase("unk_token");
  EXPECT_EQ(Tokenizer::from_hf_json(spec.dump()).encode("abba"), (std::vector<int32_t>{0, 0}));  // dropped
}

// ---- incremental detokenizer
TEST(TokenizerIncremental, HoldsASplitEmojiUntilItIsWhole) {
  const Tokenizer tok = load_hf("llama3");
  const std::string emoji = "😀";  // F0 9F 98 80
  IncrementalDetokenizer detok(tok);
  EXPECT_EQ(detok.push(byte_token(tok, 'a')), "a");
  EXPECT_EQ(detok.push(byte_token(tok, 0xF0)), "");
  EXPECT_EQ(detok.push(byte_token(tok, 0x9F)), "");
  EXPECT_EQ(detok.push(byte_token(tok, 0x98)), "");
  EXPECT_EQ(detok.push(byte_token(tok, 0x80)), emoji);
  EXPECT_EQ(detok.flush(), "");
}

TEST(TokenizerIncremental, InvalidBytesComeOutAsSoonAsTheyCannotBecomeValid) {
  const Tokenizer tok = load_hf("llama3");
  IncrementalDetokenizer detok(tok);
  EXPECT_EQ(detok.push(byte_token(tok, 0xFF)), "\xFF");         // never valid
  EXPECT_EQ(detok.push(byte_token(tok, 0xE2)), "");             // may start a character
  EXPECT_EQ(detok.push(byte_token(tok, 'A')), "\xE2" "A");      // ... but did not
  EXPECT_EQ(detok.push(byte_token(tok, 0xE0)), "");
  EXPECT_EQ(detok.push(byte_token(tok, 0x80)), "\xE0\x80");     // overlong: invalid at once
  EXPECT_EQ(detok.push(byte_token(tok, 0xF0)), "");
  EXPECT_EQ(detok.push(byte_token(tok, 0x9F)), "");
  EXPECT_EQ(detok.flush(), "\xF0\x9F");  // cut short at the end: flush gives it back
  EXPECT_EQ(detok.flush(), "");
}

TEST(TokenizerIncremental, EqualsDecodeWithSkipSpecial) {
  const Tokenizer tok = load_hf("qwen2");
  const auto ids = tok.encode("<|im_start|>user\n😀 café<|im_end|>");
  IncrementalDetokenizer detok(tok, /*skip_special=*/true);
  std::string streamed;
  for (int32_t id : ids) streamed += detok.push(id);
  streamed += detok.flush();
  EXPECT_EQ(streamed, tok.decode(ids, true));
  EXPECT_EQ(streamed, "user\n😀 café");
}

// ---- broken inputs: a flint::Error with a message, never a crash
json minimal_spec() {
  return json::parse(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
                         "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}})");
}

void expect_error(const json& spec, const std::string& needle, const std::string& config = {}) {
  try {
    Tokenizer::from_hf_json(spec.dump(), config);
    ADD_FAILURE() << "no error for " << spec.dump();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TokenizerBroken, MinimalTokenizerLoads) {
  const Tokenizer tok = Tokenizer::from_hf_json(minimal_spec().dump());
  EXPECT_EQ(tok.encode("ab"), (std::vector<int32_t>{2}));
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizer::Gpt2);
  json pairs = minimal_spec();
  pairs["model"]["merges"] = json::parse(R"([["a", "b"]])");
  EXPECT_EQ(Tokenizer::from_hf_json(pairs.dump()).encode("ab"), (std::vector<int32_t>{2}));
}

TEST(TokenizerBroken, JsonErrorsAreReported) {
  EXPECT_THROW(Tokenizer::from_hf_json("{\"model\": "), Error);
  EXPECT_THROW(Tokenizer::from_hf_json("[1, 2]"), Error);
  EXPECT_THROW(Tokenizer::from_hf_json(""), Error);
  EXPECT_THROW(Tokenizer::from_hf_json(minimal_spec().dump(), "{bad"), Error);
  expect_error(json::object(), "\"model\" is missing");
}

TEST(TokenizerBroken, ModelProblemsAreReported) {
  json s = minimal_spec();
  s["model"]["type"] = "Unigram";
  expect_error(s, "only BPE");
  s = minimal_spec();
  s["model"]["merges"] = json::parse(R"(["a c"])");
  expect_error(s, "\"c\", which is not in the vocabulary");
  s = minimal_spec();
  s["model"]["merges"] = json::parse(R"(["b a"])");
  expect_error(s, "\"ba\", which is not in the vocabulary");
  s = minimal_spec();
  s["model"]["merges"] = json::parse(R"(["ab"])");
  expect_error(s, "not two tokens");
  s = minimal_spec();
  s["model"]["merges"] = json::parse(R"([["a"]])");
  expect_error(s, "expected \"a b\"");
  s = minimal_spec();
  s["model"]["vocab"] = json::object();
  s["model"]["merges"] = json::array();
  expect_error(s, "empty");
  s = minimal_spec();
  s["model"]["vocab"]["zz"] = 7;
  expect_error(s, "not contiguous");
  s = minimal_spec();
  s["model"]["vocab"]["zz"] = -1;
  expect_error(s, "out of range");
  s = minimal_spec();
  s["model"]["vocab"]["zz"] = "3";
  expect_error(s, "integer token id");
  s = minimal_spec();
  s["model"]["vocab"]["zz"] = 2000000000;
  expect_error(s, "not contiguous");
  s = minimal_spec();
  s["model"]["vocab"]["zz"] = 1;
  expect_error(s, "is given to both");
  s = minimal_spec();
  s["model"]["byte_fallback"] = true;
  expect_error(s, "byte_fallback");
  s = minimal_spec();
  s["added_tokens"] = json::parse(R"([{"id": 1, "content": "<x>"}])");
  expect_error(s, "has the id of vocabulary token");
}

TEST(TokenizerBroken, UnknownPreTokenizersAreReported) {
  json s = minimal_spec();
  s["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated"},
      {"type": "ByteLevel", "use_regex": false}]})");
  expect_error(s, "unsupported pre_tokenizer");
  s["pre_tokenizer"] = json::parse(R"({"type": "Whitespace"})");
  expect_error(s, "unsupported pre_tokenizer");
  s.erase("pre_tokenizer");
  expect_error(s, "unsupported pre_tokenizer");
  s = minimal_spec();
  s["pre_tokenizer"]["add_prefix_space"] = true;
  expect_error(s, "add_prefix_space");
  s = minimal_spec();
  s["normalizer"] = json::parse(R"({"type": "Lowercase"})");
  expect_error(s, "normalizer");
}

TEST(TokenizerBroken, SpecialTokenProblemsAreReported) {
  expect_error(minimal_spec(), "bos_token \"<s>\" is not a token", R"({"bos_token": "<s>"})");
  expect_error(minimal_spec(), "names none", R"({"add_bos_token": true})");
  expect_error(minimal_spec(), "expected true or false", R"({"add_bos_token": "yes"})");
  const Tokenizer tok = Tokenizer::from_hf_json(minimal_spec().dump(), R"({"bos_token": {"content": "a"}})");
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_FALSE(tok.add_bos());
}

TEST(TokenizerBroken, BadIdsAndTextAreReported) {
  const Tokenizer tok = Tokenizer::from_hf_json(minimal_spec().dump());
  EXPECT_THROW(tok.decode(std::vector<int32_t>{0, 3}), Error);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), Error);
  EXPECT_THROW(tok.token_bytes(99), Error);
  EXPECT_THROW(tok.token_text(-5), Error);
  EXPECT_THROW(tok.is_special(3), Error);
  EXPECT_THROW(tok.encode("a\xC3"), Error);
  EXPECT_THROW(tok.encode("\xED\xA0\x80"), Error);  // a surrogate
  IncrementalDetokenizer detok(tok);
  EXPECT_THROW(detok.push(7), Error);
}

// ---- GGUF metadata, small files written by the test
struct TinyGguf {
  std::string model = "gpt2", pre = "qwen2";
  std::vector<std::string> tokens{"<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "ab", "Ġ", "<think>"};
  std::vector<int32_t> types{3, 3, 3, 1, 1, 1, 1, 4};
  std::vector<std::string> merges{"a b"};
  int32_t eos = 2;
  std::optional<int32_t> bos;
  std::optional<bool> add_bos;
  bool tokens_as_number = false;

  test::GgufWriter writer() const {
    test::GgufWriter w;
    w.add_string("general.architecture", "qwen2")
        .add_string("tokenizer.ggml.model", model)
        .add_string("tokenizer.ggml.pre", pre)
        .add_i32_array("tokenizer.ggml.token_type", types)
        .add_string_array("tokenizer.ggml.merges", merges)
        .add_i32("tokenizer.ggml.eos_token_id", eos);
    if (tokens_as_number) w.add_u32("tokenizer.ggml.tokens", 5);
    else w.add_string_array("tokenizer.ggml.tokens", tokens);
    if (bos) w.add_i32("tokenizer.ggml.bos_token_id", *bos);
    if (add_bos) w.add_bool("tokenizer.ggml.add_bos_token", *add_bos);
    return w;
  }
  Tokenizer load() const {
    const test::TempFile f = writer().write_temp();
    return Tokenizer::from_gguf(GgufFile(f.path()));
  }
};

template <class Edit>
TinyGguf tiny_gguf(Edit edit) {
  TinyGguf g;
  edit(g);
  return g;
}

void expect_gguf_error(const TinyGguf& g, const std::string& needle) {
  try {
    g.load();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TokenizerGguf, ReadsTokensTypesMergesAndSpecialIds) {
  const Tokenizer tok = TinyGguf{}.load();
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizer::Qwen2);
  EXPECT_EQ(tok.encode("ab <|im_end|>"), (std::vector<int32_t>{5, 6, 2}));
  EXPECT_EQ(tok.encode("<think>ab", false), (std::vector<int32_t>{7, 5}));  // user-defined: always matched
  EXPECT_TRUE(tok.is_special(2));
  EXPECT_FALSE(tok.is_special(7));
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_FALSE(tok.bos_id());
  EXPECT_EQ(std::vector<int32_t>(tok.eog_ids().begin(), tok.eog_ids().end()), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(tok.decode(std::vector<int32_t>{1, 5, 6, 2}), "<|im_start|>ab <|im_end|>");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{1, 5, 6, 2}, true), "ab ");
}

TEST(TokenizerGguf, Llama3FamilyAddsBosUnlessTheFileSaysNot) {
  TinyGguf g = tiny_gguf([](TinyGguf& t) { t.pre = "llama-bpe"; t.bos = 1; });
  const Tokenizer tok = g.load();
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizer::Llama3);
  EXPECT_TRUE(tok.add_bos());
  EXPECT_EQ(tok.encode("ab"), (std::vector<int32_t>{1, 5}));
  g.add_bos = false;
  EXPECT_EQ(g.load().encode("ab"), (std::vector<int32_t>{5}));
}

TEST(TokenizerGguf, BrokenMetadataIsReported) {
  using T = TinyGguf;
  expect_gguf_error(tiny_gguf([](T& t) { t.model = "llama"; }), "only byte-level BPE");
  expect_gguf_error(tiny_gguf([](T& t) { t.pre = "default"; }), "tokenizer.ggml.pre \"default\" is not supported");
  expect_gguf_error(tiny_gguf([](T& t) { t.tokens.clear(), t.types.clear(); }), "missing or empty");
  expect_gguf_error(tiny_gguf([](T& t) { t.types = {1, 1}; }), "token_type has 2 entries for 8 tokens");
  expect_gguf_error(tiny_gguf([](T& t) { t.types.back() = 9; }), "token 7 has token_type 9");
  expect_gguf_error(tiny_gguf([](T& t) { t.merges.push_back("ab c"); }), "merge 1 (\"ab\" \"c\") names \"c\"");
  expect_gguf_error(tiny_gguf([](T& t) { t.merges = {"ab"}; }), "not two tokens");
  expect_gguf_error(tiny_gguf([](T& t) { t.eos = 8; }), "eos token id 8 is out of range");
  expect_gguf_error(tiny_gguf([](T& t) { t.bos = -3; }), "is not a token id");
  expect_gguf_error(tiny_gguf([](T& t) { t.tokens_as_number = true; }), "tokenizer.ggml.tokens");
}

// ---- robustness: cut and corrupted tokenizer.json files give flint::Error or load
TEST(TokenizerBroken, CorruptedTokenizerJsonNeverCrashes) {
  const std::string good = read_file(kData / "qwen2.tokenizer.json");
  std::mt19937 rng(1234);
  int attempts = 0, loaded = 0, rejected = 0;
  const auto attempt = [&](const std::string& text) {
    ++attempts;
    try {
      const Tokenizer tok = Tokenizer::from_hf_json(text);
      for (const std::string& line : {corpus()[20], corpus()[150]}) tok.decode(tok.encode(line));
      ++loaded;
    } catch (const Error&) {
      ++rejected;
    }
  };
  for (size_t cut = 0; cut < good.size(); cut += good.size() / 97 + 1) attempt(good.substr(0, cut));
  for (int i = 0; i < 300; ++i) {
    std::string bad = good;
    for (int k = 0; k < 3; ++k) bad[rng() % bad.size()] = "0\"{}[],: a-9\\"[rng() % 14];
    attempt(bad);
  }
  EXPECT_GT(rejected, 0);
  EXPECT_EQ(loaded + rejected, attempts);  // nothing but flint::Error escaped
}

}  // namespace
}  // namespace flint
